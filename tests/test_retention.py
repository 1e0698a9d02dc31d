"""Retention: the files of jobs that ended long ago go; records, metrics, log tails and what active jobs need stay."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from db import SQLiteStore
from job import JobStatus
from mlops.aws_statuses import CREATING
from mlops.records import MODEL
from mlops.retention import (CLEANED_DETAIL, DAY_SECONDS, LOG_TAIL_KEPT_BYTES, FolderSize, RetentionSweeper,
                             clean_ended_jobs, folder_size, parse_age)

ROOT = Path(__file__).resolve().parents[1]
MONTH = 30 * DAY_SECONDS


@pytest.fixture
def store(data_dir):
    store = SQLiteStore(data_dir / "executor.sqlite3")
    yield store
    store.close()


def ended_job(store, data_dir: Path, status: JobStatus = JobStatus.COMPLETED, request: dict | None = None,
              log_bytes: int = 1000) -> Path:
    """Store a local training job that ran and ended now, with the folders a run leaves; return its folder."""
    job_id = str(uuid.uuid4())
    folder = data_dir / "jobs" / job_id
    for name in ("input/data/training", "code", "model", "output/data", "checkpoints"):
        (folder / name).mkdir(parents=True)
    (folder / "input" / "data" / "training" / "image.png").write_bytes(os.urandom(50_000))
    (folder / "model" / "model.pt").write_bytes(os.urandom(20_000))
    (folder / "checkpoints" / "checkpoint.pt").write_bytes(os.urandom(20_000))
    lines = b"".join(b"line %06d of the run\n" % number for number in range(log_bytes // 21 + 1))
    (folder / "job.log").write_bytes(lines + b"the last line says why\n")
    store.create_job(job_id, kind="training", backend="local", request=request or {"name": "old"}, secrets=None,
                     log_path=str(folder / "job.log"), output_dir=str(folder))
    if status is not JobStatus.WAITING:
        store.transition(job_id, JobStatus.RUNNING)
        if status is not JobStatus.RUNNING:
            store.transition(job_id, status)
            store.add_metrics(job_id, [("val_auc", 0.9, 1)])
    return folder


def a_month_later() -> float:
    return time.time() + MONTH + 60


def test_a_long_ended_job_loses_its_files_and_keeps_its_record_metrics_and_log_tail(store, data_dir):
    folder = ended_job(store, data_dir, log_bytes=200_000)
    job_id = folder.name
    cleaned = clean_ended_jobs(store, MONTH, clock=a_month_later)
    assert [item.job_id for item in cleaned] == [job_id] and cleaned[0].freed_bytes >= 90_000
    assert sorted(path.name for path in folder.iterdir()) == ["job.log"]
    log = (folder / "job.log").read_bytes()
    assert log.endswith(b"the last line says why\n") and len(log) <= LOG_TAIL_KEPT_BYTES + 100
    job = store.get(job_id)
    assert job.status is JobStatus.COMPLETED and store.latest_metrics(job_id) == {"val_auc": 0.9}
    assert job.details[CLEANED_DETAIL]["bytes"] == cleaned[0].freed_bytes
    # A second sweep finds nothing more to do.
    assert clean_ended_jobs(store, MONTH, clock=a_month_later) == []


def test_a_dry_run_lists_and_removes_nothing(store, data_dir):
    folder = ended_job(store, data_dir, status=JobStatus.ERROR)
    before = sorted(path.relative_to(folder) for path in folder.rglob("*"))
    cleaned = clean_ended_jobs(store, MONTH, dry_run=True, clock=a_month_later)
    assert [item.job_id for item in cleaned] == [folder.name]
    assert sorted(path.relative_to(folder) for path in folder.rglob("*")) == before
    assert CLEANED_DETAIL not in store.get(folder.name).details


def test_recent_running_and_needed_jobs_are_kept(store, data_dir):
    recent = ended_job(store, data_dir)
    running = ended_job(store, data_dir, status=JobStatus.RUNNING)
    rerun_source = ended_job(store, data_dir)
    ended_job(store, data_dir, status=JobStatus.WAITING, request={"name": "rerun", "rerun_of": rerun_source.name})
    copied_from = ended_job(store, data_dir)
    store.put_record(f"{MODEL}:m1", type=MODEL, name="m1", status=CREATING, payload={"training_job": copied_from.name})
    assert clean_ended_jobs(store, MONTH) == []
    cleaned = {item.job_id for item in clean_ended_jobs(store, MONTH, clock=a_month_later)}
    assert cleaned == {recent.name}
    for kept in (running, rerun_source, copied_from):
        assert (kept / "model" / "model.pt").is_file()


def test_a_snapshot_frees_nothing_of_the_dataset_it_links(store, data_dir, tmp_path):
    folder = ended_job(store, data_dir)
    dataset_file = tmp_path / "dataset.png"
    dataset_file.write_bytes(os.urandom(100_000))
    os.link(dataset_file, folder / "input" / "data" / "training" / "linked.png")
    cleaned = clean_ended_jobs(store, MONTH, clock=a_month_later)
    assert cleaned[0].freed_bytes < 100_000 + 50_000 + 40_000
    assert dataset_file.read_bytes() and os.stat(dataset_file).st_nlink == 1


def test_the_sweeper_cleans_at_start(store, data_dir):
    folder = ended_job(store, data_dir)
    with sqlite3.connect(data_dir / "executor.sqlite3") as conn:
        conn.execute("UPDATE jobs SET finished = ? WHERE id = ?", (time.time() - MONTH - 60, folder.name))
    sweeper = RetentionSweeper(store, retention_days=30, interval_s=3600)
    sweeper.start()
    try:
        deadline = time.monotonic() + 10
        while (folder / "model").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        sweeper.stop()
    assert not (folder / "model").exists()


@pytest.mark.parametrize("text, seconds", [("30d", MONTH), ("30", MONTH), ("12h", 43200), ("90m", 5400)])
def test_ages_read_as_days_hours_or_minutes(text, seconds):
    assert parse_age(text) == seconds


def run_clean(data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "app.py", "clean", "--data-dir", str(data_dir), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_the_clean_command_dry_runs_then_removes(store, data_dir):
    folder = ended_job(store, data_dir)
    with sqlite3.connect(data_dir / "executor.sqlite3") as conn:
        conn.execute("UPDATE jobs SET finished = ? WHERE id = ?", (time.time() - 40 * DAY_SECONDS, folder.name))
    dry = run_clean(data_dir, "--older-than", "30d", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert folder.name in dry.stdout and "would remove the files of 1 ended job(s)" in dry.stdout
    assert (folder / "model" / "model.pt").is_file()
    done = run_clean(data_dir, "--older-than", "30d")
    assert done.returncode == 0 and "removed the files of 1 ended job(s)" in done.stdout
    assert not (folder / "model").exists()


@pytest.mark.parametrize("args, message", [((), "give --older-than AGE"), (("--older-than", "soon"), "not an age")])
def test_the_clean_command_refuses_without_a_clear_age(data_dir, args, message):
    process = run_clean(data_dir, *args)
    assert process.returncode == 2 and message in process.stderr


def test_the_data_folder_size_counts_hard_links_once_and_is_measured_at_most_once_a_minute(tmp_path):
    (tmp_path / "a.bin").write_bytes(os.urandom(40_960))
    os.link(tmp_path / "a.bin", tmp_path / "b.bin")
    now = [1000.0]
    size = FolderSize(tmp_path, max_age_s=60, clock=lambda: now[0])
    first = size.bytes()
    assert first == folder_size(tmp_path) and 40_960 <= first < 2 * 40_960
    (tmp_path / "c.bin").write_bytes(os.urandom(40_960))
    now[0] += 30
    assert size.bytes() == first
    now[0] += 31
    assert size.bytes() >= first + 40_960


def test_metrics_and_the_dashboard_show_the_data_folder_size(client, data_dir):
    (data_dir / "ballast.bin").write_bytes(os.urandom(1 << 20))
    scrape = client.get("/metrics").get_data(as_text=True)
    line = next(line for line in scrape.splitlines() if line.startswith("executor_data_folder_bytes "))
    assert float(line.split()[1]) >= 1 << 20
    assert client.get("/api/jobs").get_json()["data_folder_bytes"] >= 1 << 20
