"""Hostile jobs, run as real processes against a real server: whatever a job does to the files the
executor reads, to its output or to its outputs' sizes, the executor answers quickly, leaks nothing,
keeps its own files intact and its workers alive."""
from __future__ import annotations

import json
import os
import resource
import shutil
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import FINAL_STATUSES, http_request, pipeline_body, wait_final, wait_for, write_pipeline

pytestmark = pytest.mark.skipif(os.name == "nt", reason="links and FIFOs as a POSIX job makes them")

# The job finds the executor's files from its working folder (<data>/jobs/<id>/code), as a hostile
# script would; where a sandbox hides them the attempt fails, and the executor must be fine either way.
REPLACE_LOG = """\
import os, pathlib, sys, time
code = pathlib.Path.cwd()
job, data = code.parent.name, code.parents[2]
for log in (data / "logs" / "jobs" / f"{{job}}.log", code.parent / "job.log"):
    try:
        if log.is_symlink() or log.exists():
            log.unlink()
        {action}
        print("replaced", log, flush=True)
    except OSError as exc:
        print("could not replace", log, exc, flush=True)
time.sleep(float(sys.argv[1]))
print("still here", flush=True)
"""


def submit(server, folder: str, command: str = "python pipe1.py", **changes) -> str:
    status, body = server.request("POST", "/execute", pipeline_body(folder, command, **changes))
    assert status == 201, body
    return body["task_id"]


def get_log_quickly(server, job_id: str) -> str:
    status, body = http_request(server.url, "GET", f"/execute/{job_id}/getLog", timeout=5)
    assert status == 200, body
    return body["logs"]["content"]


def assert_service_healthy(server) -> None:
    assert http_request(server.url, "GET", "/health", timeout=5)[0] == 200
    folder = write_pipeline(server.storage_root, "after", "print('fine')\n")
    assert wait_final(server, submit(server, folder))["task_status"] == "COMPLETED"


@pytest.mark.parametrize("action", [
    "os.mkfifo(log)",
    "os.symlink('/dev/zero', log)",
    "os.symlink(data / 'secret.key', log)",
])
def test_a_job_replacing_its_log_never_blocks_getlog_nor_leaks_the_key(live_server, data_dir, action):
    server = live_server()
    key_before = (data_dir / "secret.key").read_bytes()
    folder = write_pipeline(server.storage_root, "swap", REPLACE_LOG.format(action=action))
    job_id = submit(server, folder, "python pipe1.py 1.5")
    wait_for(lambda: server.request("GET", f"/execute/{job_id}/getStatus")[1]["task_status"] == "RUNNING")
    time.sleep(0.7)
    for _ in range(3):
        content = get_log_quickly(server, job_id)
        assert key_before.decode().strip() not in content
    final = wait_final(server, job_id, timeout=30)
    log = data_dir / "logs" / "jobs" / f"{job_id}.log"
    if log.is_symlink() or not log.is_file():  # swapped: no sandbox hid it from the job
        assert final["task_status"] == "ERROR" and "the job log cannot be written" in final["failure_reason"]
    else:
        assert final["task_status"] == "COMPLETED"
    assert key_before.decode().strip() not in get_log_quickly(server, job_id)
    assert (data_dir / "secret.key").read_bytes() == key_before
    assert_service_healthy(server)


def test_artifacts_linking_to_system_files_and_the_database_are_not_served(live_server, data_dir):
    server = live_server()
    script = ("import os, pathlib\nout = pathlib.Path(os.environ['SM_OUTPUT_DATA_DIR'])\n"
              "os.symlink('/etc/passwd', out / 'passwd.txt')\n"
              "os.symlink(pathlib.Path.cwd().parents[2] / 'executor.sqlite3', out / 'db.txt')\n"
              "os.symlink('/etc', out / 'etc')\n"
              "(out / 'real.txt').write_text('mine')\n")
    job_id = submit(server, write_pipeline(server.storage_root, "links", script))
    assert wait_final(server, job_id)["task_status"] == "COMPLETED"
    status, artifacts = server.request("GET", f"/execute/{job_id}/getOutputArtifacts")
    text = json.dumps(artifacts)
    assert status == 200 and artifacts["real"]["content"] == "mine"
    assert "root:" not in text and "SQLite" not in text and "passwd" not in artifacts


def test_a_huge_line_without_a_newline_is_truncated_with_a_note_in_bounded_memory(live_server):
    server = live_server(max_log_line_bytes="65536")
    script = ("import sys\nchunk = 'x' * (1 << 20)\nfor _ in range(50):\n    sys.stdout.write(chunk)\n"
              "sys.stdout.write('\\nafter the long line\\n')\n")
    job_id = submit(server, write_pipeline(server.storage_root, "longline", script))
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert wait_final(server, job_id, timeout=120)["task_status"] == "COMPLETED"
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
    log = get_log_quickly(server, job_id)
    assert "after the long line" in log
    assert "truncated" in log and len(log) < 200_000
    assert grown_mib < 25, f"the executor grew by {grown_mib:.0f} MiB reading a 50 MiB line"


def test_100000_metric_lines_leave_a_bounded_history_and_a_small_status(live_server, data_dir):
    server = live_server()
    script = ("import sys\nfor i in range(1, 100001):\n"
              "    sys.stdout.write(f'epoch={i}/100000 loss={1 / i:.6f} m{i % 1000}=1.0\\n')\n")
    job_id = submit(server, write_pipeline(server.storage_root, "metrics", script))
    assert wait_final(server, job_id, timeout=300)["task_status"] == "COMPLETED"
    status, body = server.request("GET", f"/status/{job_id}")
    assert status == 200 and len(json.dumps(body)) < 20_000
    assert body["metrics"]["loss"] == pytest.approx(1 / 100000, rel=1e-3)
    conn = sqlite3.connect(data_dir / "executor.sqlite3")
    rows = conn.execute("SELECT COUNT(*) FROM job_metrics WHERE job_id = ?", (job_id,)).fetchone()[0]
    conn.close()
    assert rows <= 10_000


def test_150_one_mib_outputs_make_a_bounded_artifacts_answer(live_server):
    server = live_server()
    script = ("import os\nout = os.environ['SM_OUTPUT_DATA_DIR']\nfor i in range(150):\n"
              "    open(os.path.join(out, f'part{i:03}.txt'), 'w').write('y' * (1 << 20))\n"
              "open(os.path.join(out, 'summary.txt'), 'w').write('small')\n")
    job_id = submit(server, write_pipeline(server.storage_root, "bigout", script))
    assert wait_final(server, job_id, timeout=120)["task_status"] == "COMPLETED"
    status, artifacts = server.request("GET", f"/execute/{job_id}/getOutputArtifacts")
    assert status == 200 and len(json.dumps(artifacts)) < 2 << 20
    assert artifacts["summary"]["content"] == "small"
    assert artifacts["part000"]["content"] is None and artifacts["part000"]["size"] == 1 << 20


def test_deep_json_to_infer_is_a_400_and_too_many_images_a_413(live_server):
    server = live_server()
    deep = ("[" * 100_000 + "]" * 100_000).encode()
    status, body = server.request("POST", "/api/service/v1/endpoints/e/infer", raw=deep)
    assert status == 400 and "nested" in body["error"]
    files = [("file", f"i{number}.png", b"\x89PNG", "image/png") for number in range(257)]
    status, body = server.upload("/api/service/v1/endpoints/e/infer", {}, files)
    assert status == 413, body


def test_a_moved_data_folder_serves_old_logs_and_artifacts_and_writes_only_inside(service, tmp_path):
    old = tmp_path / "old" / "data"
    script = ("import os\nprint('hello from the old place', flush=True)\n"
              "open(os.path.join(os.environ['SM_OUTPUT_DATA_DIR'], 'result.txt'), 'w').write('kept')\n")
    folder = write_pipeline(old / "storage", "moved", script)
    proc = service(old)
    status, accepted = proc.request("POST", "/execute", pipeline_body(folder, "python pipe1.py"))
    assert status == 201
    wait_for(lambda: proc.request("GET", f"/execute/{accepted['task_id']}/getStatus")[1]["task_status"]
             == "COMPLETED", timeout=60)
    assert proc.terminate() == 0
    new = tmp_path / "new" / "data"
    shutil.move(str(old.parent), str(new.parent))
    proc = service(new)
    _, log = proc.request("GET", f"/execute/{accepted['task_id']}/getLog")
    _, artifacts = proc.request("GET", f"/execute/{accepted['task_id']}/getOutputArtifacts")
    _, status_body = proc.request("GET", f"/execute/{accepted['task_id']}/getStatus")
    assert "hello from the old place" in log["logs"]["content"]
    assert artifacts["result"]["content"] == "kept"
    assert status_body["log_path"].startswith(str(new))
    assert proc.terminate() == 0
    assert not old.exists()


@pytest.fixture
def small_disk(tmp_path: Path):
    """An 8 MiB tmpfs for a data folder (needs mount, i.e. root; skipped, saying so, where refused)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"mount refused here ({mounted.stderr.decode().strip()}): no small disk to fill")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_a_full_disk_fails_the_job_and_the_next_job_runs_once_space_is_back(live_server, small_disk, caplog):
    server = live_server(data_dir=str(small_disk / "data"))
    script = ("import os\nout = os.environ['SM_OUTPUT_DATA_DIR']\n"
              "try:\n    open(os.path.join(out, 'fill'), 'wb').write(b'0' * (64 << 20))\n"
              "except OSError as exc:\n    print('disk full:', exc, flush=True)\n"
              "for i in range(2000):\n    print('x' * 1000, flush=True)\n")
    job_id = submit(server, write_pipeline(server.storage_root, "fill", script))
    # The space comes back only once the job's end is decided on the full disk: either it ended, or the
    # store refused even its end and its worker holds that end until the store takes writes again.
    # Freed sooner, the job could still write its whole log into the space and rightly end COMPLETED.
    def logged(text: str) -> bool:
        return any(job_id in record.getMessage() and text in record.getMessage() for record in caplog.records)

    def end_decided() -> bool:
        status = server.request("GET", f"/execute/{job_id}/getStatus")[1]["task_status"]
        return logged("its end cannot be stored yet") or status in FINAL_STATUSES

    wait_for(end_decided, timeout=60)
    # Its log had no room for its output: the executor saw that refusal, whether or not the store failed too.
    assert logged("the job log cannot be written: [Errno 28] No space left on device")
    status, ready = http_request(server.url, "GET", "/ready", timeout=10)
    assert status == 200 or not ready["checks"]["database"]["ok"]
    (small_disk / "data" / "jobs" / job_id / "output" / "data" / "fill").unlink()
    final = wait_final(server, job_id, timeout=60)
    assert final["task_status"] == "ERROR"
    # The log's refusal came first and decides the reason, whatever the store refused after it.
    assert final["failure_reason"].startswith("the job log cannot be written: [Errno 28] No space left on device")
    wait_for(lambda: http_request(server.url, "GET", "/ready", timeout=10)[0] == 200, timeout=30)
    assert_service_healthy(server)


def test_a_read_only_database_mid_job_ends_it_error_once_writable_and_workers_live_on(live_server, data_dir,
                                                                                      caplog):
    server = live_server()
    database = data_dir / "executor.sqlite3"
    script = "import time\nprint('working', flush=True)\ntime.sleep(3)\nprint('done', flush=True)\n"
    job_id = submit(server, write_pipeline(server.storage_root, "ro", script))
    # Its script runs (RUNNING alone comes before staging and the sandbox's start, seconds on busy cores).
    job_log = data_dir / "logs" / "jobs" / f"{job_id}.log"
    wait_for(lambda: job_log.is_file() and "working" in job_log.read_text(), timeout=60)
    if subprocess.run(["chattr", "+i", str(database)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is refused on this file system: no way to make the database read-only")
    server.executor.store.close()  # every thread reopens its connection, now on a read-only file
    try:
        # The job ends while its final status cannot be written: the worker logs the refused write.
        wait_for(lambda: any("cannot be written" in record.getMessage() for record in caplog.records), timeout=60)
        status, ready = http_request(server.url, "GET", "/ready", timeout=15)
        assert status == 503 and not ready["checks"]["database"]["ok"]
    finally:
        subprocess.run(["chattr", "-i", str(database)], check=True)
    final = wait_final(server, job_id, timeout=30)
    assert final["task_status"] == "ERROR" and "cannot be written" in final["failure_reason"]
    wait_for(lambda: http_request(server.url, "GET", "/ready", timeout=10)[0] == 200, timeout=30)
    assert_service_healthy(server)


def test_a_worker_that_dies_is_replaced_and_ready_names_dead_workers(live_server, monkeypatch):
    server = live_server(workers="1")
    queue = server.executor.queue
    original = queue.run_job
    calls = []

    def dies_once(job):
        calls.append(job.id)
        if len(calls) == 1:
            raise SystemExit("a bug that escapes every handler")
        return original(job)

    monkeypatch.setattr(queue, "run_job", dies_once)
    folder = write_pipeline(server.storage_root, "die", "print('ran')\n")
    first = submit(server, folder)
    wait_for(lambda: len(calls) == 1)
    final = wait_final(server, first, timeout=30)
    assert final["task_status"] == "ERROR"
    assert wait_final(server, submit(server, folder))["task_status"] == "COMPLETED"
    assert http_request(server.url, "GET", "/ready", timeout=10)[0] == 200

    real_start = threading.Thread.start
    # Undone inside the test: the fixtures' teardown (server, queue) must not run with threads refused.
    with monkeypatch.context() as refusing:
        refusing.setattr(threading.Thread, "start", lambda self: (_ for _ in ()).throw(
            RuntimeError("can't start new thread")) if self.name.startswith("worker") else real_start(self))
        calls.clear()
        submit(server, folder)
        status, ready = wait_for(lambda: (answer := http_request(server.url, "GET", "/ready", timeout=10))[0] == 503
                                 and answer, timeout=30)
    assert "worker" in ready["checks"]["workers"]["reason"]


def test_a_retried_job_starts_afresh_and_never_writes_through_links_its_last_attempt_left(service, tmp_path):
    data = tmp_path / "data"
    # First attempt: turn the files the executor writes at the next start into links to its key file,
    # then wait for the kill. Second attempt (a marker in checkpoints, which carry over): finish.
    script = ("import os, pathlib, sys, time\ncode = pathlib.Path.cwd(); root = code.parent; data = code.parents[2]\n"
              "marker = root / 'checkpoints' / 'attempted'\n"
              "if marker.exists():\n    print('second attempt', flush=True)\n    sys.exit(0)\n"
              "marker.write_text('1')\n"
              "for target in (code / 'pipe1.py', root / 'input' / 'config' / 'hyperparameters.json'):\n"
              "    target.unlink()\n    target.symlink_to(data / 'secret.key')\n"
              "print('links left', flush=True)\ntime.sleep(60)\n")
    folder = write_pipeline(data / "storage", "retried", script)
    proc = service(data)
    key = (data / "secret.key").read_bytes()
    status, accepted = proc.request("POST", "/execute",
                                    pipeline_body(folder, "python pipe1.py", configs={"retry_on_restart": True}))
    assert status == 201
    job_log = data / "logs" / "jobs" / f"{accepted['task_id']}.log"
    wait_for(lambda: job_log.is_file() and "links left" in job_log.read_text(), timeout=60)
    proc.kill()
    proc = service(data)
    final = wait_for(lambda: (body := proc.request("GET", f"/execute/{accepted['task_id']}/getStatus")[1])
                     ["task_status"] in ("COMPLETED", "ERROR", "CANCELLED") and body, timeout=60)
    assert final["task_status"] == "COMPLETED", final
    assert (data / "secret.key").read_bytes() == key
    assert "second attempt" in proc.request("GET", f"/execute/{accepted['task_id']}/getLog")[1]["logs"]["content"]
