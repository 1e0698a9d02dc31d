"""What the sandbox costs: starting and ending a job's process, and one request to a model worker.

    python bench/bench_sandbox.py [--runs 20]

A process: `python -c pass` run to its end as a job runs (JobProcess: started, output read, tree
ended), bare and in bubblewrap. A model: a tiny TorchScript model served by a worker process, one
request at a time, bare and in bubblewrap, against calling the same handlers in this process (what
the executor did before model code left it).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from common import header, median, table

from config import load_config
from mlops.local import model_worker
from mlops.local.model_host import ModelWorker
from mlops.local.processes import JobProcess
from mlops.sandbox import Sandbox, detect

ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp"}
REQUEST = json.dumps({"instances": [[[0.5] * 8] * 8]}).encode()


def process_seconds(box: Sandbox, folder: Path, runs: int) -> list[float]:
    timings = []
    for number in range(runs):
        began = time.perf_counter()
        process = JobProcess(box, [sys.executable, "-c", "pass"], cwd=folder, env=ENV, marker=f"bench-{number}",
                             max_line_bytes=65536, writable=[folder])
        list(process.lines())
        process.wait()
        timings.append(time.perf_counter() - began)
    return timings


def model_seconds(box: Sandbox, model_dir: Path, runs: int) -> tuple[float, list[float]]:
    began = time.perf_counter()
    worker = ModelWorker(box, sys.executable, model_dir, "bench-model")
    worker.start()
    start = time.perf_counter() - began
    try:
        timings = []
        for _ in range(runs):
            began = time.perf_counter()
            worker.invoke(REQUEST, "application/json", "application/json")
            timings.append(time.perf_counter() - began)
        return start, timings
    finally:
        worker.close()


def in_process_seconds(model_dir: Path, runs: int) -> list[float]:
    served = model_worker.ServedModel(str(model_dir))
    timings = []
    for _ in range(runs):
        began = time.perf_counter()
        served.invoke(REQUEST, "application/json", "application/json")
        timings.append(time.perf_counter() - began)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    import torch

    header(f"Sandbox cost: {args.runs} job processes and {args.runs * 10} model requests, bare and in bubblewrap")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        folder = data / "jobs" / "bench"
        model_dir = data / "models" / "tiny"
        folder.mkdir(parents=True)
        model_dir.mkdir(parents=True)
        torch.jit.script(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))).save(
            str(model_dir / "model.pt"))
        boxed = detect(load_config(environ={}, overrides={"data_dir": str(data)}))
        if not boxed.isolating:
            raise SystemExit(f"no sandbox here: {boxed.missing}")
        boxed.hand_over(folder)
        bare = Sandbox(None, missing="bare")
        rows = []
        process_bare = median(process_seconds(bare, folder, args.runs))
        process_boxed = median(process_seconds(boxed, folder, args.runs))
        rows.append(["job process `python -c pass`, start to end", process_bare * 1000, process_boxed * 1000,
                     process_boxed / process_bare])
        start_bare, invoke_bare = model_seconds(bare, model_dir, args.runs * 10)
        start_boxed, invoke_boxed = model_seconds(boxed, model_dir, args.runs * 10)
        rows.append(["model worker start and load", start_bare * 1000, start_boxed * 1000, start_boxed / start_bare])
        rows.append(["one model request (median)", median(invoke_bare) * 1000, median(invoke_boxed) * 1000,
                     median(invoke_boxed) / median(invoke_bare)])
        in_process = median(in_process_seconds(model_dir, args.runs * 10))
    table(["what", "bare ms", "bubblewrap ms", "ratio"], rows)
    print(f"the same request in the executor's own process (before this change): {in_process * 1000:.3f} ms")


if __name__ == "__main__":
    main()
