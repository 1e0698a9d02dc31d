"""A longer chaos run than the test suite's: kill -9 the service at random moments while jobs are in flight.

    python bench/chaos.py [--jobs 200] [--kills 10] [--workers 4] [--seed 1] [--max-seconds 300]

The local backend runs a script that records each run of each job in its own file. Jobs are submitted
in bursts between kills; after the last restart the run waits for every job to end and counts what
the claim says must never happen: a job lost, a job run twice, a job left WAITING or RUNNING.
"""
from __future__ import annotations

import argparse
import random
import sqlite3
import tempfile
import time
from collections import Counter
from pathlib import Path

from common import ServiceProcess, header, pipeline_body, table, write_pipeline

FINAL = {"COMPLETED", "ERROR", "CANCELLED"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-seconds", type=float, default=300)
    args = parser.parse_args()
    header(f"Chaos: kill -9 at {args.kills} random moments across {args.jobs} local jobs")
    rng = random.Random(args.seed)
    began = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        data, runs = Path(tmp) / "data", Path(tmp) / "runs"
        runs.mkdir()
        script = (f"import os, sys, time\nopen(os.path.join({str(runs)!r}, sys.argv[1]), 'a').write('run\\n')\n"
                  "time.sleep(float(sys.argv[2]))\n")
        write_pipeline(data / "storage", "chaos", script)
        flags = ["--workers", str(args.workers)]
        service = ServiceProcess(data, args=flags)
        ids: dict[str, int] = {}
        bursts = [args.jobs // (args.kills + 1)] * (args.kills + 1)
        bursts[-1] += args.jobs - sum(bursts)
        for burst, size in enumerate(bursts):
            for _ in range(size):
                number = len(ids)
                pause = rng.choice([0.0, 0.05, 0.2, 1.0])
                status, body = service.request("POST", "/execute",
                                               pipeline_body("chaos", f"python pipe1.py j{number} {pause}"))
                if status != 201:
                    raise SystemExit(f"submission refused: {status} {body}")
                ids[body["task_id"]] = number
            if burst < args.kills:
                time.sleep(rng.uniform(0.05, 1.5))
                service.kill()
                service = ServiceProcess(data, args=flags)
        deadline = time.monotonic() + args.max_seconds
        rows: dict[str, tuple[str, str | None]] = {}
        while time.monotonic() < deadline:
            conn = sqlite3.connect(data / "executor.sqlite3")
            rows = {row[0]: (row[1], row[2]) for row in conn.execute("SELECT id, status, failure_reason FROM jobs")}
            conn.close()
            if all(rows.get(job_id, ("",))[0] in FINAL for job_id in ids):
                break
            time.sleep(0.5)
        service.kill()
        run_counts = {number: (runs / f"j{number}").read_text().count("run") if (runs / f"j{number}").exists() else 0
                      for number in ids.values()}
    statuses = Counter(rows[job_id][0] for job_id in ids if job_id in rows)
    reasons = Counter(rows[job_id][1] for job_id in ids if job_id in rows and rows[job_id][0] == "ERROR")
    lost = sum(job_id not in rows for job_id in ids)
    stuck = sum(job_id in rows and rows[job_id][0] not in FINAL for job_id in ids)
    twice = sum(count > 1 for count in run_counts.values())
    completed_not_run = sum(rows.get(job_id, ("",))[0] == "COMPLETED" and run_counts[number] != 1
                            for job_id, number in ids.items())
    table(["jobs", "kills", "COMPLETED", "ERROR (restart)", "lost", "run twice", "completed without one run",
           "stuck", "extra jobs in store", "wall s"],
          [[len(ids), args.kills, statuses["COMPLETED"], statuses["ERROR"], lost, twice, completed_not_run, stuck,
            len(set(rows) - set(ids)), time.monotonic() - began]])
    print(f"ERROR reasons: {dict(reasons)}")
    if lost or twice or stuck or completed_not_run or set(rows) - set(ids):
        raise SystemExit("the claim failed: see the table")


if __name__ == "__main__":
    main()
