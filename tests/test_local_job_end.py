"""How a local job ends when its log and then the store fail: the first failure is its reason, the
job's end waits for the store, and nothing of the job stays in the backend once its run is over."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

import app as app_module
from conftest import LiveServer, pipeline_body, wait_final, wait_for, write_pipeline
from db import JobStatus, JobStore, StoreUnavailable

# Tells the test when it started, then waits for the test's word before printing a line.
HANDSHAKE = """\
import os, pathlib, time
out = pathlib.Path(os.environ["SM_OUTPUT_DATA_DIR"])
(out / "started").write_text("")
while not (out / "go").exists():
    time.sleep(0.02)
print("a line for a log that cannot be written", flush=True)
"""


class StoreRefusingTheJobsEnd(JobStore):
    """The real store on its real file, except that it refuses a job's artifacts and, while told to, its end.

    A fake at the store's edge only: a full or read-only disk makes the real store raise
    StoreUnavailable at any write (db.JobStore._write; tests/test_hostile_jobs.py fills a real disk and
    makes the database file immutable), but not at a moment a test can choose.
    """

    refusing_artifacts = True
    refusing_ends = False

    def _refuse(self) -> None:
        raise StoreUnavailable(f"job database {self.path} cannot be written: database or disk is full")

    def update(self, job_id: str, *, message: str | None = None, **fields: Any) -> None:
        if self.refusing_artifacts and "artifacts" in fields:
            self._refuse()
        super().update(job_id, message=message, **fields)

    def transition(self, job_id: str, to: JobStatus, **changes: Any) -> bool:
        if self.refusing_ends and to.is_final:
            self._refuse()
        return super().transition(job_id, to, **changes)


@pytest.fixture
def server(live_server, monkeypatch) -> LiveServer:
    monkeypatch.setattr(app_module, "JobStore", StoreRefusingTheJobsEnd)
    return live_server(workers="1")


def submit(server: LiveServer, script: str) -> str:
    folder = write_pipeline(server.storage_root, "ending", script)
    status, body = server.request("POST", "/execute", pipeline_body(folder, "python pipe1.py"))
    assert status == 201, body
    return body["task_id"]


def held_for(server: LiveServer, job_id: str) -> list[str]:
    """Name the backend's per-job tables that still hold the job."""
    backend = server.executor.backend.jobs
    return [name for name, table in vars(backend).items() if isinstance(table, dict) and job_id in table]


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
    assert f"; then: job database {store.path} cannot be written" in reason
    assert held_for(server, job_id) == []


def test_a_stopped_job_whose_artifacts_the_store_refuses_leaves_nothing_in_the_backend(server):
    job_id = submit(server, "import time\nprint('working', flush=True)\ntime.sleep(60)\n")
    log = server.executor.config.data_dir / "logs" / "jobs" / f"{job_id}.log"
    wait_for(lambda: log.is_file() and "working" in log.read_text(), timeout=60)
    assert server.request("GET", f"/execute/{job_id}/stop")[1] == {"Task cancelled": True}
    # The stop was answered "cancelled": the store keeps that promise whatever failed after it.
    assert wait_final(server, job_id, timeout=30)["task_status"] == "CANCELLED"
    assert held_for(server, job_id) == []
