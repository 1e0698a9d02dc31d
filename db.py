"""The job store: the `Store` interface every store implements, and `SQLiteStore`, the embedded one.

A store keeps jobs (by the rules in job.py), their events and metrics, MLOps records, and each job's
secrets as the queue sealed them. Its schema grows by numbered migrations: every store has the same
numbers, each written in its own SQL, and none opens data of a newer schema than it knows.
"""
from __future__ import annotations

import json
import logging
import math
import os
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Iterator, Mapping

from job import ALLOWED_TRANSITIONS, Job, JobStatus, default_phase, ends_cancelled

logger = logging.getLogger(__name__)


class StoreError(Exception):
    """The job store cannot do what was asked."""


class IllegalTransition(StoreError):
    """A status change that the state machine does not allow."""


class StoreUnavailable(StoreError):
    """The database cannot be written (disk full, locked too long, read-only)."""


class JobExists(StoreError):
    """A job with this id is stored already."""


class Fenced(StoreError):
    """A write of a job's state carried a lease token that is no longer the job's: another executor holds it."""


# The number of the newest migration. A new migration raises it, and every store gains its statements.
SCHEMA_VERSION = 3

# A job printing metric lines in a loop must not grow its history (and the status answer) without
# end: past the row bound each metric's history is halved, keeping its first and last points.
MAX_METRIC_ROWS_PER_JOB = 10_000
MAX_METRIC_NAMES_PER_JOB = 100
UPDATABLE_FIELDS = frozenset({"phase", "external_id", "pid", "progress", "artifacts", "details",
                              "failure_reason", "secrets"})


def migrations_to_apply(found: int, where: str) -> range:
    """Return the numbers of the migrations that data at schema version `found` lacks; refuse a newer one."""
    if found > SCHEMA_VERSION:
        raise StoreError(f"job database {where} has schema version {found}, newer than this "
                         f"executor's {SCHEMA_VERSION}: upgrade the executor")
    return range(found + 1, SCHEMA_VERSION + 1)


@dataclass
class Record:
    """One MLOps record: a model, endpoint, endpoint config, dataset or transform job."""

    id: str
    type: str
    name: str
    status: str
    payload: dict[str, Any]
    job_id: str | None
    created: float
    updated: float


class Store(ABC):
    """Where jobs, their events and metrics, MLOps records and sealed secrets are kept; thread-safe.

    Subclasses implement all methods. Each status change is guarded (it happens only from the status
    the store read, in one transaction with its event), so two threads or two processes cannot both
    move a job. Job folders and logs inside the data folder are stored relative to it.
    """

    #: The statements of each numbered migration (1 to SCHEMA_VERSION), in this store's own SQL.
    MIGRATIONS: ClassVar[Mapping[int, str]]
    #: True when several executors may share the store: then leases decide who runs what.
    shared: ClassVar[bool]

    @property
    @abstractmethod
    def changes(self) -> int:
        """Return a count that changes with every write (ended or failed) that may change the data."""

    @abstractmethod
    def schema_version(self) -> int:
        """Return the number of the newest migration applied to the stored data."""

    @abstractmethod
    def check_writable(self) -> None:
        """Raise StoreUnavailable unless a row can really be written and committed now."""

    @abstractmethod
    def close(self) -> None:
        """Release the store's connections and threads; a later call opens them again."""

    @abstractmethod
    def create_job(self, job_id: str, *, kind: str, backend: str, request: dict[str, Any],
                   secrets: bytes | None, log_path: str, output_dir: str,
                   settings: dict[str, Any] | None = None) -> Job:
        """Insert a new WAITING job (its request, and the settings its platform resolved) and its first event;
        JobExists when the id is taken."""

    @abstractmethod
    def get(self, job_id: str) -> Job | None:
        """Return the job with this id, or None."""

    @abstractmethod
    def find_by_prefix(self, prefix: str, limit: int = 2) -> list[str]:
        """Return the ids (at most `limit`, in order) that start with prefix."""

    @abstractmethod
    def list_jobs(self, *, limit: int = 100, offset: int = 0, status: str | None = None,
                  kind: str | None = None, kinds: Iterable[str] | None = None, name_contains: str | None = None,
                  submitted_from: float | None = None, submitted_to: float | None = None) -> list[Job]:
        """Return jobs newest first, optionally filtered by status, kind, name and submission time."""

    @abstractmethod
    def jobs_in_status(self, status: JobStatus, backend: str | None = None, owner: str | None = None) -> list[Job]:
        """Return every job in this status (of one backend, of one owning executor when named), oldest first."""

    @abstractmethod
    def count_by_status(self) -> dict[str, int]:
        """Return the number of jobs in each status, every status named."""

    @abstractmethod
    def claim_next(self, backends: Iterable[str] | None = None, owner: str | None = None,
                   kinds: Iterable[str] | None = None) -> Job | None:
        """Move the oldest WAITING job (of these kinds) not asked to stop to RUNNING for `owner`, fenced; each to one caller."""

    @abstractmethod
    def transition(self, job_id: str, to: JobStatus, *, expected: JobStatus | None = None,
                   message: str | None = None, failure_reason: str | None = None,
                   phase: str | None = None, fence: int | None = None) -> bool:
        """Move a job to a new status; False when it was not in `expected`; Fenced when `fence` is not its token."""

    @abstractmethod
    def update(self, job_id: str, *, message: str | None = None, fence: int | None = None, **fields: Any) -> None:
        """Set fields of a job named in UPDATABLE_FIELDS (a new phase is an event); Fenced on a stale `fence`."""

    @abstractmethod
    def merge_details(self, job_id: str, fence: int | None = None, **details: Any) -> None:
        """Merge keys into a job's details object; Fenced when `fence` is not the job's token."""

    @abstractmethod
    def renew_lease(self, executor: str, seconds: float) -> float:
        """Hold (or extend) an executor's lease for `seconds` from now; return when it lapses."""

    @abstractmethod
    def leases(self) -> dict[str, float]:
        """Return when each executor's lease lapses (lapsed ones included until taken over), by executor id."""

    @abstractmethod
    def take_over(self, executor: str, everyone_else: bool = False) -> list[tuple[Job, str | None]]:
        """Give `executor` the RUNNING jobs of owners whose lease lapsed (or of every other owner), each with
        a new token; return them with the owner they were taken from, each job to one caller."""

    @abstractmethod
    def request_cancel(self, job_id: str) -> JobStatus | None:
        """Cancel a waiting job at once, or flag a running one; return the status it had before."""

    @abstractmethod
    def delete_job(self, job_id: str) -> bool:
        """Delete an ended job with its events and metrics; False when unknown or still active."""

    @abstractmethod
    def secrets(self, job_id: str) -> bytes | None:
        """Return the sealed secrets a job still holds (a final status drops them)."""

    @abstractmethod
    def add_note(self, job_id: str, message: str) -> None:
        """Record a message in a job's events without changing its status or phase."""

    @abstractmethod
    def events(self, job_id: str) -> list[dict[str, Any]]:
        """Return a job's events (time, status, phase, message), oldest first."""

    @abstractmethod
    def add_metrics(self, job_id: str, metrics: Iterable[tuple[str, float | None, int | None]],
                    when: float | None = None) -> None:
        """Record metric values (name, value, step) of a job, within the bounds on names and rows."""

    @abstractmethod
    def latest_metrics(self, job_id: str) -> dict[str, float | None]:
        """Return the latest value of each metric of a job."""

    @abstractmethod
    def latest_metrics_of(self, job_ids: list[str]) -> dict[str, dict[str, float | None]]:
        """Return the latest value of each metric of several jobs, by job id."""

    @abstractmethod
    def metric_history(self, job_id: str) -> list[dict[str, Any]]:
        """Return every kept metric value (name, value, step, time) of a job, oldest first."""

    @abstractmethod
    def put_record(self, record_id: str, *, type: str, name: str, status: str, payload: dict[str, Any],
                   job_id: str | None = None) -> Record:
        """Insert or replace an MLOps record, keeping its creation time."""

    @abstractmethod
    def get_record(self, record_id: str) -> Record | None:
        """Return the record with this id, or None."""

    @abstractmethod
    def list_records(self, type: str, limit: int = 1000) -> list[Record]:
        """Return the records of a type, newest first."""

    @abstractmethod
    def delete_record(self, record_id: str) -> bool:
        """Delete a record; False when there was none."""


_JSON_COLUMNS = ("request", "progress", "artifacts", "details")

#: The key under which a job's platform settings are kept in its stored request. Releases before the
#: settings had a field of their own wrote them there, so every stored row, old or new, reads the same.
STORED_SETTINGS_KEY = "sagemaker"


def stored_request(request: dict[str, Any], settings: dict[str, Any] | None) -> dict[str, Any]:
    """Return a request as its row keeps it: with its platform's settings under their stored key."""
    return dict(request) if settings is None else {**request, STORED_SETTINGS_KEY: settings}


def split_stored_request(stored: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Return the request and the settings a row's request holds (the inverse of stored_request)."""
    request = dict(stored)
    settings = request.pop(STORED_SETTINGS_KEY, None)
    return request, settings if isinstance(settings, dict) else None


def job_from_row(data: dict[str, Any], data_dir: Path) -> Job:
    """Return the Job of a stored row's columns (a dict it consumes); relative paths lie in data_dir."""
    data["has_secrets"] = data.pop("secrets", None) is not None
    for column in _JSON_COLUMNS:
        data[column] = json.loads(data[column])
    data["request"], data["settings"] = split_stored_request(data["request"])
    folder = str(data_dir)
    for column in ("log_path", "output_dir"):
        stored = data[column]
        # os.path rather than pathlib: every status poll reads two paths, and Path objects cost more
        # than the query. Stored relative paths use '/', whatever the system that wrote them.
        data[column] = stored if os.path.isabs(stored) else os.path.join(
            folder, *(part for part in stored.split("/") if part not in ("", ".")))
    data["status"] = JobStatus(data["status"])
    data["cancel_requested"] = bool(data["cancel_requested"])
    return Job(**data)


def check_fence(job_id: str, row: Mapping[str, Any], fence: int | None) -> None:
    """Raise Fenced when a write's lease token is not the job's own (its row's `fence` and `owner`)."""
    if fence is not None and fence != row["fence"]:
        raise Fenced(f"job {job_id} is held by executor {row['owner']} with lease token {row['fence']}; "
                     f"a write with token {fence} was refused")


def storable_text(value: Any) -> Any:
    """Return a text column's value as every store keeps it: a NUL, which PostgreSQL's text refuses, as U+FFFD.

    A failure reason quotes the job's own last lines, which a job may fill with any bytes: its end must
    be stored, on either store, whatever they hold.
    """
    return value.replace("\x00", "\ufffd") if isinstance(value, str) else value


def claim_message(owner: str | None) -> str:
    """Return the event message of a claim."""
    return f"claimed by executor {owner}" if owner else "claimed by a worker"


def takeover_message(lost: str | None, taker: str) -> str:
    """Return the event message of a job taken over from a lost executor."""
    return f"taken over by executor {taker}: executor {lost or '(none recorded)'} lost its lease"


def stored_path(path: str, data_dir: Path) -> str:
    """Return a path inside the (resolved) data folder relative to it, with '/'; any other path as given."""
    candidate = Path(path)
    if not candidate.is_absolute():
        return candidate.as_posix()
    # The queue builds its paths under the (already resolved) data folder: a lexical check spares
    # each submission two realpath walks; anything else is resolved.
    inside = path.removeprefix(os.path.join(data_dir, ""))
    if inside != path and ".." not in inside.split(os.sep):
        return inside.replace(os.sep, "/")
    try:
        return candidate.resolve().relative_to(data_dir).as_posix()
    except ValueError:
        return str(candidate)


def merge_patch(target: Any, patch: Any) -> Any:
    """Return target merged with patch by RFC 7396 (SQLite's json_patch): objects merge, null deletes."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


def one_of(column: str, values: list[Any]) -> str:
    """Return a condition that a column holds one of the values, a `?` for each (never true of none)."""
    # SQLite takes an empty IN list and PostgreSQL does not: a condition that is never true stands in.
    return f"{column} IN ({', '.join('?' * len(values))})" if values else "1 = 0"


class SQLStore(Store):
    """The store's logic, written once in SQL that SQLite and PostgreSQL both run.

    A subclass brings its connections (`_write`, `_read`), its migrations and the few fragments in which
    the two dialects differ. Statements mark parameters with `?` and hold no `?` of their own, so that
    a driver with other marks can translate them. A write reads the rows it changes with LOCK_ROW, so
    that where locks are by row, two writers cannot both move a job.
    """

    #: Ends the SELECT of a job that the write then changes: a row lock where the store locks rows.
    LOCK_ROW: ClassVar[str]
    #: Ends the SELECT of the jobs a claim or a takeover changes: they are locked, and rows another
    #: writer holds are passed over (each job to one caller).
    LOCK_FREE_ROWS: ClassVar[str]
    #: The condition that a job's request name contains a (lower-case) text, the one parameter.
    NAME_CONTAINS: ClassVar[str]

    data_dir: Path
    clock: Callable[[], float]

    @abstractmethod
    def _write(self) -> AbstractContextManager[Any]:
        """Hold one write transaction, committed on leaving; yield its connection."""

    @abstractmethod
    def _read(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        """Return the rows of one query, read outside any write."""

    @staticmethod
    @abstractmethod
    def _fields(row: Any) -> dict[str, Any]:
        """Return a row as a dict of its columns, the caller's own."""

    def check_writable(self) -> None:
        """Raise StoreUnavailable unless a row can really be written and committed now."""
        # Taking the write lock alone proves nothing: a full disk or a read-only file only fails
        # when a page is written.
        with self._write() as conn:
            conn.execute("INSERT INTO write_probe (id, time) VALUES (1, ?)"
                         " ON CONFLICT (id) DO UPDATE SET time = excluded.time", (self.clock(),))

    # -- jobs ------------------------------------------------------------------------------------

    def create_job(self, job_id: str, *, kind: str, backend: str, request: dict[str, Any],
                   secrets: bytes | None, log_path: str, output_dir: str,
                   settings: dict[str, Any] | None = None) -> Job:
        """Insert a new WAITING job and its first event; paths inside the data folder are stored relative."""
        log_path, output_dir = stored_path(log_path, self.data_dir), stored_path(output_dir, self.data_dir)
        now = self.clock()
        with self._write() as conn:
            # RETURNING hands back the stored row (with the table's defaults) without a second query;
            # no row when the id is taken.
            rows = conn.execute(
                "INSERT INTO jobs (id, kind, backend, status, request, secrets, submitted, updated,"
                " log_path, output_dir) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (id) DO NOTHING RETURNING *",
                (job_id, kind, backend, JobStatus.WAITING.value, json.dumps(stored_request(request, settings)), secrets,
                 now, now,
                 log_path, output_dir)).fetchall()
            if not rows:
                raise JobExists(f"a job {job_id} exists already")
            self._add_event(conn, job_id, JobStatus.WAITING, "Queued", "submitted", now)
        return self._job(rows[0])

    def _job(self, row: Any) -> Job:
        return job_from_row(self._fields(row), self.data_dir)

    def get(self, job_id: str) -> Job | None:
        """Return the job with this id, or None."""
        rows = self._read("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return self._job(rows[0]) if rows else None

    def find_by_prefix(self, prefix: str, limit: int = 2) -> list[str]:
        """Return the ids (at most `limit`) that start with prefix, through the primary key's index."""
        # A range on the key instead of LIKE: the index answers it, and no character of the prefix
        # is a pattern. (Ids compare bytewise in both stores.)
        rows = self._read("SELECT id FROM jobs WHERE id >= ? AND id < ? ORDER BY id LIMIT ?",
                          (prefix, prefix + "\uffff", limit))
        return [row["id"] for row in rows]

    def list_jobs(self, *, limit: int = 100, offset: int = 0, status: str | None = None,
                  kind: str | None = None, kinds: Iterable[str] | None = None, name_contains: str | None = None,
                  submitted_from: float | None = None, submitted_to: float | None = None) -> list[Job]:
        """Return jobs newest first, optionally filtered by status, kind, name and submission time."""
        where, params = [], []
        if name_contains:
            where.append(self.NAME_CONTAINS)
            params.append(name_contains.lower())
        if submitted_from is not None:
            where.append("submitted >= ?")
            params.append(submitted_from)
        if submitted_to is not None:
            where.append("submitted < ?")
            params.append(submitted_to)
        if status:
            where.append("status = ?")
            params.append(status)
        if kind:
            where.append("kind = ?")
            params.append(kind)
        if kinds is not None:
            kinds = list(kinds)
            where.append(one_of("kind", kinds))
            params.extend(kinds)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self._read(f"SELECT * FROM jobs {clause} ORDER BY submitted DESC, id LIMIT ? OFFSET ?",
                          [*params, limit, offset])
        return [self._job(row) for row in rows]

    def jobs_in_status(self, status: JobStatus, backend: str | None = None, owner: str | None = None) -> list[Job]:
        """Return every job in this status, oldest first."""
        sql, params = "SELECT * FROM jobs WHERE status = ?", [status.value]
        if backend:
            sql += " AND backend = ?"
            params.append(backend)
        if owner:
            sql += " AND owner = ?"
            params.append(owner)
        return [self._job(row) for row in self._read(sql + " ORDER BY submitted, id", params)]

    def count_by_status(self) -> dict[str, int]:
        """Return the number of jobs in each status."""
        counts = {status.value: 0 for status in JobStatus}
        counts.update({row["status"]: row["n"]
                       for row in self._read("SELECT status, COUNT(*) AS n FROM jobs GROUP BY status")})
        return counts

    def claim_next(self, backends: Iterable[str] | None = None, owner: str | None = None,
                   kinds: Iterable[str] | None = None) -> Job | None:
        """Move the oldest WAITING job (of these kinds) to RUNNING for `owner` and return it; None when nothing waits."""
        now = self.clock()
        filter_sql, params = "", []
        for column, values in (("backend", backends), ("kind", kinds)):
            if values is not None:
                values = list(values)
                filter_sql += f" AND {one_of(column, values)}"
                params.extend(values)
        with self._write() as conn:
            rows = conn.execute(
                "UPDATE jobs SET status = ?, phase = 'Starting', started = COALESCE(started, ?), updated = ?,"
                " attempts = attempts + 1, owner = ?, fence = fence + 1 WHERE id = (SELECT id FROM jobs"
                f" WHERE status = ? AND cancel_requested = 0{filter_sql} ORDER BY submitted, id LIMIT 1"
                f"{self.LOCK_FREE_ROWS}) RETURNING *",
                [JobStatus.RUNNING.value, now, now, owner, JobStatus.WAITING.value, *params]).fetchall()
            if not rows:
                return None
            self._add_event(conn, rows[0]["id"], JobStatus.RUNNING, "Starting", claim_message(owner), now)
        return self._job(rows[0])

    def transition(self, job_id: str, to: JobStatus, *, expected: JobStatus | None = None,
                   message: str | None = None, failure_reason: str | None = None,
                   phase: str | None = None, fence: int | None = None) -> bool:
        """Move a job to a new status; False when another mover moved it first.

        A running job whose stop was answered "cancelled" ends CANCELLED, whatever final status its
        work reached first: the answer was a promise. Raises IllegalTransition for a move the state
        machine forbids and KeyError for an unknown job.
        """
        with self._write() as conn:
            row = conn.execute("SELECT status, phase, cancel_requested, owner, fence FROM jobs WHERE id = ?"
                               f"{self.LOCK_ROW}", (job_id,)).fetchone()
            if row is None:
                raise KeyError(job_id)
            check_fence(job_id, row, fence)
            current = JobStatus(row["status"])
            if ends_cancelled(current, to, bool(row["cancel_requested"])):
                message = f"stopped at the user's request (the job had reached {to.value})"
                to, failure_reason, phase = JobStatus.CANCELLED, None, None
            if expected is not None and current is not expected:
                return False
            if to not in ALLOWED_TRANSITIONS[current]:
                raise IllegalTransition(f"job {job_id} cannot go from {current.value} to {to.value}")
            now = self.clock()
            new_phase = phase or default_phase(to, row["phase"])
            failure_reason = storable_text(failure_reason)
            # A requeue (to WAITING) keeps the first start time and has no owner until claimed again;
            # only a final status has a finish time and drops the job's secrets.
            changed = conn.execute(
                "UPDATE jobs SET status = ?, phase = ?, updated = ?,"
                " started = CASE WHEN ? THEN started ELSE COALESCE(started, ?) END,"
                " finished = CASE WHEN ? THEN ? ELSE NULL END,"
                " failure_reason = COALESCE(?, failure_reason),"
                " secrets = CASE WHEN ? THEN NULL ELSE secrets END,"
                " owner = CASE WHEN ? THEN NULL ELSE owner END"
                " WHERE id = ? AND status = ?",
                (to.value, new_phase, now, to is JobStatus.WAITING, now, to.is_final, now, failure_reason,
                 to.is_final, to is JobStatus.WAITING, job_id, current.value)).rowcount
            if changed:
                self._add_event(conn, job_id, to, new_phase, message or failure_reason, now)
        return bool(changed)

    def update(self, job_id: str, *, message: str | None = None, fence: int | None = None, **fields: Any) -> None:
        """Set progress fields of a job (phase, external_id, pid, progress, artifacts, details, ...)."""
        unknown = set(fields) - UPDATABLE_FIELDS
        if unknown:
            raise ValueError(f"cannot update job fields {sorted(unknown)}")
        if not fields:
            return
        now = self.clock()
        # Column names come from UPDATABLE_FIELDS, never from a caller's text; every value is a placeholder.
        assignments = ", ".join(f"{name} = ?" for name in fields)
        values = [json.dumps(value) if name in _JSON_COLUMNS else storable_text(value) for name, value in fields.items()]
        with self._write() as conn:
            row = conn.execute(f"SELECT status, phase, owner, fence FROM jobs WHERE id = ?{self.LOCK_ROW}",
                               (job_id,)).fetchone()
            if row is None:
                raise KeyError(job_id)
            check_fence(job_id, row, fence)
            conn.execute(f"UPDATE jobs SET {assignments}, updated = ? WHERE id = ?", [*values, now, job_id])
            if "phase" in fields and fields["phase"] != row["phase"]:
                self._add_event(conn, job_id, JobStatus(row["status"]), fields["phase"], message, now)

    def merge_details(self, job_id: str, fence: int | None = None, **details: Any) -> None:
        """Merge keys into a job's details object (RFC 7396, as SQLite's json_patch)."""
        with self._write() as conn:
            row = conn.execute(f"SELECT details, owner, fence FROM jobs WHERE id = ?{self.LOCK_ROW}",
                               (job_id,)).fetchone()
            if row is None:
                return
            check_fence(job_id, row, fence)
            merged = merge_patch(json.loads(row["details"]), details)
            conn.execute("UPDATE jobs SET details = ?, updated = ? WHERE id = ?",
                         (json.dumps(merged), self.clock(), job_id))

    def request_cancel(self, job_id: str) -> JobStatus | None:
        """Cancel a waiting job at once, or flag a running one; return the status it had before."""
        now = self.clock()
        with self._write() as conn:
            row = conn.execute(f"SELECT status FROM jobs WHERE id = ?{self.LOCK_ROW}", (job_id,)).fetchone()
            if row is None:
                return None
            status = JobStatus(row["status"])
            if status is JobStatus.WAITING:
                # A job that never ran starts and ends at its cancellation: the Essedum backend needs a
                # start time for every final status and computes the end as start + duration.
                conn.execute("UPDATE jobs SET status = ?, phase = 'Cancelled', started = COALESCE(started, ?),"
                             " finished = ?, updated = ?, cancel_requested = 1, secrets = NULL"
                             " WHERE id = ? AND status = ?",
                             (JobStatus.CANCELLED.value, now, now, now, job_id, JobStatus.WAITING.value))
                self._add_event(conn, job_id, JobStatus.CANCELLED, "Cancelled", "cancelled before it started", now)
            elif status is JobStatus.RUNNING:
                conn.execute("UPDATE jobs SET cancel_requested = 1, updated = ? WHERE id = ?", (now, job_id))
            return status

    # -- leases ----------------------------------------------------------------------------------

    def renew_lease(self, executor: str, seconds: float) -> float:
        """Hold (or extend) an executor's lease for `seconds` from now; return when it lapses."""
        until = self.clock() + seconds
        with self._write() as conn:
            conn.execute("INSERT INTO leases (executor, until) VALUES (?, ?)"
                         " ON CONFLICT (executor) DO UPDATE SET until = excluded.until", (executor, until))
        return until

    def leases(self) -> dict[str, float]:
        """Return when each executor's lease lapses, by executor id."""
        return {row["executor"]: row["until"] for row in self._read("SELECT executor, until FROM leases")}

    def take_over(self, executor: str, everyone_else: bool = False) -> list[tuple[Job, str | None]]:
        """Give `executor` the RUNNING jobs of lapsed owners (or of all others); return them with their old owner."""
        now = self.clock()
        orphaned = ("(owner IS NULL OR owner <> ?)" if everyone_else else
                    "(owner IS NULL OR owner NOT IN (SELECT executor FROM leases WHERE until >= ?))")
        with self._write() as conn:
            rows = conn.execute(
                f"SELECT id, owner FROM jobs WHERE status = ? AND {orphaned} ORDER BY submitted, id"
                f"{self.LOCK_FREE_ROWS}", (JobStatus.RUNNING.value, executor if everyone_else else now)).fetchall()
            taken = []
            for row in rows:
                (job,) = conn.execute("UPDATE jobs SET owner = ?, fence = fence + 1, updated = ? WHERE id = ?"
                                      " RETURNING *", (executor, now, row["id"])).fetchall()
                self._add_event(conn, row["id"], JobStatus(job["status"]), job["phase"],
                                takeover_message(row["owner"], executor), now)
                taken.append((self._job(job), row["owner"]))
            conn.execute("DELETE FROM leases WHERE until < ? OR (? AND executor <> ?)",
                         (now, everyone_else, executor))
        return taken

    def delete_job(self, job_id: str) -> bool:
        """Delete an ended job (its events and metrics go with it); False when unknown or still active."""
        with self._write() as conn:
            return bool(conn.execute("DELETE FROM jobs WHERE id = ? AND status IN (?, ?, ?)",
                                     (job_id, JobStatus.COMPLETED.value, JobStatus.ERROR.value,
                                      JobStatus.CANCELLED.value)).rowcount)

    def secrets(self, job_id: str) -> bytes | None:
        """Return the sealed secrets a job still holds."""
        rows = self._read("SELECT secrets FROM jobs WHERE id = ?", (job_id,))
        # bytes(): a driver may hand back a view of the value.
        return bytes(rows[0]["secrets"]) if rows and rows[0]["secrets"] is not None else None

    def add_note(self, job_id: str, message: str) -> None:
        """Record a message in a job's events without changing its status or phase."""
        with self._write() as conn:
            row = conn.execute("SELECT status, phase FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise KeyError(job_id)
            self._add_event(conn, job_id, JobStatus(row["status"]), row["phase"], message, self.clock())

    def _add_event(self, conn: Any, job_id: str, status: JobStatus, phase: str, message: str | None,
                   now: float) -> None:
        conn.execute("INSERT INTO job_events (job_id, time, status, phase, message) VALUES (?, ?, ?, ?, ?)",
                     (job_id, now, status.value, storable_text(phase), storable_text(message)))

    def events(self, job_id: str) -> list[dict[str, Any]]:
        """Return a job's status and phase changes, oldest first."""
        rows = self._read("SELECT time, status, phase, message FROM job_events WHERE job_id = ? ORDER BY id",
                          (job_id,))
        return [self._fields(row) for row in rows]

    # -- metrics ---------------------------------------------------------------------------------

    def add_metrics(self, job_id: str, metrics: Iterable[tuple[str, float | None, int | None]],
                    when: float | None = None) -> None:
        """Record metric values (name, value, step) of a job, within the job's bounds on names and rows."""
        now = self.clock() if when is None else when
        # A NaN is kept as NULL, which JSON can carry (SQLite would do so of itself; PostgreSQL keeps NaN).
        rows = [(job_id, name, None if value is not None and math.isnan(value) else value, step, now)
                for name, value, step in metrics]
        if not rows:
            return
        with self._write() as conn:
            # The job's row is the lock under which its metric names are counted.
            conn.execute(f"SELECT 1 FROM jobs WHERE id = ?{self.LOCK_ROW}", (job_id,))
            names = {row["name"] for row in conn.execute("SELECT DISTINCT name FROM job_metrics WHERE job_id = ?",
                                                         (job_id,))}
            room = MAX_METRIC_NAMES_PER_JOB - len(names)
            kept = []
            for row in rows:
                if row[1] not in names:
                    if room <= 0:
                        continue
                    names.add(row[1])
                    room -= 1
                kept.append(row)
            conn.executemany("INSERT INTO job_metrics (job_id, name, value, step, time) VALUES (?, ?, ?, ?, ?)",
                             kept)
            count_sql = "SELECT COUNT(*) AS n FROM job_metrics WHERE job_id = ?"
            while conn.execute(count_sql, (job_id,)).fetchone()["n"] > MAX_METRIC_ROWS_PER_JOB \
                    and self._halve_metric_history(conn, job_id):
                pass

    def _halve_metric_history(self, conn: Any, job_id: str) -> int:
        """Delete every second point of each metric of a job, the first and latest kept; return how many."""
        return conn.execute(
            "DELETE FROM job_metrics WHERE id IN (SELECT id FROM (SELECT id,"
            " ROW_NUMBER() OVER (PARTITION BY name ORDER BY id) AS place,"
            " COUNT(*) OVER (PARTITION BY name) AS total FROM job_metrics WHERE job_id = ?) AS numbered"
            " WHERE place % 2 = 0 AND place < total)", (job_id,)).rowcount

    def latest_metrics(self, job_id: str) -> dict[str, float | None]:
        """Return the latest value of each metric of a job."""
        return self.latest_metrics_of([job_id])[job_id]

    def latest_metrics_of(self, job_ids: list[str]) -> dict[str, dict[str, float | None]]:
        """Return the latest value of each metric of several jobs, by job id, in one query."""
        if not job_ids:
            return {}
        rows = self._read(
            "SELECT job_id, name, value FROM job_metrics WHERE id IN (SELECT MAX(id) FROM job_metrics"
            f" WHERE {one_of('job_id', job_ids)} GROUP BY job_id, name) ORDER BY name", job_ids)
        result: dict[str, dict[str, float | None]] = {job_id: {} for job_id in job_ids}
        for row in rows:
            result[row["job_id"]][row["name"]] = row["value"]
        return result

    def metric_history(self, job_id: str) -> list[dict[str, Any]]:
        """Return every recorded metric value of a job, oldest first."""
        rows = self._read("SELECT name, value, step, time FROM job_metrics WHERE job_id = ? ORDER BY id",
                          (job_id,))
        return [self._fields(row) for row in rows]

    # -- MLOps records ---------------------------------------------------------------------------

    def put_record(self, record_id: str, *, type: str, name: str, status: str, payload: dict[str, Any],
                   job_id: str | None = None) -> Record:
        """Insert or replace an MLOps record, keeping its creation time."""
        now = self.clock()
        with self._write() as conn:
            rows = conn.execute(
                "INSERT INTO records (id, type, name, status, payload, job_id, created, updated)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET name = excluded.name,"
                " status = excluded.status, payload = excluded.payload, job_id = excluded.job_id,"
                " updated = excluded.updated RETURNING *",
                (record_id, type, name, status, json.dumps(payload), job_id, now, now)).fetchall()
        return self._record(rows[0])

    def _record(self, row: Any) -> Record:
        data = self._fields(row)
        data["payload"] = json.loads(data["payload"])
        return Record(**data)

    def get_record(self, record_id: str) -> Record | None:
        """Return the record with this id, or None."""
        rows = self._read("SELECT * FROM records WHERE id = ?", (record_id,))
        return self._record(rows[0]) if rows else None

    def list_records(self, type: str, limit: int = 1000) -> list[Record]:
        """Return the records of a type, newest first."""
        rows = self._read("SELECT * FROM records WHERE type = ? ORDER BY created DESC LIMIT ?", (type, limit))
        return [self._record(row) for row in rows]

    def delete_record(self, record_id: str) -> bool:
        """Delete a record; False when there was none."""
        with self._write() as conn:
            return bool(conn.execute("DELETE FROM records WHERE id = ?", (record_id,)).rowcount)



# -- SQLite ---------------------------------------------------------------------------------------

BUSY_TIMEOUT_MS = 10_000
# SQLite's automatic checkpoint runs inside the COMMIT of whichever writer crosses 1,000 WAL pages,
# copying them into the database while every other writer waits: a few milliseconds on a quiet disk,
# tens on a busy one. The store's own thread checkpoints every so many commits instead, beside the
# writers (a passive checkpoint takes no write lock); SQLite's is kept only as a backstop, farther out.
COMMITS_PER_CHECKPOINT = 200
BACKSTOP_CHECKPOINT_PAGES = 10_000


SQLITE_MIGRATIONS: dict[int, str] = {
    # jobs, events, metrics, MLOps records
    1: """
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        backend TEXT NOT NULL,
        status TEXT NOT NULL,
        phase TEXT NOT NULL DEFAULT 'Queued',
        request TEXT NOT NULL,
        secrets BLOB,
        submitted REAL NOT NULL,
        started REAL,
        finished REAL,
        updated REAL NOT NULL,
        external_id TEXT,
        pid TEXT,
        failure_reason TEXT,
        progress TEXT NOT NULL DEFAULT '{}',
        artifacts TEXT NOT NULL DEFAULT '{}',
        details TEXT NOT NULL DEFAULT '{}',
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0,
        log_path TEXT NOT NULL,
        output_dir TEXT NOT NULL
    );
    CREATE INDEX jobs_status_submitted ON jobs (status, submitted);
    CREATE INDEX jobs_submitted ON jobs (submitted);
    CREATE TABLE job_events (
        id INTEGER PRIMARY KEY,
        job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        time REAL NOT NULL,
        status TEXT NOT NULL,
        phase TEXT NOT NULL,
        message TEXT
    );
    CREATE INDEX job_events_job ON job_events (job_id, id);
    CREATE TABLE job_metrics (
        id INTEGER PRIMARY KEY,
        job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        value REAL,
        step INTEGER,
        time REAL NOT NULL
    );
    CREATE INDEX job_metrics_job ON job_metrics (job_id, name, id);
    CREATE TABLE records (
        id TEXT PRIMARY KEY,
        type TEXT NOT NULL,
        name TEXT NOT NULL,
        status TEXT NOT NULL,
        payload TEXT NOT NULL DEFAULT '{}',
        job_id TEXT,
        created REAL NOT NULL,
        updated REAL NOT NULL,
        UNIQUE (type, name)
    );
    CREATE INDEX records_type ON records (type, created);
    """,
    # job folders and logs relative to the data folder, so that a moved or restored data folder
    # keeps its jobs; a one-row table that readiness writes to prove the store takes writes.
    # ('_' in LIKE matches either path separator: databases written on Windows hold backslashes.)
    2: """
    UPDATE jobs SET output_dir = 'jobs/' || id WHERE output_dir LIKE '%jobs_' || id;
    UPDATE jobs SET log_path = 'jobs/' || id || '/job.log' WHERE log_path LIKE '%jobs_' || id || '_job.log';
    CREATE TABLE write_probe (id INTEGER PRIMARY KEY CHECK (id = 1), time REAL NOT NULL);
    """,
    # claims and leases: the executor that runs each job and the token of its claim; each executor's lease
    3: """
    ALTER TABLE jobs ADD COLUMN owner TEXT;
    ALTER TABLE jobs ADD COLUMN fence INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE leases (executor TEXT PRIMARY KEY, until REAL NOT NULL);
    """,
}


@dataclass
class _Checkpointer:
    """The store's checkpoint thread and the events it alone answers to."""

    wanted: threading.Event
    stop: threading.Event
    thread: threading.Thread | None = None


class SQLiteStore(SQLStore):
    """The job store in one SQLite file of the data folder; safe to share between threads.

    Connection policy: one connection per thread, opened on first use and kept for the thread's life
    (waitress and the queue use fixed thread pools, so the count is bounded). Connections run in
    autocommit mode; every write is one BEGIN IMMEDIATE block, so a writer takes the lock up front
    instead of failing half-way through a deferred transaction. The writers of one process queue on a
    lock before that (SQLite's own busy handler sleeps in steps of up to 100 ms); the busy timeout is
    left for writers of other processes. WAL lets status polls read while a worker writes.
    """

    MIGRATIONS = SQLITE_MIGRATIONS
    # The data folder's lock keeps a second executor out.
    shared = False
    # BEGIN IMMEDIATE holds the whole database for each write: no row needs a lock of its own.
    LOCK_ROW = LOCK_FREE_ROWS = ""
    NAME_CONTAINS = "instr(lower(json_extract(request, '$.name')), ?) > 0"

    def __init__(self, path: str | Path, clock: Callable[[], float] = time.time):
        self.path = Path(path)
        # Job folders and logs are stored relative to the folder that holds the database.
        self.data_dir = self.path.parent.resolve()
        self.clock = clock
        self._local = threading.local()
        # Closing a connection under a running statement of another thread corrupts the process
        # (freed memory, a file descriptor number closed twice). So each connection is used under its
        # own lock, and close() closes each one under that lock and starts a new generation: a thread
        # that finds its connection of an older generation opens a new one.
        self._generation = 0
        self._open: list[tuple[sqlite3.Connection, threading.Lock]] = []
        self._open_lock = threading.Lock()
        # Writers of this process queue here rather than in SQLite's busy handler, which sleeps in
        # growing steps (up to 100 ms) between retries: under concurrent submissions that sleep,
        # not the write, made the tail latency.
        self._write_lock = threading.Lock()
        # Counts write transactions of this store, ended or failed. This store is its database's only
        # writer (the data folder lock keeps out a second executor), so the count is the database's.
        self._changes = 0
        self._commits_since_checkpoint = 0
        self._checkpointer: _Checkpointer | None = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._migrate()
        except sqlite3.Error as exc:
            raise StoreError(f"job database {self.path} cannot be opened: {exc}") from exc

    # -- connections -----------------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.generation != self._generation:
            self._drop_connection(conn)
            conn = None
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                   check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_CHECKPOINT_PAGES}")
            self._local.conn = conn
            self._local.lock = threading.Lock()
            self._local.generation = self._generation
            with self._open_lock:
                self._open.append((conn, self._local.lock))
        return conn

    def _acquire(self) -> tuple[sqlite3.Connection, threading.Lock]:
        """Return this thread's connection with its lock held, so that close() cannot close it meanwhile."""
        while True:
            conn = self._connection()
            lock = self._local.lock
            lock.acquire()
            if self._local.generation == self._generation:
                return conn, lock
            # close() closed it meanwhile: the next turn opens a new one.
            lock.release()

    def _drop_connection(self, conn: sqlite3.Connection) -> None:
        """Forget this thread's connection after a fault, so that the next use opens a fresh one.

        SQLite opens a file it cannot write read-only and keeps it so for the connection's life: a
        connection made during a fault would refuse writes long after the fault is cleared.
        """
        if getattr(self._local, "conn", None) is conn:
            self._local.conn = None
        with self._open_lock:
            self._open = [entry for entry in self._open if entry[0] is not conn]
        try:
            conn.close()
        except sqlite3.Error:
            pass

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        if not self._write_lock.acquire(timeout=BUSY_TIMEOUT_MS / 1000):
            raise StoreUnavailable(f"job database {self.path} cannot be written: another write took "
                                   f"longer than {BUSY_TIMEOUT_MS} ms")
        try:
            conn, held = self._acquire()
        except sqlite3.Error as exc:
            self._write_lock.release()
            raise StoreUnavailable(f"job database {self.path} cannot be opened: {exc}") from exc
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                # SQLite has rolled back already after some errors (a full disk).
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            self._count_commit()
        except sqlite3.IntegrityError as exc:
            # A constraint refused this write (an id taken, a job gone): the connection is sound.
            raise StoreError(f"job database {self.path} refused a write: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            self._drop_connection(conn)
            raise StoreUnavailable(f"job database {self.path} cannot be written: {exc}") from exc
        finally:
            self._changes += 1
            held.release()
            self._write_lock.release()

    def _read(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        try:
            conn, held = self._acquire()
            try:
                return conn.execute(sql, tuple(params)).fetchall()
            finally:
                held.release()
        except sqlite3.OperationalError as exc:
            if getattr(self._local, "conn", None) is not None:
                self._drop_connection(self._local.conn)
            raise StoreUnavailable(f"job database {self.path} cannot be read: {exc}") from exc

    @staticmethod
    def _fields(row: sqlite3.Row) -> dict[str, Any]:
        # zip, not dict(row): a Row finds each name by a scan of its columns.
        return dict(zip(row.keys(), row))

    def _count_commit(self) -> None:
        # Called under the write lock: the count needs no lock of its own.
        self._commits_since_checkpoint += 1
        if self._commits_since_checkpoint < COMMITS_PER_CHECKPOINT:
            return
        self._commits_since_checkpoint = 0
        if self._checkpointer is None:
            self._checkpointer = self._start_checkpointer()
        if self._checkpointer is not None:
            self._checkpointer.wanted.set()

    def _start_checkpointer(self) -> "_Checkpointer | None":
        # The commit that asks for it has happened: a thread that cannot start must not fail it.
        checkpointer = _Checkpointer(threading.Event(), threading.Event())
        thread = threading.Thread(target=self._checkpoint_loop, args=(checkpointer,), name="checkpoint",
                                  daemon=True)
        try:
            thread.start()
        except RuntimeError as exc:
            logger.warning("no checkpoint thread for %s (%s): SQLite checkpoints at %d WAL pages instead",
                           self.path, exc, BACKSTOP_CHECKPOINT_PAGES)
            return None
        checkpointer.thread = thread
        return checkpointer

    def _checkpoint_loop(self, checkpointer: "_Checkpointer") -> None:
        while True:
            checkpointer.wanted.wait()
            checkpointer.wanted.clear()
            if checkpointer.stop.is_set():
                return
            try:
                conn, held = self._acquire()
                try:
                    # The bulk is copied beside the writers; the frames they add meanwhile are copied
                    # under the write lock, so that the checkpoint completes and the WAL starts over.
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                    if self._write_lock.acquire(timeout=BUSY_TIMEOUT_MS / 1000):
                        try:
                            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                        finally:
                            self._write_lock.release()
                finally:
                    held.release()
            except sqlite3.Error as exc:
                # Nothing is lost: the WAL keeps the commits and SQLite's backstop checkpoint remains.
                logger.warning("checkpoint of %s failed: %s", self.path, exc)

    def close(self) -> None:
        """Stop the checkpoint thread and close every connection this store opened, each once no
        statement runs on it."""
        checkpointer, self._checkpointer = self._checkpointer, None
        if checkpointer is not None:
            checkpointer.stop.set()
            checkpointer.wanted.set()
            # A thread still inside a checkpoint past this wait stops at its next turn: its events
            # are its own, and a later checkpointer has others.
            if checkpointer.thread is not None:
                checkpointer.thread.join(timeout=BUSY_TIMEOUT_MS / 1000)
        self._generation += 1
        with self._open_lock:
            opened, self._open = self._open, []
        for conn, lock in opened:
            with lock:
                conn.close()

    @property
    def changes(self) -> int:
        return self._changes

    def schema_version(self) -> int:
        return self._read("PRAGMA user_version")[0][0]

    def _migrate(self) -> None:
        conn = self._connection()
        for number in migrations_to_apply(conn.execute("PRAGMA user_version").fetchone()[0], str(self.path)):
            # executescript commits first, so each migration and its version bump are applied
            # together inside one explicit transaction.
            conn.executescript(f"BEGIN IMMEDIATE; {self.MIGRATIONS[number]}; PRAGMA user_version={number}; COMMIT;")
