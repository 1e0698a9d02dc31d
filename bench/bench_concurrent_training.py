"""Benchmark local trainings run together against the same trainings run one after another.

    python bench/bench_concurrent_training.py [--jobs 3] [--epochs 4]

A real executor (`python app.py`, local platform, as many workers as jobs) trains the bundled script
on the digits: first all jobs submitted at once, then the same jobs submitted one at a time, each
after the previous one ended. The claim: together they end no later than one after another.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from common import ROOT, header, start_executor, stop_executor, table

MAKE_DIGITS = ROOT / "training_scripts" / "make_digits_dataset.py"
FINAL = {"COMPLETED", "ERROR", "CANCELLED"}
POLL_S = 0.2
JOB_TIMEOUT_S = 1800


def submit(service, epochs: int) -> str:
    """Submit one training of the bundled script on the digits; return its job id."""
    status, answer = service.request("POST", "/api/service/v1/pipelines/training", {
        "name": "bench-digits", "dataset": "datasets/digits", "hyperparameters": {"epochs": epochs}})
    assert status == 202, answer
    return answer["job_id"]


def wait_all(service, job_ids: list[str]) -> None:
    """Poll until every job ended; fail unless each COMPLETED."""
    deadline = time.monotonic() + JOB_TIMEOUT_S
    pending = set(job_ids)
    while pending and time.monotonic() < deadline:
        for job_id in list(pending):
            _, body = service.request("GET", f"/status/{job_id}")
            if body["status"] in FINAL:
                assert body["status"] == "COMPLETED", body
                pending.discard(job_id)
        time.sleep(POLL_S)
    assert not pending, f"jobs still running after {JOB_TIMEOUT_S} s: {pending}"


def machine_cpu_seconds() -> float:
    """Return the CPU seconds every process of the machine has used (busy time of all cores).

    The jobs run in a sandbox whose PID namespace ends by killing what is left in it: their CPU time
    does not reach the executor's children counters, so the machine's busy time is counted instead
    (on a quiet machine, the jobs' time and the executor's).
    """
    times = psutil.cpu_times()
    return sum(getattr(times, name, 0.0) for name in ("user", "nice", "system", "irq", "softirq", "steal"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    header(f"{args.jobs} local trainings together against one after another")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        subprocess.run([sys.executable, str(MAKE_DIGITS), str(data / "storage" / "datasets" / "digits")],
                       check=True, stdout=subprocess.DEVNULL)
        service, _ = start_executor(data, workers=args.jobs)
        try:
            cpu, started = machine_cpu_seconds(), time.monotonic()
            wait_all(service, [submit(service, args.epochs) for _ in range(args.jobs)])
            together, together_cpu = time.monotonic() - started, machine_cpu_seconds() - cpu
            cpu, started = machine_cpu_seconds(), time.monotonic()
            for _ in range(args.jobs):
                wait_all(service, [submit(service, args.epochs)])
            in_turn, in_turn_cpu = time.monotonic() - started, machine_cpu_seconds() - cpu
        finally:
            stop_executor(service)
    table(["jobs", "epochs each", "together s", "one after another s", "together / one after another",
           "CPU s together", "CPU s one after another"],
          [[args.jobs, args.epochs, together, in_turn, f"{together / in_turn:.2f}", together_cpu, in_turn_cpu]])
    print("digits (1,797 PNGs), default hyperparameters; seconds from the first submission to the last job's end; "
          "CPU s = busy seconds of all the machine's cores meanwhile (quiet machine: the jobs and the executor)")


if __name__ == "__main__":
    main()
