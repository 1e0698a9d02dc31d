"""The store contract: what every Store does, written once and run against each implementation.

huey's StorageTests pattern: the tests live in a mixin over four hooks that open a store and look at
its data at rest; each implementation is one subclass below (a second store adds one more).
"""
from __future__ import annotations

import shutil
import sqlite3
import threading
import time
from itertools import product
from pathlib import Path
from typing import Any, Callable

import pytest
from cryptography.fernet import Fernet

import db
from db import SCHEMA_VERSION, Fenced, IllegalTransition, JobExists, SQLiteStore, Store, StoreError
from first_release import DATABASE_NAME, SECRET_VALUE, write_first_release_data_folder
from job import ALLOWED_TRANSITIONS, Job, JobStatus
from job_secrets import SecretBox


class Clock:
    """A clock the test moves by hand, so that submission order and times are exact."""

    def __init__(self, now: float = 1_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float = 1.0) -> float:
        self.now += seconds
        return self.now


def add(store: Store, data_dir: Path, job_id: str, *, kind: str = "pipeline", backend: str = "local",
        name: str | None = None, secrets: bytes | None = None) -> Job:
    return store.create_job(job_id, kind=kind, backend=backend, request={"name": name or job_id},
                            secrets=secrets, log_path=str(data_dir / "jobs" / job_id / "job.log"),
                            output_dir=str(data_dir / "jobs" / job_id))


def move_into(store: Store, job_id: str, status: JobStatus) -> None:
    """Bring the only job of a fresh store into a status by allowed moves."""
    if status is JobStatus.WAITING:
        return
    assert store.claim_next().id == job_id
    if status is not JobStatus.RUNNING:
        assert store.transition(job_id, status, expected=JobStatus.RUNNING)


class StoreContract:
    """Every behaviour of a Store that the queue, the routes and the platforms rely on."""

    def open_store(self, data_dir: Path, clock: Callable[[], float] = time.time) -> Store:
        """Open a store on the data of this data folder; a second call opens a second store on the same data.

        A store kept outside the data folder (a database server) gives each data folder a database of its own.
        """
        raise NotImplementedError

    def stored_bytes(self, data_dir: Path) -> bytes:
        """Return every byte the store keeps at rest for this data folder."""
        raise NotImplementedError

    def write_schema_version(self, data_dir: Path, version: int) -> None:
        """Mark the stored data of this (closed) data folder with a schema version."""
        raise NotImplementedError

    def open_first_release(self, folder: Path) -> Store:
        """Open a store holding the data of the first-release data folder written into folder."""
        raise NotImplementedError

    @pytest.fixture
    def data_dir(self, tmp_path: Path) -> Path:
        folder = tmp_path / "data"
        folder.mkdir()
        return folder.resolve()

    @pytest.fixture
    def clock(self) -> Clock:
        return Clock()

    @pytest.fixture
    def store(self, data_dir: Path, clock: Clock):
        store = self.open_store(data_dir, clock)
        yield store
        store.close()

    # -- creating and reading jobs ---------------------------------------------------------------

    def test_a_new_job_waits_with_its_request_paths_and_first_event(self, store, data_dir, clock):
        job = add(store, data_dir, "a", kind="training", backend="sagemaker")
        assert job == store.get("a")
        assert (job.kind, job.backend, job.status, job.phase) == ("training", "sagemaker", JobStatus.WAITING, "Queued")
        assert job.request == {"name": "a"} and job.submitted == job.updated == clock.now
        assert job.started is job.finished is job.external_id is job.failure_reason is None
        assert (job.progress, job.artifacts, job.details, job.attempts, job.cancel_requested) == ({}, {}, {}, 0, False)
        assert (job.log_path, job.output_dir) == (str(data_dir / "jobs" / "a" / "job.log"), str(data_dir / "jobs" / "a"))
        assert store.events("a") == [{"time": clock.now, "status": "WAITING", "phase": "Queued", "message": "submitted"}]

    def test_a_taken_id_is_refused_and_the_first_job_kept(self, store, data_dir):
        add(store, data_dir, "a", kind="pipeline")
        with pytest.raises(JobExists):
            add(store, data_dir, "a", kind="training")
        assert store.get("a").kind == "pipeline" and len(store.events("a")) == 1

    def test_a_failure_reason_holding_any_bytes_is_stored_on_every_store(self, store, data_dir):
        # A failure reason quotes the job's last lines: a NUL among them (PostgreSQL's text refuses one)
        # is kept as U+FFFD, so that the job's end is stored all the same.
        add(store, data_dir, "a", kind="pipeline")
        store.claim_next(["local"])
        store.update("a", phase="Training\x00", message="phase\x00")
        assert (store.get("a").phase, store.events("a")[-1]["message"]) == ("Training\ufffd", "phase\ufffd")
        assert store.transition("a", JobStatus.ERROR, failure_reason="exit 1: \x00\x01 bytes")
        job = store.get("a")
        assert (job.status, job.failure_reason) == (JobStatus.ERROR, "exit 1: \ufffd\x01 bytes")
        assert store.events("a")[-1]["message"] == "exit 1: \ufffd\x01 bytes"

    def test_an_unknown_job_is_none(self, store):
        assert store.get("missing") is None and store.events("missing") == []

    def test_jobs_are_listed_newest_first_and_filtered(self, store, data_dir, clock):
        times = {}
        for job_id, kind, name in [("a", "pipeline", "Alpha"), ("b", "training", "beta"),
                                   ("c", "pipeline", "ALPHABET"), ("d", "automl", "delta")]:
            times[job_id] = clock.advance()
            add(store, data_dir, job_id, kind=kind, name=name)
        store.claim_next()

        def ids(**filters: Any) -> list[str]:
            return [job.id for job in store.list_jobs(**filters)]

        assert ids() == ["d", "c", "b", "a"]
        assert ids(status="RUNNING") == ["a"]
        assert ids(kind="pipeline") == ["c", "a"]
        assert ids(kinds=["training", "automl"]) == ["d", "b"]
        assert ids(kinds=[]) == []
        assert ids(name_contains="alpha") == ["c", "a"]
        assert ids(submitted_from=times["b"], submitted_to=times["d"]) == ["c", "b"]
        assert ids(limit=2, offset=1) == ["c", "b"]

    def test_ids_are_found_by_their_start_and_no_character_is_a_pattern(self, store, data_dir):
        for job_id in ("job-a1", "job-a2", "job-b", "jobxa"):
            add(store, data_dir, job_id)
        assert store.find_by_prefix("job-a") == ["job-a1", "job-a2"]
        assert store.find_by_prefix("job-a", limit=1) == ["job-a1"]
        assert store.find_by_prefix("job_") == [] and store.find_by_prefix("job%") == []

    def test_jobs_in_a_status_come_oldest_first_and_by_backend(self, store, data_dir, clock):
        for job_id, backend in [("a", "local"), ("b", "sagemaker"), ("c", "local")]:
            clock.advance()
            add(store, data_dir, job_id, backend=backend)
        assert [job.id for job in store.jobs_in_status(JobStatus.WAITING)] == ["a", "b", "c"]
        assert [job.id for job in store.jobs_in_status(JobStatus.WAITING, backend="local")] == ["a", "c"]
        assert store.jobs_in_status(JobStatus.RUNNING) == []

    def test_counts_name_every_status(self, store, data_dir):
        add(store, data_dir, "a")
        add(store, data_dir, "b")
        store.claim_next()
        assert store.count_by_status() == {"WAITING": 1, "RUNNING": 1, "COMPLETED": 0, "ERROR": 0, "CANCELLED": 0}

    # -- claims ----------------------------------------------------------------------------------

    def test_a_claim_takes_the_oldest_waiting_job_of_the_named_backends(self, store, data_dir, clock):
        for job_id, backend in [("a", "sagemaker"), ("b", "local"), ("c", "local")]:
            clock.advance()
            add(store, data_dir, job_id, backend=backend)
        claimed = store.claim_next(backends=["local"])
        assert (claimed.id, claimed.status, claimed.phase, claimed.attempts) == ("b", JobStatus.RUNNING, "Starting", 1)
        assert claimed.started == clock.now
        assert store.claim_next().id == "a"
        assert store.claim_next(backends=["sagemaker"]) is None
        assert store.events("b")[-1]["status"] == "RUNNING"

    def test_a_job_is_claimed_once_however_many_threads_of_two_stores_race(self, store, data_dir):
        other = self.open_store(data_dir)
        for number in range(40):
            add(store, data_dir, f"job-{number:02d}")
        claimed: list[str] = []
        start = threading.Barrier(8)

        def worker(claimer: Store) -> None:
            start.wait()
            while (job := claimer.claim_next()) is not None:
                claimed.append(job.id)

        threads = [threading.Thread(target=worker, args=(store if number % 2 else other,)) for number in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        other.close()
        assert sorted(claimed) == [f"job-{number:02d}" for number in range(40)]
        assert {job.attempts for job in store.list_jobs(limit=100)} == {1}
        assert all([event["status"] for event in store.events(job_id)] == ["WAITING", "RUNNING"] for job_id in claimed)

    def test_a_job_asked_to_stop_is_never_claimed_again(self, store, data_dir):
        add(store, data_dir, "a")
        store.claim_next()
        store.request_cancel("a")
        # An interrupted job goes back to WAITING with the stop it was asked for.
        assert store.transition("a", JobStatus.WAITING, expected=JobStatus.RUNNING)
        assert store.claim_next() is None
        add(store, data_dir, "b")
        store.request_cancel("b")
        assert store.claim_next() is None

    # -- leases and fencing ----------------------------------------------------------------------

    def test_a_claim_names_its_executor_and_raises_the_lease_token(self, store, data_dir):
        add(store, data_dir, "a")
        first = store.claim_next(owner="exec-a")
        assert (first.owner, first.fence) == ("exec-a", 1)
        assert store.events("a")[-1]["message"] == "claimed by executor exec-a"
        assert store.transition("a", JobStatus.WAITING, fence=1)
        assert store.get("a").owner is None
        again = store.claim_next(owner="exec-b")
        assert (again.owner, again.fence) == ("exec-b", 2)

    def test_a_write_with_a_stale_token_is_refused_and_changes_nothing(self, store, data_dir):
        add(store, data_dir, "a")
        store.claim_next(owner="exec-a")
        store.transition("a", JobStatus.WAITING)
        store.claim_next(owner="exec-b")
        before = (store.get("a"), store.events("a"))
        for write in (lambda: store.transition("a", JobStatus.COMPLETED, fence=1),
                      lambda: store.update("a", phase="Training", fence=1),
                      lambda: store.merge_details("a", region="eu-west-1", fence=1)):
            with pytest.raises(Fenced, match="held by executor exec-b"):
                write()
        assert (store.get("a"), store.events("a")) == before
        store.update("a", phase="Training", fence=2)
        assert store.transition("a", JobStatus.COMPLETED, fence=2)

    def test_the_running_jobs_of_a_lapsed_lease_are_taken_over_with_a_new_token(self, store, data_dir, clock):
        for job_id in ("a", "b", "c"):
            add(store, data_dir, job_id)
        store.renew_lease("exec-a", 30)
        store.renew_lease("exec-b", 60)
        store.claim_next(owner="exec-a")
        store.claim_next(owner="exec-b")
        assert store.leases() == {"exec-a": clock.now + 30, "exec-b": clock.now + 60}
        assert store.take_over("exec-c") == []
        clock.advance(31)
        store.renew_lease("exec-c", 30)
        (taken, lost), = store.take_over("exec-c")
        assert (taken.id, taken.owner, taken.fence, taken.status, lost) == ("a", "exec-c", 2, JobStatus.RUNNING, "exec-a")
        assert store.events("a")[-1]["message"] == "taken over by executor exec-c: executor exec-a lost its lease"
        assert set(store.leases()) == {"exec-b", "exec-c"}
        with pytest.raises(Fenced):
            store.update("a", phase="Training", fence=1)
        assert [job.id for job in store.jobs_in_status(JobStatus.RUNNING, owner="exec-b")] == ["b"]
        assert store.get("c").owner is None and store.take_over("exec-c") == []

    def test_a_sole_executor_takes_over_every_other_owner_at_once(self, store, data_dir):
        add(store, data_dir, "a")
        add(store, data_dir, "b")
        store.renew_lease("exec-old", 3600)
        store.claim_next(owner="exec-old")
        store.claim_next(owner="exec-new")
        taken = store.take_over("exec-new", everyone_else=True)
        assert [(job.id, job.owner, lost) for job, lost in taken] == [("a", "exec-new", "exec-old")]
        assert "exec-old" not in store.leases()

    def test_a_lapsed_executors_jobs_go_to_one_taker_however_many_race(self, store, data_dir, clock):
        other = self.open_store(data_dir, clock)
        for number in range(20):
            add(store, data_dir, f"job-{number:02d}")
        while store.claim_next(owner="lost") is not None:
            pass
        taken: list[str] = []
        start = threading.Barrier(4)

        def taker(name: str, claimer: Store) -> None:
            claimer.renew_lease(name, 30)
            start.wait()
            taken.extend(job.id for job, _ in claimer.take_over(name))

        threads = [threading.Thread(target=taker, args=(f"exec-{n}", store if n % 2 else other)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        other.close()
        assert sorted(taken) == [f"job-{number:02d}" for number in range(20)]
        assert {job.fence for job in store.list_jobs(limit=100)} == {2}


    @pytest.mark.parametrize(("current", "to"), list(product(JobStatus, JobStatus)),
                             ids=lambda status: status.value)
    def test_the_transition_table_decides_every_move(self, store, data_dir, current, to):
        add(store, data_dir, "a")
        move_into(store, "a", current)
        events = len(store.events("a"))
        if to in ALLOWED_TRANSITIONS[current]:
            assert store.transition("a", to, message="moved") is True
            assert store.get("a").status is to
            assert store.events("a")[-1]["status"] == to.value and len(store.events("a")) == events + 1
        else:
            with pytest.raises(IllegalTransition):
                store.transition("a", to)
            assert store.get("a").status is current and len(store.events("a")) == events

    def test_a_move_from_a_status_the_job_has_left_is_refused_quietly(self, store, data_dir):
        add(store, data_dir, "a")
        assert store.transition("a", JobStatus.ERROR, expected=JobStatus.RUNNING) is False
        assert store.get("a").status is JobStatus.WAITING and len(store.events("a")) == 1

    def test_an_unknown_job_cannot_move(self, store):
        with pytest.raises(KeyError):
            store.transition("missing", JobStatus.RUNNING)

    def test_two_movers_of_one_job_never_both_win(self, store, data_dir):
        other = self.open_store(data_dir)
        job_ids = [f"job-{number:02d}" for number in range(20)]
        for job_id in job_ids:
            add(store, data_dir, job_id)
        while store.claim_next() is not None:
            pass
        for job_id in job_ids:
            start = threading.Barrier(2)
            won: dict[JobStatus, bool] = {}

            def move(mover: Store, to: JobStatus) -> None:
                start.wait()
                won[to] = mover.transition(job_id, to, expected=JobStatus.RUNNING)

            threads = [threading.Thread(target=move, args=(store, JobStatus.COMPLETED)),
                       threading.Thread(target=move, args=(other, JobStatus.ERROR))]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            (winner,) = [to for to, moved in won.items() if moved]
            assert len(won) == 2 and store.get(job_id).status is winner
            assert [event["status"] for event in store.events(job_id)] == ["WAITING", "RUNNING", winner.value]
        other.close()

    def test_a_final_status_sets_the_end_the_reason_and_drops_the_secrets(self, store, data_dir, clock):
        add(store, data_dir, "a", secrets=b"sealed")
        store.claim_next()
        clock.advance()
        assert store.transition("a", JobStatus.ERROR, failure_reason="out of memory")
        job = store.get("a")
        assert (job.phase, job.failure_reason, job.finished, job.has_secrets) == ("Failed", "out of memory", clock.now, False)
        assert store.secrets("a") is None
        assert store.events("a")[-1] == {"time": clock.now, "status": "ERROR", "phase": "Failed",
                                         "message": "out of memory"}

    def test_a_requeued_job_keeps_its_first_start_and_counts_its_attempts(self, store, data_dir, clock):
        add(store, data_dir, "a")
        started = store.claim_next().started
        clock.advance()
        assert store.transition("a", JobStatus.WAITING, message="interrupted; retried")
        job = store.get("a")
        assert (job.status, job.phase, job.started, job.finished) == (JobStatus.WAITING, "Queued", started, None)
        clock.advance()
        again = store.claim_next()
        assert (again.id, again.started, again.attempts) == ("a", started, 2)

    # -- cancelling ------------------------------------------------------------------------------

    def test_a_cancelled_waiting_job_ends_at_once_with_a_start_and_an_end(self, store, data_dir, clock):
        add(store, data_dir, "a")
        clock.advance()
        assert store.request_cancel("a") is JobStatus.WAITING
        job = store.get("a")
        assert (job.status, job.phase, job.started, job.finished) == (JobStatus.CANCELLED, "Cancelled", clock.now, clock.now)

    def test_a_cancelled_running_job_is_flagged_and_its_end_is_cancelled(self, store, data_dir):
        add(store, data_dir, "a")
        store.claim_next()
        assert store.request_cancel("a") is JobStatus.RUNNING
        job = store.get("a")
        assert job.status is JobStatus.RUNNING and job.cancel_requested
        # The stop was answered "cancelled": that answer holds whatever the work reached first.
        assert store.transition("a", JobStatus.COMPLETED, expected=JobStatus.RUNNING)
        assert store.get("a").status is JobStatus.CANCELLED

    def test_cancelling_an_ended_or_unknown_job_changes_nothing(self, store, data_dir):
        add(store, data_dir, "a")
        move_into(store, "a", JobStatus.COMPLETED)
        assert store.request_cancel("a") is JobStatus.COMPLETED
        assert store.get("a").status is JobStatus.COMPLETED and not store.get("a").cancel_requested
        assert store.request_cancel("missing") is None

    # -- job fields, notes, deletion -------------------------------------------------------------

    def test_updates_set_fields_and_a_new_phase_is_an_event(self, store, data_dir, clock):
        add(store, data_dir, "a")
        store.claim_next()
        clock.advance()
        store.update("a", phase="Training", message="epoch 1", external_id="ext-1", pid="42",
                     progress={"epoch": 1}, artifacts={"model": "m.pt"})
        job = store.get("a")
        assert (job.phase, job.external_id, job.pid, job.progress, job.artifacts, job.updated) == \
            ("Training", "ext-1", "42", {"epoch": 1}, {"model": "m.pt"}, clock.now)
        assert store.events("a")[-1] == {"time": clock.now, "status": "RUNNING", "phase": "Training", "message": "epoch 1"}
        store.update("a", phase="Training")
        assert len(store.events("a")) == 3

    def test_an_update_of_an_unknown_field_or_job_is_refused(self, store, data_dir):
        add(store, data_dir, "a")
        with pytest.raises(ValueError, match="status"):
            store.update("a", status="COMPLETED")
        with pytest.raises(KeyError):
            store.update("missing", phase="Training")
        assert store.get("a").status is JobStatus.WAITING

    def test_details_are_merged(self, store, data_dir):
        add(store, data_dir, "a")
        store.merge_details("a", region="eu-west-1", attempts={"first": 1})
        store.merge_details("a", instance="ml.m5.large")
        assert store.get("a").details == {"region": "eu-west-1", "attempts": {"first": 1}, "instance": "ml.m5.large"}

    def test_a_note_is_an_event_that_moves_nothing(self, store, data_dir):
        add(store, data_dir, "a")
        store.add_note("a", "waiting for a GPU")
        assert store.events("a")[-1] | {"time": 0} == {"time": 0, "status": "WAITING", "phase": "Queued",
                                                        "message": "waiting for a GPU"}
        with pytest.raises(KeyError):
            store.add_note("missing", "nobody")

    def test_only_an_ended_job_is_deleted_and_its_events_and_metrics_with_it(self, store, data_dir):
        add(store, data_dir, "a")
        store.claim_next()
        store.add_metrics("a", [("loss", 0.5, 1)])
        assert store.delete_job("a") is False
        store.transition("a", JobStatus.COMPLETED)
        assert store.delete_job("a") is True
        assert (store.get("a"), store.events("a"), store.metric_history("a")) == (None, [], [])
        assert store.delete_job("a") is False

    # -- metrics ---------------------------------------------------------------------------------

    def test_metrics_keep_their_history_and_latest_values(self, store, data_dir, clock):
        add(store, data_dir, "a")
        add(store, data_dir, "b")
        store.add_metrics("a", [("loss", 0.9, 1), ("acc", None, 1)])
        store.add_metrics("a", [("loss", 0.4, 2)], when=5.0)
        store.add_metrics("b", [("loss", 0.1, 1)])
        assert store.latest_metrics("a") == {"acc": None, "loss": 0.4}
        assert store.metric_history("a") == [
            {"name": "loss", "value": 0.9, "step": 1, "time": clock.now},
            {"name": "acc", "value": None, "step": 1, "time": clock.now},
            {"name": "loss", "value": 0.4, "step": 2, "time": 5.0}]
        assert store.latest_metrics_of(["a", "b", "c"]) == {"a": {"acc": None, "loss": 0.4}, "b": {"loss": 0.1}, "c": {}}
        assert store.latest_metrics_of([]) == {}

    def test_a_job_has_a_bounded_number_of_metric_names(self, store, data_dir):
        add(store, data_dir, "a")
        store.add_metrics("a", [(f"m{number}", 1.0, 1) for number in range(3 * db.MAX_METRIC_NAMES_PER_JOB)])
        assert len(store.latest_metrics("a")) == db.MAX_METRIC_NAMES_PER_JOB

    def test_a_job_has_a_bounded_metric_history_that_keeps_its_ends(self, store, data_dir, monkeypatch):
        monkeypatch.setattr(db, "MAX_METRIC_ROWS_PER_JOB", 50)
        add(store, data_dir, "a")
        for step in range(1, 301):
            store.add_metrics("a", [("loss", 1.0 / step, step)])
        history = store.metric_history("a")
        assert len(history) <= 50 and (history[0]["step"], history[-1]["step"]) == (1, 300)

    # -- MLOps records ---------------------------------------------------------------------------

    def test_records_keep_their_creation_time_and_are_listed_newest_first(self, store, clock):
        first = store.put_record("m1", type="model", name="first", status="Creating", payload={"url": "s3://b/1"})
        clock.advance()
        store.put_record("m2", type="model", name="second", status="Created", payload={}, job_id="job-1")
        store.put_record("e1", type="endpoint", name="first", status="Creating", payload={})
        clock.advance()
        updated = store.put_record("m1", type="model", name="first", status="Created", payload={"url": "s3://b/2"})
        assert (updated.created, updated.updated, updated.status, updated.payload) == \
            (first.created, clock.now, "Created", {"url": "s3://b/2"})
        assert store.get_record("m1") == updated and store.get_record("missing") is None
        assert [record.id for record in store.list_records("model")] == ["m2", "m1"]
        assert [record.id for record in store.list_records("model", limit=1)] == ["m2"]
        assert store.get_record("m2").job_id == "job-1"

    def test_a_deleted_record_is_gone(self, store):
        store.put_record("m1", type="model", name="first", status="Created", payload={})
        assert store.delete_record("m1") is True
        assert store.get_record("m1") is None and store.list_records("model") == []
        assert store.delete_record("m1") is False

    # -- secrets at rest -------------------------------------------------------------------------

    def test_sealed_secrets_are_kept_sealed_and_opened_with_the_key_only(self, store, data_dir):
        box = SecretBox(Fernet.generate_key())
        secret = "s3cret-value-9d2e41"
        job = add(store, data_dir, "a", secrets=box.seal({"password": secret}))
        assert job.has_secrets and box.open(store.secrets("a")) == {"password": secret}
        store.check_writable()
        assert secret.encode() not in self.stored_bytes(data_dir)
        assert store.secrets("missing") is None

    # -- the change count behind cached status answers -------------------------------------------

    def test_every_write_changes_the_count_and_no_read_does(self, store, data_dir):
        writes = [
            lambda: add(store, data_dir, "a"),
            lambda: add(store, data_dir, "b"),
            lambda: store.claim_next(),
            lambda: store.update("a", phase="Training"),
            lambda: store.merge_details("a", region="eu-west-1"),
            lambda: store.add_note("a", "note"),
            lambda: store.add_metrics("a", [("loss", 0.5, 1)]),
            lambda: store.put_record("m1", type="model", name="m", status="Created", payload={}),
            lambda: store.delete_record("m1"),
            lambda: store.request_cancel("b"),
            lambda: store.transition("a", JobStatus.COMPLETED),
            lambda: store.delete_job("a"),
            lambda: store.check_writable(),
        ]
        reads = [
            lambda: store.get("b"), lambda: store.list_jobs(), lambda: store.find_by_prefix("b"),
            lambda: store.jobs_in_status(JobStatus.WAITING), lambda: store.count_by_status(),
            lambda: store.events("b"), lambda: store.latest_metrics("b"), lambda: store.latest_metrics_of(["b"]),
            lambda: store.metric_history("b"), lambda: store.secrets("b"), lambda: store.get_record("m1"),
            lambda: store.list_records("model"), lambda: store.schema_version(),
        ]
        for write in writes:
            before = store.changes
            write()
            assert store.changes != before
        for read in reads:
            before = store.changes
            read()
            assert store.changes == before

    # -- schema ----------------------------------------------------------------------------------

    def test_the_schema_is_the_newest_and_every_migration_is_written(self, store):
        assert store.schema_version() == SCHEMA_VERSION
        assert sorted(type(store).MIGRATIONS) == list(range(1, SCHEMA_VERSION + 1))

    def test_data_of_a_newer_schema_is_refused(self, store, data_dir):
        add(store, data_dir, "a")
        store.close()
        self.write_schema_version(data_dir, SCHEMA_VERSION + 1)
        with pytest.raises(StoreError, match="newer"):
            self.open_store(data_dir)

    def test_a_first_release_data_folder_moved_elsewhere_keeps_every_row(self, tmp_path):
        write_first_release_data_folder(tmp_path / "old" / "data")
        new = tmp_path / "new" / "data"
        shutil.copytree(tmp_path / "old" / "data", new)
        shutil.rmtree(tmp_path / "old")
        store = self.open_first_release(new)
        try:
            assert store.schema_version() == SCHEMA_VERSION
            assert {job.id: job.status for job in store.list_jobs()} == {
                "waiting": JobStatus.WAITING, "running": JobStatus.RUNNING, "completed": JobStatus.COMPLETED}
            completed = store.get("completed")
            assert (completed.log_path, completed.output_dir) == \
                (str(new / "jobs" / "completed" / "job.log"), str(new / "jobs" / "completed"))
            assert (completed.started, completed.finished, completed.request) == (2, 3, {"name": "completed"})
            assert store.latest_metrics("completed") == {"loss": 0.4}
            assert store.get_record("model-1").payload == {"url": "s3://b/m"}
            assert store.events("waiting")[0]["message"] == "submitted"
            opened = SecretBox.from_config(None, new).open(store.secrets("running"))
            assert opened == {"password": SECRET_VALUE}
            assert store.claim_next().id == "waiting"
            assert store.transition("running", JobStatus.COMPLETED) and store.secrets("running") is None
        finally:
            store.close()


class TestSQLiteStore(StoreContract):
    """The embedded store: one SQLite file in the data folder."""

    def open_store(self, data_dir: Path, clock: Callable[[], float] = time.time) -> Store:
        return SQLiteStore(data_dir / DATABASE_NAME, clock=clock)

    def stored_bytes(self, data_dir: Path) -> bytes:
        # The database and its write-ahead log: a committed row may still be in either.
        return b"".join(path.read_bytes() for path in sorted(data_dir.glob(DATABASE_NAME + "*")))

    def write_schema_version(self, data_dir: Path, version: int) -> None:
        with sqlite3.connect(data_dir / DATABASE_NAME) as conn:
            conn.execute(f"PRAGMA user_version={int(version)}")
        conn.close()

    def open_first_release(self, folder: Path) -> Store:
        return self.open_store(folder)


class TestPostgresStore(StoreContract):
    """The shared store: a database of a throwaway PostgreSQL cluster, one per data folder."""

    @pytest.fixture(autouse=True)
    def cluster(self, postgres_cluster):
        self.postgres = postgres_cluster
        self.urls: dict[Path, str] = {}

    def url(self, data_dir: Path) -> str:
        if data_dir not in self.urls:
            self.urls[data_dir] = self.postgres.create_database()
        return self.urls[data_dir]

    def open_store(self, data_dir: Path, clock: Callable[[], float] = time.time) -> Store:
        from db_postgres import PostgresStore

        return PostgresStore(self.url(data_dir), data_dir, clock=clock)

    def stored_bytes(self, data_dir: Path) -> bytes:
        return b"".join(path.read_bytes() for path in self.postgres.database_files(self.url(data_dir)))

    def write_schema_version(self, data_dir: Path, version: int) -> None:
        import psycopg

        with psycopg.connect(self.url(data_dir), autocommit=True) as conn:
            conn.execute("UPDATE schema_version SET version = %s", (version,))

    def open_first_release(self, folder: Path) -> Store:
        from app import main

        assert main(["migrate-store", "--data-dir", str(folder), "--to", self.url(folder)]) == 0
        return self.open_store(folder)
