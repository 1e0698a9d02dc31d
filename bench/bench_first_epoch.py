"""Benchmark where a training job's first seconds go, up to its first epoch, on the digits.

    python bench/bench_first_epoch.py [--runs 3] [--copies 1]

Times, each the median of `--runs` fresh processes: the bare interpreter, importing numpy and
Pillow, importing torch; then train.py itself (1 epoch, CPU), stamped as its lines arrive: the
dataset decoded, training started (torch imported, model built) and the first metric line. Last,
the same training submitted to a real executor (local platform), from the POST to the first epoch
in its status: what staging and the queue add.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

from common import ROOT, header, start_executor, stop_executor, table

TRAIN = ROOT / "training_scripts" / "train.py"
MAKE_DIGITS = ROOT / "training_scripts" / "make_digits_dataset.py"
# The script's lines that mark the end of each phase, in order.
MARKS = (("dataset decoded", "loaded "), ("training started", "training on "), ("first epoch", "epoch=1/"))
POLL_S = 0.05


def time_command(command: Sequence[str], runs: int) -> float:
    """Return the median wall seconds of running `command` to its end."""
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def time_script_marks(channel: Path, runs: int) -> dict[str, float]:
    """Return the median seconds from launching train.py to each of its marks."""
    seen: dict[str, list[float]] = {name: [] for name, _ in MARKS}
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix="bench-first-epoch-") as scratch:
            work = Path(scratch)
            env = {**os.environ, "PYTHONUNBUFFERED": "1", "SM_CHANNEL_TRAINING": str(channel),
                   "SM_MODEL_DIR": str(work / "model"), "SM_OUTPUT_DATA_DIR": str(work / "data"),
                   "SM_OUTPUT_DIR": str(work / "output")}
            started = time.perf_counter()
            process = subprocess.Popen([sys.executable, str(TRAIN), "--epochs", "1", "--device", "cpu",
                                        "--checkpoint-dir", str(work / "checkpoints")],
                                       env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            pending = list(MARKS)
            for line in process.stdout:
                if pending and pending[0][1] in line:
                    seen[pending.pop(0)[0]].append(time.perf_counter() - started)
            if process.wait() != 0 or pending:
                raise SystemExit(f"train.py failed or missed {pending}")
    return {name: statistics.median(values) for name, values in seen.items()}


def time_through_executor(data: Path, runs: int) -> float:
    """Return the median seconds from POSTing a 1-epoch training to its first epoch in /status."""
    service, _ = start_executor(data, workers=1)
    seconds = []
    try:
        for _ in range(runs):
            started = time.perf_counter()
            status, answer = service.request("POST", "/api/service/v1/pipelines/training", {
                "name": "first-epoch", "dataset": "datasets/digits", "hyperparameters": {"epochs": 1}})
            assert status == 202, answer
            while True:
                _, body = service.request("GET", f"/status/{answer['job_id']}")
                if (body.get("progress") or {}).get("epoch") == 1 or body["status"] in ("COMPLETED", "ERROR"):
                    break
                time.sleep(POLL_S)
            assert body["status"] != "ERROR", body
            seconds.append(time.perf_counter() - started)
            while body["status"] not in ("COMPLETED", "ERROR"):
                time.sleep(POLL_S)
                _, body = service.request("GET", f"/status/{answer['job_id']}")
    finally:
        stop_executor(service)
    return statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--copies", type=int, default=1, help="copies of the 1,797 digits")
    args = parser.parse_args()
    header("Time to the first epoch: the digits, CPU")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        channel = data / "storage" / "datasets" / "digits"
        subprocess.run([sys.executable, str(MAKE_DIGITS), str(channel), "--repeat", str(args.copies)], check=True,
                       stdout=subprocess.DEVNULL)
        interpreter = time_command([sys.executable, "-c", "pass"], args.runs)
        numpy_pillow = time_command([sys.executable, "-c", "import numpy, PIL.Image"], args.runs)
        torch = time_command([sys.executable, "-c", "import torch"], args.runs)
        marks = time_script_marks(channel, args.runs)
        executor = time_through_executor(data, args.runs)
    rows = [["python -c pass", interpreter], ["python -c 'import numpy, PIL.Image'", numpy_pillow],
            ["python -c 'import torch'", torch]]
    rows += [[f"train.py: {name}", seconds] for name, seconds in marks.items()]
    rows.append(["executor: POST to first epoch in /status", executor])
    table(["step", "seconds from start (median)"], rows)
    print(f"{args.runs} runs each; {1797 * args.copies:,} images, default hyperparameters, 1 epoch")


if __name__ == "__main__":
    main()
