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
from db import SCHEMA_VERSION, SQLiteStore, StoreError
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


def sqlite_data_folder(folder: Path) -> SQLiteStore:
    """Return an SQLite store in a new data folder, holding one waiting job "a"."""
    store = SQLiteStore(folder / "executor.sqlite3")
    store.create_job("a", kind="pipeline", backend="local", request={"name": "a"}, secrets=None,
                     log_path=str(folder / "jobs" / "a" / "job.log"), output_dir=str(folder / "jobs" / "a"))
    return store


def test_migrate_store_copies_a_data_folder_whose_path_holds_uri_characters(tmp_path, database):
    # In an SQLite URI a ? starts the query, a # the fragment and a % an escape: here they are the folder's name.
    folder = tmp_path / "runs?mode=rwc#first%20try%"
    sqlite_data_folder(folder).close()
    result = run_app("migrate-store", "--data-dir", str(folder), "--to", database)
    assert result.returncode == 0, result.stderr
    assert "1 jobs, 1 job_events" in result.stdout
    moved = PostgresStore(database, folder)
    try:
        assert [job.id for job in moved.list_jobs()] == ["a"]
    finally:
        moved.close()


def test_migrate_store_names_a_database_url_it_cannot_read_without_repeating_it(tmp_path):
    sqlite_data_folder(tmp_path).close()
    result = run_app("migrate-store", "--data-dir", str(tmp_path), "--to", "postgresql://executor:hunter2@[::1/jobs")
    assert result.returncode == 2, result.stderr
    assert "EXECUTOR_DATABASE_URL: cannot be read as a URL" in result.stderr
    assert "hunter2" not in result.stderr and "Traceback" not in result.stderr


def test_migrate_store_names_a_data_folder_that_cannot_hold_its_lock(tmp_path, database):
    sqlite_data_folder(tmp_path).close()
    # A folder in the lock file's place: opening it fails as on a read-only data folder (which root could write).
    (tmp_path / "executor.lock").mkdir()
    result = run_app("migrate-store", "--data-dir", str(tmp_path), "--to", database)
    assert result.returncode == 2, result.stderr
    assert f"{tmp_path} cannot hold the executor's lock file (executor.lock): Is a directory" in result.stderr
    assert "Traceback" not in result.stderr


def test_migrate_store_names_a_row_postgresql_refuses_and_copies_nothing(tmp_path, database):
    store = sqlite_data_folder(tmp_path)
    # SQLite keeps a NUL inside a text; PostgreSQL's text types cannot hold one (its manual, "Character Types").
    store.put_record("model-1", type="model", name="m\x00", status="Created", payload={})
    store.close()
    result = run_app("migrate-store", "--data-dir", str(tmp_path), "--to", database)
    assert result.returncode == 1, result.stderr
    assert "refused a row of records" in result.stderr and "NUL" in result.stderr
    assert "Traceback" not in result.stderr
    with psycopg.connect(database) as conn:
        assert conn.execute("SELECT COUNT(*) FROM jobs").fetchone() == (0,)


def test_migrate_store_names_a_job_store_that_is_not_an_sqlite_database(tmp_path, database):
    (tmp_path / "executor.sqlite3").write_bytes(b"these bytes are not an SQLite database\n" * 100)
    result = run_app("migrate-store", "--data-dir", str(tmp_path), "--to", database)
    assert result.returncode == 1, result.stderr
    assert f"{tmp_path / 'executor.sqlite3'} cannot be opened: file is not a database" in result.stderr
    assert "Traceback" not in result.stderr


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
