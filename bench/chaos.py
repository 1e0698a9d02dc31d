"""A longer chaos run than the test suite's: kill -9 the service at random moments while jobs are in flight.

    python bench/chaos.py [--jobs 200] [--kills 10] [--workers 4] [--seed 1] [--max-seconds 300]
                          [--hostile-share 0.3]

The local backend runs a script that records each run of each job in a file of its job's folder (all
a sandboxed job may write). Jobs are submitted in bursts between kills; after the last restart the run waits for every job to end and counts what
the claim says must never happen: a job lost, a job run twice, a job left WAITING or RUNNING.

A share of the jobs is hostile: after recording its run, each does one of HOSTILE_ACTIONS to the
files the executor reads or to its own output. After the run every job's log and artifacts are
fetched once more, and the run counts slow answers (over 5 s), answers over 2 MiB, answers holding
the key file or /etc/passwd, and a key file that changed; it prints the last service's peak memory.
It also counts the daemons hostile jobs left that are still alive after the run.
"""
from __future__ import annotations

import argparse
import json
import random
import sqlite3
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import psutil

from common import ServiceProcess, header, pipeline_body, table, write_pipeline
from conftest import http_request

FINAL = {"COMPLETED", "ERROR", "CANCELLED"}
# Each runs after the run is recorded; the job finds the executor's files from its working folder
# (<data>/jobs/<id>/code), as a hostile script would.
HOSTILE_PRELUDE = """\
import os, pathlib, sys
code = pathlib.Path.cwd()
job, data = code.parent.name, code.parents[2]
out = pathlib.Path(os.environ["SM_OUTPUT_DATA_DIR"])
def replace_log(make):
    for log in (data / "logs" / "jobs" / f"{job}.log", code.parent / "job.log"):
        try:
            if log.is_symlink() or log.exists():
                log.unlink()
            make(log)
        except OSError:
            pass
"""
HOSTILE_ACTIONS = {
    "fifo log": "replace_log(os.mkfifo)",
    "log links to /dev/zero": "replace_log(lambda log: os.symlink('/dev/zero', log))",
    "log links to the key file": "replace_log(lambda log: os.symlink(data / 'secret.key', log))",
    "outputs link to /etc/passwd and the database":
        "os.symlink('/etc/passwd', out / 'passwd.txt')\nos.symlink(data / 'executor.sqlite3', out / 'db.txt')",
    "20 MiB line without a newline": "sys.stdout.write('x' * (20 << 20))",
    "20,000 metric lines": "print('\\n'.join(f'epoch={i}/20000 loss={1 / i:.6f}' for i in range(1, 20001)))",
    "40 one-MiB outputs": "[(out / f'part{i}.txt').write_text('y' * (1 << 20)) for i in range(40)]",
    "copies the key file and the database into its outputs":
        "import shutil\nfor name in ('secret.key', 'executor.sqlite3'):\n"
        "    try:\n        shutil.copy(data / name, out / (name + '.txt'))\n    except OSError:\n        pass",
    "double-forked daemon holding the output":
        "if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
        "        os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(600)', DAEMON_TOKEN])\n"
        "    os._exit(0)",
}
# The daemons' command lines end with this token, so that the run finds the ones still alive.
DAEMON_TOKEN = uuid.uuid4().hex
SLOW_ANSWER_S = 5.0
LARGE_ANSWER_BYTES = 2 << 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-seconds", type=float, default=300)
    parser.add_argument("--hostile-share", type=float, default=0.3)
    args = parser.parse_args()
    header(f"Chaos: kill -9 at {args.kills} random moments across {args.jobs} local jobs, "
           f"{args.hostile_share:.0%} of them hostile")
    rng = random.Random(args.seed)
    began = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        script = ("import os, sys, time\nopen(os.path.join(os.environ['SM_OUTPUT_DATA_DIR'], 'runs'), 'a')"
                  ".write('run\\n')\ntime.sleep(float(sys.argv[2]))\n")
        write_pipeline(data / "storage", "chaos", script)
        prelude = f"{HOSTILE_PRELUDE}DAEMON_TOKEN = {DAEMON_TOKEN!r}\n"
        for number, action in enumerate(HOSTILE_ACTIONS.values()):
            write_pipeline(data / "storage", f"hostile{number}", f"{script}{prelude}{action}\n")
        flags = ["--workers", str(args.workers), "--max-log-line-bytes", "65536"]
        service = ServiceProcess(data, args=flags)
        key = (data / "secret.key").read_bytes()
        ids: dict[str, int] = {}
        hostile: dict[str, str] = {}
        bursts = [args.jobs // (args.kills + 1)] * (args.kills + 1)
        bursts[-1] += args.jobs - sum(bursts)
        for burst, size in enumerate(bursts):
            for _ in range(size):
                number = len(ids)
                pause = rng.choice([0.0, 0.05, 0.2, 1.0])
                action = rng.randrange(len(HOSTILE_ACTIONS)) if rng.random() < args.hostile_share else None
                folder = "chaos" if action is None else f"hostile{action}"
                status, body = service.request("POST", "/execute",
                                               pipeline_body(folder, f"python pipe1.py j{number} {pause}"))
                if status != 201:
                    raise SystemExit(f"submission refused: {status} {body}")
                ids[body["task_id"]] = number
                if action is not None:
                    hostile[body["task_id"]] = list(HOSTILE_ACTIONS)[action]
            if burst < args.kills:
                time.sleep(rng.uniform(0.05, 1.5))
                service.kill()
                service = ServiceProcess(data, args=flags)
        deadline = time.monotonic() + args.max_seconds
        rows: dict[str, tuple[str, str | None]] = {}
        while time.monotonic() < deadline:
            conn = sqlite3.connect(data / "executor.sqlite3")
            rows = {row[0]: (row[1], row[2]) for row in conn.execute("SELECT id, status, failure_reason FROM jobs")}
            conn.close()
            if all(rows.get(job_id, ("",))[0] in FINAL for job_id in ids):
                break
            time.sleep(0.5)
        answers = fetch_every_answer(service, list(ids), key)
        peak_mib = peak_memory_mib(service.process.pid)
        service.kill()
        key_changed = (data / "secret.key").read_bytes() != key
        run_files = {job_id: data / "jobs" / job_id / "output" / "data" / "runs" for job_id in ids}
        run_counts = {ids[job_id]: path.read_text().count("run") if path.exists() else 0
                      for job_id, path in run_files.items()}
        daemons = daemons_alive()
        for daemon in daemons:
            daemon.kill()
    statuses = Counter(rows[job_id][0] for job_id in ids if job_id in rows)
    reasons = Counter(rows[job_id][1] for job_id in ids if job_id in rows and rows[job_id][0] == "ERROR")
    lost = sum(job_id not in rows for job_id in ids)
    stuck = sum(job_id in rows and rows[job_id][0] not in FINAL for job_id in ids)
    twice = sum(count > 1 for count in run_counts.values())
    completed_not_run = sum(rows.get(job_id, ("",))[0] == "COMPLETED" and run_counts[number] != 1
                            for job_id, number in ids.items())
    table(["jobs", "kills", "COMPLETED", "ERROR (restart)", "lost", "run twice", "completed without one run",
           "stuck", "extra jobs in store", "wall s"],
          [[len(ids), args.kills, statuses["COMPLETED"], statuses["ERROR"], lost, twice, completed_not_run, stuck,
            len(set(rows) - set(ids)), time.monotonic() - began]])
    print(f"ERROR reasons: {dict(reasons)}")
    print()
    outcomes = Counter((action, rows.get(job_id, ("lost",))[0]) for job_id, action in hostile.items())
    table(["hostile action", "jobs", "ended as"],
          [[action, sum(count for (name, _), count in outcomes.items() if name == action),
            ", ".join(f"{status} {count}" for (name, status), count in sorted(outcomes.items()) if name == action)]
           for action in HOSTILE_ACTIONS if any(name == action for name, _ in outcomes)])
    table(["getLog + getOutputArtifacts answers", f"slower than {SLOW_ANSWER_S:.0f} s", "max s", "over 2 MiB",
           "largest KiB", "holding the key or /etc/passwd", "failed", "key file changed", "daemons alive after",
           "peak RSS MiB (last service)"],
          [[answers["count"], answers["slow"], answers["max_s"], answers["large"], answers["largest"] / 1024,
            answers["leaks"], answers["failed"], key_changed, len(daemons), peak_mib]])
    if lost or twice or stuck or completed_not_run or set(rows) - set(ids):
        raise SystemExit("the claim failed: see the table")
    if answers["slow"] or answers["large"] or answers["leaks"] or answers["failed"] or key_changed or daemons:
        raise SystemExit("a hostile job got through: see the table")


def daemons_alive() -> list[psutil.Process]:
    """Return the hostile jobs' daemons still running (a moment after the last job ended)."""
    time.sleep(2)
    return [process for process in psutil.process_iter(["cmdline"])
            if (process.info["cmdline"] or [])[-1:] == [DAEMON_TOKEN]]


def fetch_every_answer(service: ServiceProcess, job_ids: list[str], key: bytes) -> dict[str, float]:
    """Fetch each job's log and artifacts once; count slow, large, leaking and failed answers."""
    found = {"count": 0, "slow": 0, "max_s": 0.0, "large": 0, "largest": 0, "leaks": 0, "failed": 0}
    secrets = (key.decode().strip(), "root:x:0:0", "SQLite format")
    for job_id in job_ids:
        for route in ("getLog", "getOutputArtifacts"):
            started = time.monotonic()
            status, body = http_request(service.url, "GET", f"/execute/{job_id}/{route}", timeout=30)
            elapsed = time.monotonic() - started
            text = json.dumps(body)
            found["count"] += 1
            found["slow"] += elapsed > SLOW_ANSWER_S
            found["max_s"] = max(found["max_s"], elapsed)
            found["large"] += len(text) > LARGE_ANSWER_BYTES
            found["largest"] = max(found["largest"], len(text))
            found["leaks"] += any(secret in text for secret in secrets)
            found["failed"] += status != 200
    return found


def peak_memory_mib(pid: int) -> float:
    """Return a process's peak resident memory (VmHWM) in MiB; NaN where /proc is not there."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


if __name__ == "__main__":
    main()
