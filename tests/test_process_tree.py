"""A job is its whole process tree: hostile scripts that leave daemons behind, as real processes.

Each behaviour runs twice: in the bubblewrap sandbox (skipped where it cannot run) and bare, as on a
host without it, where the process group, the descendants and the marker variable find the tree.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import psutil
import pytest

from config import load_config
from mlops import sandbox as sandbox_module
from mlops.local.processes import JobProcess, sweep_orphans
from conftest import ROOT, wait_for

ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin"}
LINE_BYTES = 65536

# Forks twice into a new session, keeps the job's stdout open and sleeps; the grandchild's command
# line carries a token the test finds it by on the host.
DAEMON = """
import os, sys, time
token = sys.argv[1]
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(300)", token])
    os._exit(0)
print("daemon started", flush=True)
time.sleep(float(sys.argv[2]))
print("main done", flush=True)
"""


@pytest.fixture(params=["bubblewrap", "bare"])
def box(request, tmp_path: Path) -> sandbox_module.Sandbox:
    if request.param == "bare":
        return sandbox_module.Sandbox(None, missing="bare for the test")
    found = sandbox_module.detect(load_config(environ={}, overrides={"data_dir": str(tmp_path / "data")}))
    if not found.isolating:
        pytest.skip(f"no sandbox here: {found.missing}")
    return found


def job_folder(tmp_path: Path, box: sandbox_module.Sandbox) -> Path:
    folder = tmp_path / "data" / "jobs" / uuid.uuid4().hex
    folder.mkdir(parents=True)
    (folder / "daemon.py").write_text(DAEMON)
    box.hand_over(folder)
    return folder


def processes_with(token: str) -> list[psutil.Process]:
    """The daemons that carry the token (not the job's main process, nor the stand-in executor)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if (process.info["cmdline"] or [])[-2:] == ["import time; time.sleep(300)", token]:
            found.append(process)
    return found


def start(box: sandbox_module.Sandbox, folder: Path, token: str, main_seconds: float) -> JobProcess:
    return JobProcess(box, [sys.executable, "daemon.py", token, str(main_seconds)], cwd=folder, env=ENV,
                      marker=folder.name, max_line_bytes=LINE_BYTES, writable=[folder])


def test_a_job_ends_when_its_main_process_ends_though_a_daemon_holds_its_output(box, tmp_path) -> None:
    token = uuid.uuid4().hex
    process = start(box, job_folder(tmp_path, box), token, 0.5)
    began = time.monotonic()
    lines = list(process.lines())
    assert process.wait() == 0
    assert time.monotonic() - began < 10
    assert lines == ["daemon started", "main done"]
    wait_for(lambda: not processes_with(token), timeout=5)


def test_stop_ends_every_process_of_the_job_daemons_included(box, tmp_path) -> None:
    token = uuid.uuid4().hex
    process = start(box, job_folder(tmp_path, box), token, 300)
    lines = process.lines()
    assert next(lines) == "daemon started"
    wait_for(lambda: processes_with(token), timeout=10)
    began = time.monotonic()
    process.stop(grace=1)
    process.wait()
    list(lines)
    assert time.monotonic() - began < 10
    wait_for(lambda: not processes_with(token), timeout=5)


def test_no_process_of_a_job_survives_kill_9_of_the_executor(box, tmp_path) -> None:
    token = uuid.uuid4().hex
    folder = job_folder(tmp_path, box)
    # A stand-in executor: starts the job as the executor does, says so, then waits to be killed.
    executor = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from pathlib import Path
        from mlops.local.processes import JobProcess
        from mlops.sandbox import Sandbox
        from mlops.sandbox_network import UserNetwork
        box = Sandbox(**{box.__dict__!r}) if {box.isolating!r} else Sandbox(None)
        process = JobProcess(box, [sys.executable, "daemon.py", {token!r}, "300"], cwd=Path({str(folder)!r}),
                             env={ENV!r}, marker={folder.name!r}, max_line_bytes={LINE_BYTES},
                             writable=[Path({str(folder)!r})])
        print(next(process.lines()), flush=True)
        time.sleep(300)
    """).replace("PosixPath", "Path")
    stand_in = subprocess.Popen([sys.executable, "-c", "from pathlib import Path\n" + executor],
                                stdout=subprocess.PIPE, text=True)
    try:
        assert stand_in.stdout.readline().strip() == "daemon started"
        wait_for(lambda: len(processes_with(token)) == 1, timeout=10)
        # The job's way out (slirp4netns, where its network is on) must not outlive it either.
        helpers = [child for child in psutil.Process(stand_in.pid).children() if child.name() == "slirp4netns"]
        assert len(helpers) == (1 if box.network else 0)
        stand_in.send_signal(signal.SIGKILL)
        stand_in.wait()
        wait_for(lambda: not any(helper.is_running() and helper.status() != psutil.STATUS_ZOMBIE
                                 for helper in helpers), timeout=5)
        if not box.isolating:
            # Bare, nothing ties the daemon to the dead executor: the restart's recovery sweeps it.
            assert processes_with(token)
            assert sweep_orphans(folder.name) >= 1
        wait_for(lambda: not processes_with(token), timeout=5)
    finally:
        stand_in.kill()
        for leftover in processes_with(token):
            leftover.kill()


def test_stop_gives_the_job_sigterm_and_the_grace_period_before_killing(box, tmp_path) -> None:
    folder = job_folder(tmp_path, box)
    (folder / "term.py").write_text(textwrap.dedent("""
        import os, signal, sys, time
        def save_and_leave(*_):
            os.write(1, b"saving on SIGTERM\\n")
            time.sleep(0.5)
            os.write(1, b"saved\\n")
            sys.exit(0)
        signal.signal(signal.SIGTERM, save_and_leave)
        print("ready", flush=True)
        time.sleep(300)
    """))
    process = JobProcess(box, [sys.executable, "term.py"], cwd=folder, env=ENV, marker=folder.name,
                         max_line_bytes=LINE_BYTES, writable=[folder])
    lines = process.lines()
    assert next(lines) == "ready"
    process.stop(grace=10)
    assert list(lines) == ["saving on SIGTERM", "saved"]
    assert process.wait() == 0
