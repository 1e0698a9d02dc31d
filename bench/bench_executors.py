"""Several executors on one PostgreSQL store: claim fairness under even load, and failover time over kills.

    python bench/bench_executors.py [--executors 3] [--jobs 60] [--kills 20] [--lease 5]

Real `python app.py` processes share a throwaway local cluster and one data folder. Fairness: jobs of equal
length submitted evenly to every executor, each with two workers; the jobs each executor ran. Failover: a
long job runs; its executor is killed with SIGKILL and started again; the time from the kill until another
executor runs the job again (the lease's lapse plus the next watch tick), median and max over the kills.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from common import ServiceProcess, header, pipeline_body, stop_executor, table, write_pipeline
from postgres_cluster import PostgresCluster

# It exits the moment it says it is done: an executor killed between the mark and the exit would rightly run it again.
SCRIPT = ("import os, sys, time\nprint('script-start', flush=True)\ntime.sleep(float(sys.argv[1]))\n"
          "print('script-done', flush=True)\nos._exit(0)\n")


class Executors:
    """Executor processes sharing one database, data folder and storage root."""

    def __init__(self, database: str, data_dir: Path, lease: float, workers: int = 2):
        self.env = {"EXECUTOR_DATABASE_URL": database, "EXECUTOR_LEASE_SECONDS": str(lease),
                    "EXECUTOR_RETRY_INTERRUPTED": "true"}
        self.data_dir = data_dir
        self.workers = workers
        write_pipeline(data_dir / "storage", "pipe", SCRIPT)
        self.running: list[ServiceProcess] = []

    def start(self) -> ServiceProcess:
        service = ServiceProcess(self.data_dir, env=self.env, args=["--workers", str(self.workers)])
        self.running.append(service)
        return service

    def kill(self, service: ServiceProcess) -> None:
        self.running.remove(service)
        stop_executor(service)

    def stop_all(self) -> None:
        for service in list(self.running):
            self.kill(service)

    def submit(self, service: ServiceProcess, seconds: float) -> str:
        status, body = service.request("POST", "/execute", pipeline_body("pipe", f"python pipe1.py {seconds}"))
        assert status == 201, body
        return body["task_id"]

    def detail(self, job_id: str) -> dict[str, Any]:
        status, body = self.running[0].request("GET", f"/api/jobs/{job_id}")
        assert status == 200, body
        return body

    def identity(self, service: ServiceProcess) -> str:
        return service.request("GET", "/ready")[1]["checks"]["lease"]["executor"]


def claims(detail: dict[str, Any]) -> list[str]:
    """Return the executors that claimed a job, in order."""
    return [event["message"].removeprefix("claimed by executor ") for event in detail["events"]
            if (event["message"] or "").startswith("claimed by executor ")]


def wait(predicate, timeout: float, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"not within {timeout} s")


def fairness(executors: Executors, jobs: int) -> Counter:
    """Submit `jobs` equal jobs round-robin to the executors; return how many each executor ran."""
    job_ids = [executors.submit(executors.running[number % len(executors.running)], 1.0) for number in range(jobs)]
    wait(lambda: all(executors.detail(job_id)["status"] == "COMPLETED" for job_id in job_ids), timeout=20 + jobs * 2)
    return Counter(executors.detail(job_id)["executor"] for job_id in job_ids)


def failover(executors: Executors, kills: int) -> list[float]:
    """Kill the executor running a long job `kills` times; return the seconds until another ran it again."""
    times = []
    for _ in range(kills):
        job_id = executors.submit(executors.running[0], 600)
        owner = wait(lambda: executors.detail(job_id).get("executor") if executors.detail(job_id)["status"] == "RUNNING"
                     else None, timeout=60)
        (victim,) = [service for service in executors.running if executors.identity(service) == owner]
        claimed = len(claims(executors.detail(job_id)))
        killed = time.monotonic()
        executors.kill(victim)
        wait(lambda: len(claims(executors.detail(job_id))) > claimed, timeout=120, interval=0.05)
        times.append(time.monotonic() - killed)
        executors.running[0].request("POST", f"/execute/{job_id}/stop")
        executors.start()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executors", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=60)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--lease", type=float, default=5)
    args = parser.parse_args()
    header(f"{args.executors} executors on one PostgreSQL store: claim fairness and failover")
    cluster = PostgresCluster()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            executors = Executors(cluster.create_database(), Path(tmp) / "data", args.lease)
            try:
                for _ in range(args.executors):
                    executors.start()
                names = [executors.identity(service) for service in executors.running]
                ran = fairness(executors, args.jobs)
                times = failover(executors, args.kills)
            finally:
                executors.stop_all()
    finally:
        cluster.stop()
    table(["executor", "jobs run", "share"], [[name, ran[name], f"{ran[name] / args.jobs:.0%}"] for name in names])
    print(f"{args.jobs} jobs of 1 s submitted round-robin, 2 workers per executor\n")
    table(["kills", "lease s", "kill to running again: median s", "max s", "min s"],
          [[len(times), args.lease, statistics.median(times), max(times), min(times)]])
    print("the executor running a long job killed with SIGKILL each time (and a new one started); the job is "
          "queued again by the executor that takes it over and claimed by one")


if __name__ == "__main__":
    main()
