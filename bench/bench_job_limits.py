"""What a job's limits cost at its start: making its cgroup, placing its first process, removing it.

    python bench/bench_job_limits.py [--runs 20]

Three figures, each the median of --runs: making and removing one job cgroup with its limits written
(the executor's share), starting a process inside it through the launcher that joins it before it
runs (against starting the same process directly), and a job process (`python -c pass` run to its
end as a job runs, in bubblewrap where there is one) with and without its cgroup.
"""
from __future__ import annotations

import argparse
import subprocess
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
TRUE = "/bin/true"


def cgroup_seconds(confinement: Confinement, runs: int) -> list[float]:
    timings = []
    for number in range(runs):
        began = time.perf_counter()
        enclosure = confinement.enclose(f"bench-{number}", own_uid=False)
        enclosure.release()
        timings.append(time.perf_counter() - began)
    return timings


def placement_seconds(confinement: Confinement | None, runs: int) -> list[float]:
    """Time starting /bin/true to its end: directly, or made, joined and removed with its cgroup."""
    timings = []
    for number in range(runs):
        began = time.perf_counter()
        enclosure = confinement.enclose(f"bench-{number}", own_uid=False) if confinement else None
        subprocess.run([*(enclosure.prefix() if enclosure else ()), TRUE], check=True)
        if enclosure is not None:
            enclosure.release()
        timings.append(time.perf_counter() - began)
    return timings


def job_seconds(box: Sandbox, confinement: Confinement | None, folder: Path, runs: int) -> list[float]:
    timings = []
    for number in range(runs):
        began = time.perf_counter()
        process = JobProcess(box, [sys.executable, "-c", "pass"], cwd=folder, env=ENV, marker=f"bench-{number}",
                             max_line_bytes=65536, writable=[folder], confinement=confinement)
        list(process.lines())
        process.wait()
        timings.append(time.perf_counter() - began)
    return timings


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
        header(f"Job limits at job start: {args.runs} runs each; {confinement.describe()}; {box.describe()}")
        made = median(cgroup_seconds(confinement, args.runs))
        direct = median(placement_seconds(None, args.runs))
        placed = median(placement_seconds(confinement, args.runs))
        job_bare = median(job_seconds(box, None, folder, args.runs))
        job_limited = median(job_seconds(box, confinement, folder, args.runs))
    table(["what", "without ms", "with its cgroup ms", "added ms"], [
        ["make the job's cgroup, write its limits, remove it", 0.0, made * 1000, made * 1000],
        ["start /bin/true to its end, placed in the cgroup before it runs", direct * 1000, placed * 1000,
         (placed - direct) * 1000],
        ["job process `python -c pass`, start to end", job_bare * 1000, job_limited * 1000,
         (job_limited - job_bare) * 1000],
    ])


if __name__ == "__main__":
    main()
