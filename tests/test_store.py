"""The job store: its state machine, atomic claims, versioned schema and secrets column."""
from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import db
from db import SCHEMA_VERSION, IllegalTransition, SQLiteStore, StoreError
from job import JobStatus

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def store(tmp_path):
    store = SQLiteStore(tmp_path / "jobs.sqlite3")
    yield store
    store.close()


def add(store: SQLiteStore, job_id: str, secrets: bytes | None = None):
    return store.create_job(job_id, kind="pipeline", backend="local", request={"name": job_id}, secrets=secrets,
                            log_path=f"/logs/{job_id}", output_dir=f"/jobs/{job_id}")


def test_new_job_waits_and_records_its_submission(store):
    job = add(store, "a")
    assert job.status is JobStatus.WAITING and job.started is None and job.finished is None
    assert [event["status"] for event in store.events("a")] == ["WAITING"]


def test_claim_moves_the_oldest_waiting_job_to_running(store):
    add(store, "first")
    add(store, "second")
    claimed = store.claim_next()
    assert claimed.id == "first" and claimed.status is JobStatus.RUNNING and claimed.started is not None
    assert claimed.attempts == 1


def test_a_job_is_claimed_once_however_many_threads_race(store):
    for number in range(40):
        add(store, f"job-{number:02d}")
    claimed: list[str] = []
    lock = threading.Lock()

    def worker():
        while (job := store.claim_next()) is not None:
            with lock:
                claimed.append(job.id)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claimed) == [f"job-{number:02d}" for number in range(40)]


def test_final_statuses_cannot_be_left(store):
    add(store, "a")
    store.claim_next()
    assert store.transition("a", JobStatus.COMPLETED)
    with pytest.raises(IllegalTransition):
        store.transition("a", JobStatus.RUNNING)
    with pytest.raises(IllegalTransition):
        store.transition("a", JobStatus.ERROR)


def test_waiting_cannot_jump_to_completed(store):
    add(store, "a")
    with pytest.raises(IllegalTransition):
        store.transition("a", JobStatus.COMPLETED)


def test_only_one_of_two_racing_transitions_wins(store):
    add(store, "a")
    store.claim_next()
    results = []
    barrier = threading.Barrier(2)

    def finish(status):
        barrier.wait()
        results.append(store.transition("a", status, expected=JobStatus.RUNNING))

    threads = [threading.Thread(target=finish, args=(status,)) for status in (JobStatus.COMPLETED, JobStatus.ERROR)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False, True]
    assert store.get("a").status in (JobStatus.COMPLETED, JobStatus.ERROR)


def test_final_status_sets_finished_and_reason_and_drops_secrets(store):
    add(store, "a", secrets=b"sealed")
    store.claim_next()
    store.transition("a", JobStatus.ERROR, failure_reason="script exited with code 2")
    job = store.get("a")
    assert job.finished is not None and job.failure_reason == "script exited with code 2"
    assert store.secrets("a") is None
    assert [event["status"] for event in store.events("a")] == ["WAITING", "RUNNING", "ERROR"]


def test_cancel_of_a_waiting_job_ends_it_and_of_a_running_one_flags_it(store):
    add(store, "waiting")
    add(store, "running")
    store.transition("running", JobStatus.RUNNING)
    assert store.request_cancel("waiting") is JobStatus.WAITING
    assert store.get("waiting").status is JobStatus.CANCELLED
    assert store.request_cancel("running") is JobStatus.RUNNING
    assert store.get("running").cancel_requested
    assert store.request_cancel("waiting") is JobStatus.CANCELLED
    assert store.request_cancel("missing") is None


def test_metrics_keep_history_and_latest_values(store):
    add(store, "a")
    store.add_metrics("a", [("loss", 0.9, 1), ("acc", 0.5, 1)])
    store.add_metrics("a", [("loss", 0.4, 2), ("acc", None, 2)])
    assert store.latest_metrics("a") == {"acc": None, "loss": 0.4}
    assert [row["value"] for row in store.metric_history("a") if row["name"] == "loss"] == [0.9, 0.4]


def test_schema_version_is_recorded_and_a_newer_database_is_refused(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    SQLiteStore(path).close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        SQLiteStore(path)


def test_the_executor_refuses_to_start_on_a_newer_schema(tmp_path):
    data_dir = tmp_path / "data"
    SQLiteStore(data_dir / "executor.sqlite3").close()
    with sqlite3.connect(data_dir / "executor.sqlite3") as conn:
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    started = subprocess.run([sys.executable, "app.py", "--port", "0", "--data-dir", str(data_dir)],
                             cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert started.returncode == 2
    assert f"schema version {SCHEMA_VERSION + 1}, newer than this executor's {SCHEMA_VERSION}" in started.stderr


def test_a_file_that_is_not_a_database_is_a_store_error_naming_it(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    path.write_bytes(b"not a database, " * 256)
    with pytest.raises(StoreError, match=f"job database {path} cannot be opened: file is not a database"):
        SQLiteStore(path)


def test_an_existing_database_keeps_its_jobs_when_reopened(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    first = SQLiteStore(path)
    add(first, "kept")
    first.close()
    second = SQLiteStore(path)
    assert second.get("kept").request == {"name": "kept"}
    second.close()


def test_records_keep_their_creation_time_when_updated(store):
    created = store.put_record("m1", type="model", name="m1", status="Creating", payload={"a": 1})
    updated = store.put_record("m1", type="model", name="m1", status="InService", payload={"a": 2})
    assert updated.created == created.created and updated.status == "InService"
    assert [record.id for record in store.list_records("model")] == ["m1"]
    assert store.delete_record("m1") and not store.delete_record("m1")


def test_the_stores_own_thread_checkpoints_the_wal_so_no_writer_does_and_close_stops_it(tmp_path, monkeypatch):
    monkeypatch.setattr(db, "COMMITS_PER_CHECKPOINT", 10)
    # SQLite's backstop out of reach: only the store's thread can keep the WAL short here.
    monkeypatch.setattr(db, "BACKSTOP_CHECKPOINT_PAGES", 1_000_000)
    store = SQLiteStore(tmp_path / "jobs.sqlite3")
    wal = tmp_path / "jobs.sqlite3-wal"
    request = {"configs": "x" * 4000}
    for number in range(1500):
        store.create_job(f"job-{number}", kind="pipeline", backend="local", request=request, secrets=None,
                         log_path="logs/a.log", output_dir="jobs/a")
    written = 1500 * len(request["configs"])
    # Unchecked, the WAL holds every page written: over 50 MB here (a run without the thread), more
    # than the 6 MB of request text alone. Restarted after each checkpoint, it stays a few MB.
    assert wal.stat().st_size < written, wal.stat().st_size
    assert any(thread.name == "checkpoint" for thread in threading.enumerate())
    store.close()
    assert not any(thread.name == "checkpoint" and thread.is_alive() for thread in threading.enumerate())
    assert len(SQLiteStore(tmp_path / "jobs.sqlite3").list_jobs(limit=2000)) == 1500


def test_a_checkpoint_thread_that_cannot_start_fails_no_write(tmp_path, monkeypatch, caplog):
    # A process at its thread limit: Thread.start raises RuntimeError, after the commit that asked.
    monkeypatch.setattr(db, "COMMITS_PER_CHECKPOINT", 5)
    started = threading.Thread.start

    def refuse_checkpoint(thread):
        if thread.name == "checkpoint":
            raise RuntimeError("can't start new thread")
        started(thread)

    monkeypatch.setattr(threading.Thread, "start", refuse_checkpoint)
    store = SQLiteStore(tmp_path / "jobs.sqlite3")
    for number in range(12):
        store.create_job(f"job-{number}", kind="pipeline", backend="local", request={}, secrets=None,
                         log_path="logs/a.log", output_dir="jobs/a")
    assert len(store.list_jobs(limit=20)) == 12
    assert "no checkpoint thread" in caplog.text and "can't start new thread" in caplog.text
    monkeypatch.setattr(threading.Thread, "start", started)
    for number in range(12, 17):
        store.create_job(f"job-{number}", kind="pipeline", backend="local", request={}, secrets=None,
                         log_path="logs/a.log", output_dir="jobs/a")
    assert any(thread.name == "checkpoint" and thread.is_alive() for thread in threading.enumerate())
    store.close()
