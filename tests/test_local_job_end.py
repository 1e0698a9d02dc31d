"""How a local job ends when its log or its script fails and then the store fails: the first failure
is its reason, the store's refusal follows it, the job's end waits for the store, and nothing of the
job stays in the backend once its run is over."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import pytest

import app as app_module
from conftest import LiveServer, pipeline_body, wait_final, wait_for, write_pipeline
from db import SQLiteStore, StoreUnavailable
from job import JobStatus

# Tells the test when it started, then waits for the test's word before printing a line.
HANDSHAKE = """\
import os, pathlib, time
out = pathlib.Path(os.environ["SM_OUTPUT_DATA_DIR"])
(out / "started").write_text("")
while not (out / "go").exists():
    time.sleep(0.02)
print("a line for a log that cannot be written", flush=True)
"""


class StoreRefusingTheJobsEnd(SQLiteStore):
    """The real store on its real file, except that it refuses a job's artifacts and, while told to, its end.

    A fake at the store's edge only: a full or read-only disk makes the real store raise
    StoreUnavailable at any write (db.SQLiteStore._write; tests/test_hostile_jobs.py fills a real disk and
    makes the database file immutable), but not at a moment a test can choose.
    """

    refusing_artifacts = True
    refusing_ends = False
    #: Final transitions still to refuse, then taken: a store that is full for a moment.
    ends_left_to_refuse = 0

    def _refuse(self) -> None:
        raise StoreUnavailable(f"job database {self.path} cannot be written: database or disk is full")

    def update(self, job_id: str, *, message: str | None = None, **fields: Any) -> None:
        if self.refusing_artifacts and "artifacts" in fields:
            self._refuse()
        super().update(job_id, message=message, **fields)

    def transition(self, job_id: str, to: JobStatus, **changes: Any) -> bool:
        if to.is_final and (self.refusing_ends or self.ends_left_to_refuse):
            self.ends_left_to_refuse = max(0, self.ends_left_to_refuse - 1)
            self._refuse()
        return super().transition(job_id, to, **changes)


@pytest.fixture
def start_server(live_server, monkeypatch) -> Callable[..., LiveServer]:
    monkeypatch.setattr(app_module, "SQLiteStore", StoreRefusingTheJobsEnd)
    return lambda **settings: live_server(workers="1", **settings)


@pytest.fixture
def server(start_server) -> LiveServer:
    return start_server()


def refusal(store: SQLiteStore) -> str:
    """Return how a reason names the store's refusal of the job's artifacts."""
    return f"; then: recording the job's outputs failed: job database {store.path} cannot be written: " \
           "database or disk is full"


def submit(server: LiveServer, script: str) -> str:
    folder = write_pipeline(server.storage_root, "ending", script)
    status, body = server.request("POST", "/execute", pipeline_body(folder, "python pipe1.py"))
    assert status == 201, body
    return body["task_id"]


def held_for(server: LiveServer, job_id: str) -> list[str]:
    """Name the backend's per-job tables that still hold the job."""
    jobs = server.executor.platform.training
    return [name for name, table in vars(jobs).items() if isinstance(table, dict) and job_id in table]


@pytest.mark.skipif(os.name == "nt", reason="the log is replaced by a folder, as POSIX lets a test do")
def test_a_log_failure_then_a_refused_store_ends_the_job_with_the_log_failure_first(server, caplog):
    store = server.executor.store
    store.refusing_ends = True
    job_id = submit(server, HANDSHAKE)
    output = Path(server.executor.store.get(job_id).output_dir) / "output" / "data"
    wait_for(lambda: (output / "started").exists(), timeout=60)
    # A folder where the log was: every later append fails with a real OSError, as on a full disk.
    log = server.executor.config.data_dir / "logs" / "jobs" / f"{job_id}.log"
    log.unlink()
    log.mkdir()
    (output / "go").write_text("")
    wait_for(lambda: any(job_id in record.getMessage() and "its end cannot be stored yet" in record.getMessage()
                         for record in caplog.records), timeout=60)
    assert server.request("GET", f"/execute/{job_id}/getStatus")[1]["task_status"] == "RUNNING"

    store.refusing_artifacts = store.refusing_ends = False
    server.executor.queue.wake()
    final = wait_final(server, job_id, timeout=30)
    assert final["task_status"] == "ERROR"
    reason = final["failure_reason"]
    assert reason.startswith("the job log cannot be written: [Errno 21] Is a directory"), reason
    assert refusal(store) in reason
    assert held_for(server, job_id) == []


def test_a_stopped_job_whose_artifacts_the_store_refuses_leaves_nothing_in_the_backend(server):
    job_id = submit(server, "import time\nprint('working', flush=True)\ntime.sleep(60)\n")
    log = server.executor.config.data_dir / "logs" / "jobs" / f"{job_id}.log"
    wait_for(lambda: log.is_file() and "working" in log.read_text(), timeout=60)
    assert server.request("GET", f"/execute/{job_id}/stop")[1] == {"Task cancelled": True}
    # The stop was answered "cancelled": the store keeps that promise whatever failed after it.
    assert wait_final(server, job_id, timeout=30)["task_status"] == "CANCELLED"
    assert server.executor.store.events(job_id)[-1]["message"].startswith(
        "stopped at the user's request" + refusal(server.executor.store))
    assert held_for(server, job_id) == []


def test_a_failed_script_whose_artifacts_the_store_refuses_ends_with_its_exit_code_then_the_refusal(server):
    job_id = submit(server, "import sys\nprint('the cause of the failure', flush=True)\nsys.exit(3)\n")
    final = wait_final(server, job_id, timeout=30)
    assert final["task_status"] == "ERROR"
    assert final["failure_reason"] == ("the script failed with exit code 3; its last lines:\n"
                                       "the cause of the failure" + refusal(server.executor.store))
    assert held_for(server, job_id) == []


def test_a_job_over_its_runtime_whose_artifacts_the_store_refuses_ends_with_the_limit_then_the_refusal(
        start_server):
    server = start_server(max_runtime_seconds="1")
    job_id = submit(server, "import time\nprint('working', flush=True)\ntime.sleep(60)\n")
    final = wait_final(server, job_id, timeout=30)
    assert final["task_status"] == "ERROR"
    assert final["failure_reason"] == ("MaxRuntimeExceeded: the job ran longer than 1 s and was stopped"
                                       + refusal(server.executor.store))


def logged(caplog, job_id: str, words: str) -> bool:
    """True when the service log has a record about the job that says these words."""
    return any(job_id in record.getMessage() and words in record.getMessage() for record in caplog.records)


def test_a_failed_script_whose_end_the_store_refuses_once_ends_with_its_exit_code(server, caplog):
    store = server.executor.store
    store.refusing_artifacts = False
    store.ends_left_to_refuse = 1
    job_id = submit(server, "import sys\nprint('the cause of the failure', flush=True)\nsys.exit(3)\n")
    final = wait_final(server, job_id, timeout=30)
    assert store.ends_left_to_refuse == 0
    assert final["task_status"] == "ERROR"
    assert final["failure_reason"] == "the script failed with exit code 3; its last lines:\nthe cause of the failure"
    assert logged(caplog, job_id, "exit code 3")


def test_a_job_over_its_runtime_is_held_until_the_store_takes_its_end_and_then_ends_with_the_limit(
        start_server, caplog):
    server = start_server(max_runtime_seconds="1")
    store = server.executor.store
    store.refusing_artifacts = False
    store.refusing_ends = True
    job_id = submit(server, "import time\nprint('working', flush=True)\ntime.sleep(60)\n")
    wait_for(lambda: logged(caplog, job_id, "its end cannot be stored yet"), timeout=60)
    assert server.request("GET", f"/execute/{job_id}/getStatus")[1]["task_status"] == "RUNNING"
    assert logged(caplog, job_id, "MaxRuntimeExceeded")

    store.refusing_ends = False
    server.executor.queue.wake()
    final = wait_final(server, job_id, timeout=30)
    assert final["task_status"] == "ERROR"
    assert final["failure_reason"] == "MaxRuntimeExceeded: the job ran longer than 1 s and was stopped"
    assert held_for(server, job_id) == []


def test_a_stopped_job_whose_end_the_store_refuses_once_ends_cancelled_and_the_log_says_why(server, caplog):
    store = server.executor.store
    store.refusing_artifacts = False
    job_id = submit(server, "import time\nprint('working', flush=True)\ntime.sleep(60)\n")
    log = server.executor.config.data_dir / "logs" / "jobs" / f"{job_id}.log"
    wait_for(lambda: log.is_file() and "working" in log.read_text(), timeout=60)
    store.ends_left_to_refuse = 1
    assert server.request("GET", f"/execute/{job_id}/stop")[1] == {"Task cancelled": True}
    assert wait_final(server, job_id, timeout=30)["task_status"] == "CANCELLED"
    assert store.ends_left_to_refuse == 0
    assert logged(caplog, job_id, "stopped at the user's request")
