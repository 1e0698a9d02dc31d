"""What a job's limits cost at its start: making its cgroup, placing its processes, removing it.

    python bench/bench_job_limits.py [--runs 20]

Each figure is the median of --runs. First, making one job cgroup with its limits written and
removing it (the executor's own work). Then a job process (`python -S -c pass` run to its end as a
job runs: started, output read, tree ended) without and with its cgroup, runs of the two
interleaved so that the machine's other work weighs on both alike: in bubblewrap (its processes
placed while its child waits) and bare (placed by the launcher that joins the cgroup before it
becomes the command).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from common import header, median, table

from config import load_config
from mlops.local.limits import Confinement, detect as detect_confinement
from mlops.local.processes import JobProcess
from mlops.sandbox import Sandbox, detect as detect_sandbox

ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp"}


def cgroup_seconds(confinement: Confinement, runs: int) -> list[float]:
    timings = []
    for number in range(runs):
        began = time.perf_counter()
        enclosure = confinement.enclose(f"bench-{number}", own_uid=False)
        enclosure.release()
        timings.append(time.perf_counter() - began)
    return timings


def job_seconds(box: Sandbox, confinement: Confinement, folder: Path, runs: int) -> tuple[list[float], list[float]]:
    """Time a job process to its end without and with its cgroup, the runs interleaved."""
    timings: dict[bool, list[float]] = {False: [], True: []}
    for number in range(runs):
        for limited in (False, True):
            began = time.perf_counter()
            process = JobProcess(box, [sys.executable, "-S", "-c", "pass"], cwd=folder, env=ENV,
                                 marker=f"bench-{number}", max_line_bytes=65536, writable=[folder],
                                 confinement=confinement if limited else None)
            list(process.lines())
            process.wait()
            timings[limited].append(time.perf_counter() - began)
    return timings[False], timings[True]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        folder = data / "jobs" / "bench" / "code"
        folder.mkdir(parents=True)
        config = load_config(environ={}, overrides={"data_dir": str(data), "job_memory_limit": "1GiB"})
        confinement = detect_confinement(config)
        if not confinement.cgroups:
            raise SystemExit(f"no cgroups here: {confinement.missing}")
        box = detect_sandbox(config)
        box.hand_over(folder)
        header(f"Job limits at job start, {args.runs} runs each: {confinement.describe()}; {box.describe()}")
        made = median(cgroup_seconds(confinement, args.runs))
        rows = [["make the job's cgroup, write its limits, remove it", 0.0, made * 1000, made * 1000]]
        for name, sandbox in (("in bubblewrap", box), ("bare, through the launcher", Sandbox(None, missing="bare"))):
            without, limited = (median(timings) for timings in job_seconds(sandbox, confinement, folder, args.runs))
            rows.append([f"job process `python -S -c pass` to its end, {name}", without * 1000, limited * 1000,
                         (limited - without) * 1000])
    table(["what", "without ms", "with its cgroup ms", "added ms"], rows)


if __name__ == "__main__":
    main()
