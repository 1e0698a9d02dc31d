"""Chaos on several executors sharing one PostgreSQL store: jobs submitted while executors are killed with
SIGKILL every few seconds and started again; then 0 lost, 0 run twice, 0 stuck, every job answered by all.

    python bench/chaos_executors.py [--jobs 100] [--executors 3] [--kills 10] [--kill-every 4] [--lease 3]

The test suite runs a bounded version (tests/test_shared_executors.py). Jobs are short local scripts that print
a line when they start and when they end; every executor queues an interrupted job again. Counted from the
jobs' logs and events: two runs at once if a script started more often than its job was claimed, or a job
was claimed again without its executor being lost first; a script that ended twice is counted apart.
"""
from __future__ import annotations

import argparse
import random
import tempfile
import threading
import time
from pathlib import Path

from bench_executors import Executors, claims, wait
from common import header, table
from postgres_cluster import PostgresCluster

FINAL = {"COMPLETED", "ERROR", "CANCELLED"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--executors", type=int, default=3)
    parser.add_argument("--kills", type=int, default=10, help="executors killed in all, while jobs are submitted and run")
    parser.add_argument("--kill-every", type=float, default=4.0)
    parser.add_argument("--lease", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=21)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds for every job to end, after the kills")
    args = parser.parse_args()
    header(f"Chaos: {args.jobs} jobs, {args.executors} executors, one killed every {args.kill_every:g} s")
    rng = random.Random(args.seed)
    cluster = PostgresCluster()
    kills = 0
    try:
        with tempfile.TemporaryDirectory() as tmp:
            executors = Executors(cluster.create_database(), Path(tmp) / "data", args.lease)
            try:
                for _ in range(args.executors):
                    executors.start()
                job_ids: list[str] = []

                def submit_all() -> None:
                    for _ in range(args.jobs):
                        for _attempt in range(20):  # the chosen executor may be killed under the request
                            try:
                                job_ids.append(executors.submit(rng.choice(executors.running), rng.uniform(0.5, 3)))
                                break
                            except (OSError, AssertionError):
                                time.sleep(0.2)
                        time.sleep(0.3)

                submitter = threading.Thread(target=submit_all)
                submitter.start()
                while kills < args.kills:
                    time.sleep(rng.uniform(0.5, 1.5) * args.kill_every)
                    executors.kill(rng.choice(executors.running))
                    executors.start()
                    kills += 1
                submitter.join()
                began = time.monotonic()
                try:
                    wait(lambda: all(executors.detail(job_id)["status"] in FINAL for job_id in job_ids),
                         timeout=args.timeout, interval=1.0)
                except TimeoutError:
                    pass  # counted below as stuck
                settled_s = time.monotonic() - began
                outcome = {"lost": 0, "twice": 0, "ended twice": 0, "stuck": 0, "unanswered": 0, "taken over": 0}
                for job_id in job_ids:
                    detail = executors.detail(job_id)
                    log = executors.running[0].request("GET", f"/execute/{job_id}/getLog")[1]["logs"]["content"]
                    outcome["stuck"] += detail["status"] not in FINAL
                    outcome["lost"] += detail["status"] in FINAL - {"COMPLETED"}
                    takeovers = sum("lost its lease" in (event["message"] or "") for event in detail["events"])
                    # Two runs at once: a start without a claim of its own, or a claim not after a lost executor.
                    outcome["twice"] += (log.count("script-start") > len(claims(detail))
                                         or len(claims(detail)) > 1 + takeovers)
                    outcome["ended twice"] += log.count("script-done") > 1
                    outcome["taken over"] += len(claims(detail)) > 1
                    outcome["unanswered"] += any(
                        service.request("GET", f"/execute/{job_id}/getStatus")[0] != 200
                        for service in executors.running)
            finally:
                executors.stop_all()
    finally:
        cluster.stop()
    table(["jobs", "kills", "lost (ended other than COMPLETED)", "run twice at once", "script ended twice", "stuck",
           "not answered by every executor", "claimed more than once", "all ended within s of the last kill"],
          [[len(job_ids), kills, outcome["lost"], outcome["twice"], outcome["ended twice"], outcome["stuck"],
            outcome["unanswered"], outcome["taken over"], settled_s]])
    print("a script ends twice only where its executor was killed between the script's exit and the executor's "
          "written record of it (ends/<job>.json, which a takeover stores instead of running the job again)")


if __name__ == "__main__":
    main()
