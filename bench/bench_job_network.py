"""What a job's network namespace costs at its start, with the network off and on.

    python bench/bench_job_network.py [--runs 20]

Each run starts `python -c` in the sandbox as a job starts (the executor's own Sandbox.start) and
times two things: until the job's code runs (it prints the monotonic clock first thing), and until
it has ended. Three ways: bubblewrap in the host's network (how jobs ran before they had a network
namespace of their own, for reference), a namespace of its own with loopback only
(EXECUTOR_SANDBOX_NETWORK=false), and the same with slirp4netns attached and the host's addresses
cut off (true); the three take turns, run by run. Then it says what a job reached each way; the
outside is a server in a network namespace made for the run (as root), behind a veth pair.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from common import header, median, table

from config import load_config
from mlops.sandbox import Sandbox, detect
from test_job_network import host_addresses, outside_server

ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp"}
FIRST_LINE = "import time; print(time.monotonic(), flush=True)"
# What a job tries to reach (with a port each): the host's loopback, the slirp4netns gateway (the
# host's loopback if it were not disabled), the host's own addresses, link-local (cloud credentials),
# and the outside server.
REACH = """
import json, socket, sys
reached = {}
for host, port in json.loads(sys.argv[1]):
    try:
        socket.create_connection((host, port), timeout=2).close()
        reached[host] = "connected"
    except OSError as exc:
        reached[host] = exc.strerror or type(exc).__name__
print(json.dumps(reached))
"""


def host_network(box: Sandbox, argv: list[str], folder: Path, **options) -> subprocess.Popen:
    """Start argv in bubblewrap without a network namespace of its own (how jobs ran before)."""
    wrapped = [arg for arg in box.wrap(argv, cwd=folder, writable=[folder]) if arg != "--unshare-net"]
    return subprocess.Popen(wrapped, cwd=folder, **options)


def own_namespace(box: Sandbox, argv: list[str], folder: Path, **options) -> subprocess.Popen:
    return box.start(argv, cwd=folder, writable=[folder], **options)


def timing(start, box: Sandbox, folder: Path) -> tuple[float, float]:
    """Return (seconds until the job's code ran, seconds until it ended) of one run."""
    began = time.monotonic()
    process = start(box, [sys.executable, "-c", FIRST_LINE], folder, stdout=subprocess.PIPE, text=True, env=ENV)
    out, _ = process.communicate(timeout=60)
    ended = time.monotonic()
    return float(out.split()[0]) - began, ended - began


def reach(start, box: Sandbox, folder: Path, targets: list[tuple[str, int]]) -> dict[str, str]:
    process = start(box, [sys.executable, "-c", REACH, json.dumps(targets)], folder, stdout=subprocess.PIPE,
                    text=True, env=ENV)
    return json.loads(process.communicate(timeout=60)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    header(f"Network namespace cost at a job's start: {args.runs} runs of `python -c` each way, medians")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        folder = data / "jobs" / "bench"
        folder.mkdir(parents=True)
        boxed = detect(load_config(environ={}, overrides={"data_dir": str(data)}))
        if not boxed.isolating:
            raise SystemExit(f"no sandbox here: {boxed.missing}")
        if boxed.network is None:
            raise SystemExit(f"no user-mode networking here: {boxed.network_missing}")
        boxed.hand_over(folder)
        ways = [("bubblewrap in the host's network (before)", host_network, replace(boxed, network=None)),
                ("own namespace, loopback only (network off)", own_namespace, replace(boxed, network=None)),
                ("own namespace + slirp4netns (network on)", own_namespace, boxed)]
        for _, start, box in ways:  # warm the caches once each
            timing(start, box, folder)
        runs: list[list[tuple[float, float]]] = [[] for _ in ways]
        for _ in range(args.runs):
            for index, (_, start, box) in enumerate(ways):
                runs[index].append(timing(start, box, folder))
        rows = []
        base = [median([first for first, _ in runs[0]]) * 1000, median([whole for _, whole in runs[0]]) * 1000]
        for (name, _, _), timed in zip(ways, runs):
            first, whole = median([one for one, _ in timed]) * 1000, median([two for _, two in timed]) * 1000
            rows.append([name, first, first - base[0], whole, whole - base[1]])
        with outside_server() as (server_side, _):
            targets = [("127.0.0.1", 22), ("10.0.2.2", 22), *((address, 22) for address in host_addresses()),
                       ("169.254.169.254", 80), (server_side, 8080)]
            reached = [[name, *(reach(start, box, folder, targets)[host] for host, _ in targets)]
                       for name, start, box in ways]
    table(["way", "until the job's code runs ms", "added ms", "start to end ms", "added ms"], rows)
    print()
    table(["what a job reached", *(f"{host}:{port}" for host, port in targets[:-1]), "outside server"], reached)


if __name__ == "__main__":
    main()
