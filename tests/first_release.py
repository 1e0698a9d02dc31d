"""A data folder as the first release left it: schema version 1, absolute job paths, every kind of row."""
from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

from cryptography.fernet import Fernet

from db import SQLITE_MIGRATIONS

# Migration 1 as the first release shipped it (commit 8406ef5). A migration that has shipped never
# changes: data folders in the field were made by this text.
FIRST_RELEASE_SCHEMA_SHA256 = "f3929ef4c72191c41a24ea3a7fe939257ccd54a94268b10cdda11d4e30e907f3"
DATABASE_NAME = "executor.sqlite3"
# The key of the folder's secret.key file, with which the first release sealed the running job's secrets.
SECRET_KEY = Fernet.generate_key()
SECRET_VALUE = "first-release-password-7f3a"


def write_first_release_data_folder(folder: Path) -> Path:
    """Write a first-release data folder (database and key file) into folder; return the database path."""
    schema = SQLITE_MIGRATIONS[1]
    assert hashlib.sha256(schema.encode()).hexdigest() == FIRST_RELEASE_SCHEMA_SHA256, \
        "migration 1 changed after it shipped: add a new migration instead"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "secret.key").write_bytes(SECRET_KEY)
    sealed = Fernet(SECRET_KEY).encrypt(b'{"password": "%s"}' % SECRET_VALUE.encode())
    path = folder / DATABASE_NAME
    conn = sqlite3.connect(path)
    conn.executescript(f"{schema}; PRAGMA user_version=1;")

    def job(job_id: str, status: str, phase: str, *, secrets: bytes | None = None,
            started: float | None = None, finished: float | None = None) -> None:
        # The first release stored each job's folder and log as absolute paths into its data folder.
        conn.execute("INSERT INTO jobs (id, kind, backend, status, phase, request, secrets, submitted, started,"
                     " finished, updated, log_path, output_dir) VALUES (?, 'pipeline', 'local', ?, ?, ?, ?, 1,"
                     " ?, ?, 1, ?, ?)",
                     (job_id, status, phase, '{"name": "%s"}' % job_id, secrets, started, finished,
                      str(folder / "jobs" / job_id / "job.log"), str(folder / "jobs" / job_id)))
        conn.execute("INSERT INTO job_events (job_id, time, status, phase, message)"
                     " VALUES (?, 1, 'WAITING', 'Queued', 'submitted')", (job_id,))

    job("waiting", "WAITING", "Queued")
    job("running", "RUNNING", "Training", secrets=sealed, started=2)
    job("completed", "COMPLETED", "Completed", started=2, finished=3)
    conn.executemany("INSERT INTO job_metrics (job_id, name, value, step, time) VALUES ('completed', ?, ?, ?, 3)",
                     [("loss", 0.9, 1), ("loss", 0.4, 2)])
    conn.execute("INSERT INTO records (id, type, name, status, payload, job_id, created, updated)"
                 " VALUES ('model-1', 'model', 'first-model', 'Created', '{\"url\": \"s3://b/m\"}', 'completed', 3, 3)")
    conn.commit()
    conn.close()
    return path
