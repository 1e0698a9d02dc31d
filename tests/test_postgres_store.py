"""The executor on PostgreSQL: its choice by EXECUTOR_DATABASE_URL, its start-up refusals, and
`app.py migrate-store`, which moves an SQLite data folder into PostgreSQL.

Everything runs against a real throwaway cluster (the postgres_cluster fixture).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from conftest import ROOT, pipeline_body, wait_final, write_pipeline
from config import ConfigError, load_config
from db import SCHEMA_VERSION, StoreError
from db_postgres import PostgresStore, redacted
from job import JobStatus

SCRIPT = "import sys\nprint('working', flush=True)\nprint('epoch=1/1 train_loss=0.250', flush=True)\n"


@pytest.fixture
def database(postgres_cluster) -> str:
    return postgres_cluster.create_database()


def run_app(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "app.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_the_database_url_selects_postgresql_and_jobs_run_from_it(live_server, database, postgres_cluster):
    server = live_server(database_url=database)
    assert isinstance(server.executor.store, PostgresStore)
    folder = write_pipeline(server.storage_root, "pipe", SCRIPT)
    status, body = server.request("POST", "/execute", pipeline_body(folder, "python pipe1.py"))
    assert status == 201, body
    job_id = body["task_id"]
    assert wait_final(server, job_id)["task_status"] == "COMPLETED"
    # The rows are in PostgreSQL, and the data folder holds no SQLite store.
    with psycopg.connect(database) as conn:
        assert conn.execute("SELECT status FROM jobs WHERE id = %s", (job_id,)).fetchone() == ("COMPLETED",)
    assert not (server.executor.config.data_dir / "executor.sqlite3").exists()


def test_a_database_url_that_is_not_postgresql_is_refused_without_repeating_it():
    with pytest.raises(ConfigError, match="EXECUTOR_DATABASE_URL: must be a postgresql://") as refused:
        load_config(environ={"EXECUTOR_DATABASE_URL": "mysql://user:hunter2@db/jobs"})
    assert "hunter2" not in str(refused.value)


def test_the_password_is_never_in_a_message_about_the_database(postgres_cluster):
    url = postgres_cluster.url("no_such_database")
    assert redacted(url) == f"postgresql://executor:***@127.0.0.1:{postgres_cluster.port}/no_such_database"
    with pytest.raises(StoreError) as refused:
        PostgresStore(url, ROOT)
    assert postgres_cluster.password not in str(refused.value) and "no_such_database" in str(refused.value)


def test_a_password_in_the_query_is_never_in_a_message_about_the_database(postgres_cluster):
    # libpq reads connection parameters from a URL's query as well (libpq "Connection URIs").
    url = f"postgresql://executor@127.0.0.1:{postgres_cluster.port}/no_such_database?password={postgres_cluster.password}"
    assert redacted(url) == f"postgresql://executor@127.0.0.1:{postgres_cluster.port}/no_such_database?password=***"
    assert redacted("postgresql:///jobs?host=/run/postgresql&sslpassword=key-pw&sslmode=require") == (
        "postgresql:///jobs?host=/run/postgresql&sslpassword=***&sslmode=require")
    with pytest.raises(StoreError) as refused:
        PostgresStore(url, ROOT)
    assert postgres_cluster.password not in str(refused.value) and "no_such_database" in str(refused.value)


def test_a_password_libpq_cannot_parse_is_not_repeated_in_the_error():
    # libpq names the token it cannot decode ("invalid percent-encoded token"): here, the password itself.
    for url in ("postgresql://executor:pw%zz-secret@127.0.0.1:1/jobs",
                "postgresql://executor@127.0.0.1:1/jobs?password=pw%zz-secret"):
        with pytest.raises(StoreError) as refused:
            PostgresStore(url, ROOT)
        assert "percent-encoded" in str(refused.value) and "secret" not in str(refused.value)


def test_an_executor_refuses_to_start_on_a_newer_schema(tmp_path, database, postgres_cluster):
    PostgresStore(database, tmp_path).close()
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("UPDATE schema_version SET version = %s", (SCHEMA_VERSION + 1,))
    result = subprocess.run([sys.executable, "app.py", "--data-dir", str(tmp_path / "data"), "--port", "0"],
                            cwd=ROOT, env={**os.environ, "EXECUTOR_DATABASE_URL": database}, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2
    assert "newer than this executor's" in result.stderr and postgres_cluster.password not in result.stderr


def test_migrate_store_copies_jobs_events_metrics_records_and_sealed_secrets(make_app, data_dir, database,
                                                                           postgres_cluster):
    app = make_app()
    executor = app.config["EXECUTOR"]
    store = executor.store
    secret = "migrated-secret-51c9"
    sealed = executor.secret_box.seal({"password": secret})
    for number in range(3):
        store.create_job(f"job-{number}", kind="pipeline", backend="local", request={"name": f"n{number}"},
                         secrets=sealed if number == 0 else None, log_path=str(data_dir / "jobs" / f"job-{number}" / "job.log"),
                         output_dir=str(data_dir / "jobs" / f"job-{number}"))
    store.claim_next()
    store.add_metrics("job-0", [("loss", 0.5, 1), ("loss", 0.25, 2)])
    store.update("job-0", phase="Training", message="epoch 1")
    store.claim_next()
    store.transition("job-1", JobStatus.COMPLETED)
    store.put_record("model-1", type="model", name="m", status="Created", payload={"url": "s3://b/m"}, job_id="job-1")
    before = {job.id: job for job in store.list_jobs()}
    events = {job_id: store.events(job_id) for job_id in before}
    store.close()

    result = run_app("migrate-store", "--data-dir", str(data_dir), "--to", database)
    assert result.returncode == 0, result.stderr
    assert "3 jobs, 7 job_events, 2 job_metrics, 1 records" in result.stdout
    assert postgres_cluster.password not in result.stdout + result.stderr

    moved = PostgresStore(database, data_dir)
    try:
        assert {job.id: job for job in moved.list_jobs()} == before
        assert {job_id: moved.events(job_id) for job_id in before} == events
        assert moved.metric_history("job-0") == store.metric_history("job-0")
        assert moved.get_record("model-1") == store.get_record("model-1")
        assert executor.secret_box.open(moved.secrets("job-0")) == {"password": secret}
        assert secret.encode() not in b"".join(path.read_bytes() for path in postgres_cluster.database_files(database))
    finally:
        moved.close()
        store.close()

    again = run_app("migrate-store", "--data-dir", str(data_dir), "--to", database)
    assert again.returncode == 1 and "holds 3 job(s) already" in again.stderr


def test_migrate_store_refuses_a_folder_an_executor_holds_or_without_a_store(tmp_path, database, service):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_app("migrate-store", "--data-dir", str(empty), "--to", database)
    assert result.returncode == 2 and "holds no job store" in result.stderr
    running = service(tmp_path / "held")
    result = run_app("migrate-store", "--data-dir", str(tmp_path / "held"), "--to", database)
    assert result.returncode == 2 and "another executor is already running" in result.stderr
    running.terminate()


def test_the_change_count_moves_with_another_executors_writes(tmp_path, database):
    # Cached getStatus answers are kept under this count: a write through another executor must move it.
    here, there = PostgresStore(database, tmp_path), PostgresStore(database, tmp_path)
    try:
        before = here.changes
        there.create_job("a", kind="pipeline", backend="local", request={}, secrets=None,
                         log_path=str(tmp_path / "a.log"), output_dir=str(tmp_path / "a"))
        moved = here.changes
        assert moved != before
        there.claim_next(owner="other")
        assert here.changes != moved and here.get("a").owner == "other"
    finally:
        here.close()
        there.close()
