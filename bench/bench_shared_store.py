"""getStatus and POST /execute throughput: one executor on SQLite against one and two on PostgreSQL.

    python bench/bench_shared_store.py [--seconds 5] [--connections 8]

Each setup is real `python app.py` processes on one data folder; the PostgreSQL ones share a throwaway
local cluster (Debian's initdb and pg_ctl). With two executors each gets its own load generator at the same
time and the rates are added. Every executor's one worker runs a long job throughout, so submissions queue.
"""
from __future__ import annotations

import argparse
import tempfile
import threading
from pathlib import Path

from common import LoadResult, header, load, pipeline_body, start_executor, stop_executor, table, write_pipeline
from postgres_cluster import PostgresCluster

HOLD_SCRIPT = "import time\ntime.sleep(600)\n"


def measure(executors: int, database_url: str | None, args: argparse.Namespace) -> dict[str, list[LoadResult]]:
    """Start the executors, then load each route on all of them at once; return the runs by route."""
    env = {"EXECUTOR_DATABASE_URL": database_url} if database_url else {}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        folder = write_pipeline(data / "storage", "bench/pipe", "print('ok')\n")
        write_pipeline(data / "storage", "bench/hold", HOLD_SCRIPT)
        body = pipeline_body(folder, "python pipe1.py")
        services = [start_executor(data, workers=1, **env)[0] for _ in range(executors)]
        try:
            for service in services:
                status, answer = service.request("POST", "/execute", pipeline_body("bench/hold", "python pipe1.py"))
                assert status == 201, answer
            status, answer = services[0].request("POST", "/execute", body)
            assert status == 201, answer
            calls = {"GET …/getStatus": ("GET", f"/execute/{answer['task_id']}/getStatus", None, 200),
                     "POST /execute": ("POST", "/execute", body, 201)}
            results: dict[str, list[LoadResult]] = {}
            for route, (method, path, payload, expect) in calls.items():
                runs: list[LoadResult] = []

                def drive(url: str) -> None:
                    runs.append(load(url, method, path, payload, connections=args.connections,
                                     seconds=args.seconds, expect=expect))

                threads = [threading.Thread(target=drive, args=(service.url,)) for service in services]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                results[route] = runs
        finally:
            for service in services:
                stop_executor(service)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args()
    header("Throughput: one executor on SQLite, one and two on PostgreSQL")
    cluster = PostgresCluster()
    try:
        setups = {"1 executor, SQLite": measure(1, None, args),
                  "1 executor, PostgreSQL": measure(1, cluster.create_database(), args),
                  "2 executors, PostgreSQL": measure(2, cluster.create_database(), args)}
    finally:
        cluster.stop()
    baseline = {route: sum(run.rps for run in runs) for route, runs in setups["1 executor, SQLite"].items()}
    rows = []
    for setup, results in setups.items():
        for route, runs in results.items():
            rps = sum(run.rps for run in runs)
            rows.append([setup, route, rps, f"{rps / baseline[route]:.2f}", max(run.p50_ms for run in runs),
                         max(run.p99_ms for run in runs), sum(run.errors for run in runs)])
    table(["setup", "route", "req/s (all executors)", "against SQLite", "p50 ms (worst executor)",
           "p99 ms (worst executor)", "errors"], rows)
    tool = setups["1 executor, SQLite"]["POST /execute"][0].tool
    print(f"load: {tool}, {args.connections} keep-alive connections per executor, {args.seconds:.0f} s per run, "
          f"one run each; every process (load, executors, PostgreSQL) on this machine")


if __name__ == "__main__":
    main()
