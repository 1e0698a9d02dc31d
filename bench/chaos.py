"""A longer chaos run than the test suite's: kill -9 the service at random moments while jobs are in flight.

    python bench/chaos.py [--jobs 200] [--kills 10] [--workers 4] [--seed 1] [--max-seconds 300]

The local backend runs a script that records each run of each job in its job's folder. Jobs are
submitted in bursts between kills; after the last restart the run waits for every job to end and counts
what the claim says must never happen: a job lost, a job run twice, a job left WAITING or RUNNING.
One job in ten is hostile: it leaves a double-forked daemon holding its output and tries to read the
executor's key file; the run also counts daemons alive after the end and key files read.
"""
from __future__ import annotations

import argparse
import random
import sqlite3
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import psutil

from common import ServiceProcess, header, pipeline_body, table, write_pipeline

FINAL = {"COMPLETED", "ERROR", "CANCELLED"}
# Records its run, tries the executor's key file, and leaves a double-forked daemon holding its output.
HOSTILE = """\
import os, sys, time
out = os.environ["SM_OUTPUT_DATA_DIR"]
open(os.path.join(out, "runs"), "a").write("run\\n")
try:
    key = open({key!r}).read()
except OSError:
    key = "unreadable"
open(os.path.join(out, "key"), "w").write(key)
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(600)", {token!r}])
    os._exit(0)
print("daemon started", flush=True)
time.sleep(float(sys.argv[1]))
"""


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
        data = Path(tmp) / "data"
        token = uuid.uuid4().hex
        script = ("import os, sys, time\nopen(os.path.join(os.environ['SM_OUTPUT_DATA_DIR'], 'runs'), 'a')"
                  ".write('run\\n')\ntime.sleep(float(sys.argv[1]))\n")
        write_pipeline(data / "storage", "chaos", script)
        write_pipeline(data / "storage", "hostile", HOSTILE.format(key=str(data / "secret.key"), token=token))
        flags = ["--workers", str(args.workers)]
        service = ServiceProcess(data, args=flags)
        ids: dict[str, int] = {}
        bursts = [args.jobs // (args.kills + 1)] * (args.kills + 1)
        bursts[-1] += args.jobs - sum(bursts)
        for burst, size in enumerate(bursts):
            for _ in range(size):
                number = len(ids)
                pause = rng.choice([0.0, 0.05, 0.2, 1.0])
                folder = "hostile" if number % 10 == 9 else "chaos"
                status, body = service.request("POST", "/execute",
                                               pipeline_body(folder, f"python pipe1.py {pause}"))
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
        run_files = {job_id: data / "jobs" / job_id / "output" / "data" / "runs" for job_id in ids}
        run_counts = {ids[job_id]: path.read_text().count("run") if path.exists() else 0
                      for job_id, path in run_files.items()}
        time.sleep(2)
        daemons_left = [process for process in psutil.process_iter(["cmdline"])
                        if (process.info["cmdline"] or [])[-1:] == [token]]
        for daemon in daemons_left:
            daemon.kill()
        keys_read = sum(1 for job_id in ids
                        if (data / "jobs" / job_id / "output" / "data" / "key").is_file()
                        and (data / "jobs" / job_id / "output" / "data" / "key").read_text() != "unreadable")
    statuses = Counter(rows[job_id][0] for job_id in ids if job_id in rows)
    reasons = Counter(rows[job_id][1] for job_id in ids if job_id in rows and rows[job_id][0] == "ERROR")
    lost = sum(job_id not in rows for job_id in ids)
    stuck = sum(job_id in rows and rows[job_id][0] not in FINAL for job_id in ids)
    twice = sum(count > 1 for count in run_counts.values())
    completed_not_run = sum(rows.get(job_id, ("",))[0] == "COMPLETED" and run_counts[number] != 1
                            for job_id, number in ids.items())
    table(["jobs", "kills", "COMPLETED", "ERROR (restart)", "lost", "run twice", "completed without one run",
           "stuck", "extra jobs in store", "daemons alive after", "key files read", "wall s"],
          [[len(ids), args.kills, statuses["COMPLETED"], statuses["ERROR"], lost, twice, completed_not_run, stuck,
            len(set(rows) - set(ids)), len(daemons_left), keys_read, time.monotonic() - began]])
    print(f"ERROR reasons: {dict(reasons)}")
    if lost or twice or stuck or completed_not_run or set(rows) - set(ids) or daemons_left or keys_read:
        raise SystemExit("the claim failed: see the table")


if __name__ == "__main__":
    main()
