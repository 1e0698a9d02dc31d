"""The store under hostile load and faults: bounded metric history, a real write probe, connections that
recover, a moved data folder, and a stop answered "cancelled" kept as a promise."""
from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

import db
from db import SQLiteStore, StoreUnavailable
from job import JobStatus


def new_job(store: SQLiteStore, job_id: str = "job-1") -> None:
    store.create_job(job_id, kind="pipeline", backend="local", request={}, secrets=None,
                     log_path=str(store.data_dir / "logs" / "jobs" / f"{job_id}.log"),
                     output_dir=str(store.data_dir / "jobs" / job_id))


def test_job_paths_are_stored_relative_to_the_data_folder(tmp_path: Path):
    store = SQLiteStore(tmp_path / "data" / "executor.sqlite3")
    new_job(store)
    raw = sqlite3.connect(store.path).execute("SELECT log_path, output_dir FROM jobs").fetchone()
    assert raw == ("logs/jobs/job-1.log", "jobs/job-1")
    job = store.get("job-1")
    assert job.log_path == str(tmp_path / "data" / "logs" / "jobs" / "job-1.log")
    store.close()


def test_a_database_of_absolute_paths_moved_elsewhere_finds_its_jobs_in_the_new_place(tmp_path: Path):
    old = tmp_path / "old" / "data"
    old.mkdir(parents=True)
    # A database as the first schema wrote it: absolute paths into the old folder.
    conn = sqlite3.connect(old / "executor.sqlite3")
    conn.executescript(f"{SQLiteStore.MIGRATIONS[1]}; PRAGMA user_version=1;")
    conn.execute("INSERT INTO jobs (id, kind, backend, status, request, submitted, updated, log_path, output_dir)"
                 " VALUES ('j1', 'pipeline', 'local', 'COMPLETED', '{}', 1, 1, ?, ?)",
                 (str(old / "jobs" / "j1" / "job.log"), str(old / "jobs" / "j1")))
    conn.commit()
    conn.close()
    new = tmp_path / "new" / "data"
    shutil.copytree(old, new)
    shutil.rmtree(tmp_path / "old")
    store = SQLiteStore(new / "executor.sqlite3")
    job = store.get("j1")
    assert (job.log_path, job.output_dir) == (str(new / "jobs" / "j1" / "job.log"), str(new / "jobs" / "j1"))
    store.close()


def test_metric_history_is_bounded_and_keeps_the_latest_point(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(db, "MAX_METRIC_ROWS_PER_JOB", 200)
    store = SQLiteStore(tmp_path / "executor.sqlite3")
    new_job(store)
    for step in range(1, 2001):
        store.add_metrics("job-1", [("loss", 1.0 / step, step)])
    history = store.metric_history("job-1")
    assert len(history) <= 200
    assert history[0]["step"] == 1 and history[-1]["step"] == 2000
    assert store.latest_metrics("job-1") == {"loss": 1.0 / 2000}
    store.close()


def test_metric_names_per_job_are_bounded(tmp_path: Path):
    store = SQLiteStore(tmp_path / "executor.sqlite3")
    new_job(store)
    store.add_metrics("job-1", [(f"m{number}", 1.0, 1) for number in range(5 * db.MAX_METRIC_NAMES_PER_JOB)])
    assert len(store.latest_metrics("job-1")) == db.MAX_METRIC_NAMES_PER_JOB
    store.close()


def test_a_stop_answered_true_ends_cancelled_even_when_the_work_completed_first(tmp_path: Path):
    store = SQLiteStore(tmp_path / "executor.sqlite3")
    new_job(store)
    store.claim_next()
    assert store.request_cancel("job-1") is JobStatus.RUNNING
    assert store.transition("job-1", JobStatus.COMPLETED, expected=JobStatus.RUNNING)
    assert store.get("job-1").status is JobStatus.CANCELLED
    store.close()


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 2 MiB tmpfs: the store's disk, made full and read-only at will (needs mount, i.e. root)."""
    import subprocess

    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"mount refused here ({mounted.stderr.decode().strip()}): no small disk to fill")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def test_a_read_only_database_fails_the_probe_and_the_store_writes_again_once_it_is_writable(tmp_path: Path):
    import subprocess

    store = SQLiteStore(tmp_path / "executor.sqlite3")
    new_job(store)
    store.close()
    # chattr +i refuses writes even to root, where chmod would not.
    if subprocess.run(["chattr", "+i", str(store.path)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is refused on this file system: no way to make the database read-only")
    try:
        # The first use opens the file read-only, as SQLite does silently, and keeps that connection.
        assert store.get("job-1") is not None
        with pytest.raises(StoreUnavailable):
            store.check_writable()
        with pytest.raises(StoreUnavailable):
            store.transition("job-1", JobStatus.CANCELLED)
    finally:
        subprocess.run(["chattr", "-i", str(store.path)], check=True)
    store.check_writable()
    assert store.transition("job-1", JobStatus.CANCELLED)
    store.close()


def test_the_write_probe_fails_on_a_full_disk_and_recovers_after(small_disk: Path):
    store = SQLiteStore(small_disk / "executor.sqlite3")
    new_job(store)
    filler = small_disk / "filler"
    with open(filler, "wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError:
            pass
    try:
        with pytest.raises(StoreUnavailable):
            for _ in range(50):  # free pages in the WAL absorb the first few writes
                store.add_metrics("job-1", [("loss", 0.5, 1)] * 50)
                store.check_writable()
    finally:
        filler.unlink()
    store.check_writable()
    store.close()
