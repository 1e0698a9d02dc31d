"""Status latency p50 and p99 with 100,000 jobs in the store, next to a store of 100.

    python bench/bench_status.py [--jobs 100000] [--requests 3000]

The store is filled directly (one transaction of ended jobs with their events, as the executor
writes them), then a real `python app.py` serves it; one keep-alive client polls getStatus of
random jobs and the job list one request after another, so each latency is the service's alone.
"""
from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
import uuid
from pathlib import Path

from common import header, median, percentile, sequential_latencies, start_executor, stop_executor, table
from db import SQLiteStore

STATUSES = ("COMPLETED", "COMPLETED", "COMPLETED", "ERROR", "CANCELLED")


def fill(data_dir: Path, count: int, seed: int = 7) -> tuple[list[str], float]:
    """Write `count` ended jobs and their events into a new store; return their ids and the seconds taken."""
    rng = random.Random(seed)
    store = SQLiteStore(data_dir / "executor.sqlite3")
    began = time.monotonic()
    conn = store._connection()  # a bulk load: one transaction, the store's own schema and connection
    request = json.dumps({"bucket": "b", "project_id": "Demo", "name": "pipe1", "version": "3",
                          "input_artifacts": "Demo/pipe1", "command": "python pipe1.py", "storage": "local",
                          "configs": {}, "environment_keys": []})
    ids, jobs, events = [], [], []
    now = time.time() - count
    for index in range(count):
        job_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        status = rng.choice(STATUSES)
        submitted = now + index
        job_dir = str(data_dir / "jobs" / job_id)
        ids.append(job_id)
        jobs.append((job_id, "pipeline", "local", status, status.title(), request, submitted, submitted + 0.1,
                     submitted + 2.5, submitted + 2.5, None if status == "COMPLETED" else "exit code 1",
                     job_dir + "/job.log", job_dir))
        events += [(job_id, submitted, "WAITING", "Queued", "submitted"),
                   (job_id, submitted + 0.1, "RUNNING", "Starting", "claimed by a worker"),
                   (job_id, submitted + 2.5, status, status.title(), None)]
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany("INSERT INTO jobs (id, kind, backend, status, phase, request, submitted, started, finished,"
                     " updated, failure_reason, log_path, output_dir) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     jobs)
    conn.executemany("INSERT INTO job_events (job_id, time, status, phase, message) VALUES (?, ?, ?, ?, ?)", events)
    conn.execute("COMMIT")
    store.close()
    return ids, time.monotonic() - began


def measure(count: int, requests: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        ids, fill_s = fill(data, count)
        size_mb = (data / "executor.sqlite3").stat().st_size / 1e6
        service, ready_s = start_executor(data, workers=1)
        try:
            rng = random.Random(11)
            status_paths = (f"/execute/{rng.choice(ids)}/getStatus" for _ in iter(int, 1))
            sequential_latencies(service.url, status_paths, 200)  # warm-up
            status_ms = sequential_latencies(service.url, status_paths, requests)
            list_ms = sequential_latencies(service.url, ("/execute" for _ in iter(int, 1)), max(100, requests // 10))
        finally:
            stop_executor(service)
    return {"jobs": count, "fill_s": fill_s, "size_mb": size_mb, "ready_s": ready_s,
            "status_p50": median(status_ms), "status_p99": percentile(status_ms, 99),
            "list_p50": median(list_ms), "list_p99": percentile(list_ms, 99), "requests": len(status_ms)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    header(f"Status latency with {args.jobs:,} jobs in the store")
    small = measure(100, args.requests)
    large = measure(args.jobs, args.requests)
    rows = [[r["jobs"], f"{r['size_mb']:.1f}", r["ready_s"], r["status_p50"], r["status_p99"], r["list_p50"],
             r["list_p99"]] for r in (small, large)]
    table(["jobs in store", "database MB", "start to ready s", "getStatus p50 ms", "getStatus p99 ms",
           "GET /execute (latest 100) p50 ms", "GET /execute p99 ms"], rows)
    print(f"{large['requests']:,} getStatus of random jobs, one keep-alive client, sequential; "
          f"store filled in {large['fill_s']:.1f} s; p99 ratio large/small getStatus "
          f"{large['status_p99'] / small['status_p99']:.2f}")


if __name__ == "__main__":
    main()
