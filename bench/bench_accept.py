"""Accept throughput and latency of POST /execute and GET …/getStatus, next to bare Flask on waitress.

    python bench/bench_accept.py [--seconds 10] [--connections 16]

Both servers are real processes on 127.0.0.1 with 8 waitress threads. The executor runs the
local backend with one worker, so the submitted jobs (a one-line script) queue up and run while
the load goes on, as they would in service; a second run holds the worker with a long job, so that
submissions only queue and the rows show the cost of accepting alone. wrk drives the load when installed, otherwise a
threaded keep-alive Python client.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from common import (BareService, header, load, pipeline_body, start_executor, stop_executor, table,
                    write_pipeline)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    header("Accept throughput and latency: the executor against bare Flask on waitress")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        folder = write_pipeline(data / "storage", "bench/pipe", "print('ok')\n")
        body = pipeline_body(folder, "python pipe1.py")

        bare = BareService()
        try:
            bare_post = load(bare.url, "POST", "/execute", body, connections=args.connections,
                             seconds=args.seconds, expect=201)
            bare_get = load(bare.url, "GET", "/execute/0f8e2c1a-1111-4a4a-9b9b-123456789abc/getStatus",
                            connections=args.connections, seconds=args.seconds)
        finally:
            bare.stop()

        # Run 1: the one worker runs each submitted one-line job as it comes, on the same two cores.
        exec_post, exec_get = measure_executor(data, body, args, hold_worker=False)
        # Run 2: the worker is held by a long job, so submissions only queue: the cost of accepting alone.
        write_pipeline(data / "storage", "bench/hold", "import time\ntime.sleep(600)\n")
        held_post, held_get = measure_executor(data, body, args, hold_worker=True)

    rows = []
    for route, bare_result, exec_result in (("POST /execute", bare_post, exec_post),
                                            ("GET …/getStatus", bare_get, exec_get),
                                            ("POST /execute, worker held", bare_post, held_post),
                                            ("GET …/getStatus, worker held", bare_get, held_get)):
        rows.append([route, bare_result.rps, exec_result.rps, f"{exec_result.rps / bare_result.rps:.2f}",
                     bare_result.p50_ms, exec_result.p50_ms, bare_result.p99_ms, exec_result.p99_ms,
                     f"{bare_result.errors}/{exec_result.errors}"])
    table(["route", "bare req/s", "executor req/s", "executor/bare", "bare p50 ms", "executor p50 ms",
           "bare p99 ms", "executor p99 ms", "errors bare/executor"], rows)
    print(f"load: {exec_post.tool}, {args.connections} keep-alive connections, {args.seconds:.0f} s per row")


def measure_executor(data: Path, body: dict, args: argparse.Namespace, hold_worker: bool):
    """Load POST /execute then getStatus on a fresh executor with one worker; return both results."""
    executor, _ = start_executor(data, workers=1)
    try:
        if hold_worker:
            status, answer = executor.request("POST", "/execute", pipeline_body("bench/hold", "python pipe1.py"))
            assert status == 201, answer
        status, answer = executor.request("POST", "/execute", body)
        assert status == 201, answer
        job_path = f"/execute/{answer['task_id']}/getStatus"
        post = load(executor.url, "POST", "/execute", body, connections=args.connections,
                    seconds=args.seconds, expect=201)
        get = load(executor.url, "GET", job_path, connections=args.connections, seconds=args.seconds)
    finally:
        stop_executor(executor)
    return post, get


if __name__ == "__main__":
    main()
