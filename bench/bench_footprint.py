"""The daemon's footprint: start to ready, idle memory, memory after 1,000 jobs; bare Flask alongside.

    python bench/bench_footprint.py [--jobs 1000] [--workers 2]

Start to ready is the time from launching the process to its first 200 from GET /health. Memory is
the service process's own resident set (VmRSS, and its peak VmHWM) from /proc: job processes are
its children and not counted. The jobs are real local pipeline runs of a one-line script.
"""
from __future__ import annotations

import argparse
import http.client
import tempfile
import time
from pathlib import Path

from common import (BareService, header, pipeline_body, rss_mib, start_executor, stop_executor, table,
                    write_pipeline)

FINAL = {"COMPLETED", "ERROR", "CANCELLED"}


def wait_healthy(url: str, timeout: float = 60) -> None:
    host, port = url.removeprefix("http://").split(":")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection(host, int(port), timeout=5)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.01)
    raise RuntimeError(f"{url} never became healthy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-seconds", type=float, default=400)
    args = parser.parse_args()
    header("Footprint of the executor daemon")

    began = time.monotonic()
    bare = BareService()
    bare_ready = time.monotonic() - began
    time.sleep(2)
    bare_rss = rss_mib(bare.process.pid)[0]
    bare.stop()

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        folder = write_pipeline(data / "storage", "bench/pipe", "print('ok')\n")
        began = time.monotonic()
        service, _ = start_executor(data, workers=args.workers)
        wait_healthy(service.url)
        ready = time.monotonic() - began
        try:
            time.sleep(2)
            idle_rss, _ = rss_mib(service.process.pid)
            body = pipeline_body(folder, "python pipe1.py")
            ids = []
            submit_began = time.monotonic()
            for _ in range(args.jobs):
                status, answer = service.request("POST", "/execute", body)
                assert status == 201, answer
                ids.append(answer["task_id"])
            submit_s = time.monotonic() - submit_began
            deadline = time.monotonic() + args.max_seconds
            while time.monotonic() < deadline:
                _, last = service.request("GET", f"/execute/{ids[-1]}/getStatus")
                if last["task_status"] in FINAL:
                    break
                time.sleep(1)
            run_s = time.monotonic() - submit_began
            counts: dict[str, int] = {}
            for job_id in ids:
                status = service.request("GET", f"/execute/{job_id}/getStatus")[1]["task_status"]
                counts[status] = counts.get(status, 0) + 1
            loaded_rss, peak_rss = rss_mib(service.process.pid)
        finally:
            stop_executor(service)

    table(["process", "start to ready s", "idle RSS MiB", f"RSS after {args.jobs:,} jobs MiB", "peak RSS MiB"],
          [["bare Flask on waitress", bare_ready, bare_rss, "-", "-"],
           [f"executor (local backend, {args.workers} workers)", ready, idle_rss, loaded_rss, peak_rss]])
    print(f"{args.jobs:,} jobs submitted in {submit_s:.1f} s and run in {run_s:.1f} s "
          f"({args.jobs / run_s:.1f} jobs/s end to end); final statuses {counts}")


if __name__ == "__main__":
    main()
