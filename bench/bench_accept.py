"""Accept throughput and latency of POST /execute and GET …/getStatus, next to bare Flask on waitress.

    python bench/bench_accept.py [--seconds 3] [--rounds 5] [--connections 16]

Both servers are real processes on 127.0.0.1 with 8 waitress threads, up side by side for the
whole run. The executor runs the local backend with one worker, held by a running job that prints
a metric line every 0.1 s (so the store takes its metrics and progress throughout, and a kept
status answer lasts only until the next of those writes); submissions queue behind it as they do
in service while a job trains. The load
alternates between the two servers route by route (bare POST, executor POST, bare GET, executor
GET) for several rounds, so that a shift in the machine's load falls on both sides of each pair;
the table gives the medians over the rounds and the median of the per-round ratios. wrk drives
the load when installed, otherwise a threaded keep-alive Python client.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from common import (BareService, LoadResult, header, load, median, pipeline_body, start_executor, stop_executor,
                    table, write_pipeline)

HOLD_SCRIPT = """import time
for step in range(1, 6001):
    print(f"epoch={step}/6000 train_loss={1 / step:.6f}", flush=True)
    time.sleep(0.1)
"""
BARE_JOB = "/execute/0f8e2c1a-1111-4a4a-9b9b-123456789abc/getStatus"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    header("Accept throughput and latency: the executor against bare Flask on waitress, interleaved")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        folder = write_pipeline(data / "storage", "bench/pipe", "print('ok')\n")
        write_pipeline(data / "storage", "bench/hold", HOLD_SCRIPT)
        body = pipeline_body(folder, "python pipe1.py")
        bare = BareService()
        executor, _ = start_executor(data, workers=1)
        try:
            status, answer = executor.request("POST", "/execute", pipeline_body("bench/hold", "python pipe1.py"))
            assert status == 201, answer
            status, answer = executor.request("POST", "/execute", body)
            assert status == 201, answer
            job_path = f"/execute/{answer['task_id']}/getStatus"
            routes = {"POST /execute": (("POST", "/execute", body, 201), ("POST", "/execute", body, 201)),
                      "GET …/getStatus": (("GET", BARE_JOB, None, 200), ("GET", job_path, None, 200))}
            results: dict[str, list[tuple[LoadResult, LoadResult]]] = {route: [] for route in routes}
            for _ in range(args.rounds):
                for route, (bare_call, executor_call) in routes.items():
                    results[route].append((run_load(bare.url, bare_call, args), run_load(executor.url, executor_call, args)))
        finally:
            bare.stop()
            stop_executor(executor)

    rows = []
    for route, pairs in results.items():
        bare_runs, executor_runs = [pair[0] for pair in pairs], [pair[1] for pair in pairs]
        rows.append([route, median([run.rps for run in bare_runs]), median([run.rps for run in executor_runs]),
                     f"{median([e.rps / b.rps for b, e in pairs]):.2f}",
                     f"{min(e.rps / b.rps for b, e in pairs):.2f}–{max(e.rps / b.rps for b, e in pairs):.2f}",
                     median([run.p50_ms for run in bare_runs]), median([run.p50_ms for run in executor_runs]),
                     median([run.p99_ms for run in bare_runs]), median([run.p99_ms for run in executor_runs]),
                     f"{sum(run.errors for run in bare_runs)}/{sum(run.errors for run in executor_runs)}"])
    table(["route", "bare req/s", "executor req/s", "executor/bare (median of rounds)", "range", "bare p50 ms",
           "executor p50 ms", "bare p99 ms", "executor p99 ms", "errors bare/executor"], rows)
    print(f"load: {results['POST /execute'][0][1].tool}, {args.connections} keep-alive connections, "
          f"{args.seconds:.0f} s per run, {args.rounds} interleaved rounds; the executor's one worker runs a job "
          f"throughout")


def run_load(url: str, call: tuple[str, str, dict | None, int], args: argparse.Namespace) -> LoadResult:
    """Drive one route of one server for the configured time."""
    method, path, body, expect = call
    return load(url, method, path, body, connections=args.connections, seconds=args.seconds, expect=expect)


if __name__ == "__main__":
    main()
