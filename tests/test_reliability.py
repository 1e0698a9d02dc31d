"""Reliability under faults: kill -9 mid-flight, injected AWS throttling and connection errors, a full
disk, a locked database. No job is lost, none runs or launches twice, none is left stuck, and the
API answers a clear error instead of a crash or a half-created job.

Loopback only and bounded: seeded random moments, fixed job counts, every wait with a timeout.
"""
from __future__ import annotations

import json
import random
import sqlite3
import subprocess
import threading
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

from unittest import mock

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError, ConnectionClosedError
from moto.server import ThreadedMotoServer

import db
from job import JobStatus
from aws_fixtures import (aws, aws_setup, backend, bundled_scripts, clients, config, context,  # noqa: F401
                          reporters, new_running_job, running_jobs, set_training_state, store,
                          training_request, write_dataset)
from conftest import pipeline_body, wait_for, write_pipeline
from mlops.job_requests import request_of
from mlops.aws import ClientFactory

FINAL = {"COMPLETED", "ERROR", "CANCELLED"}
RESTART_REASON = "executor restarted while the job was running"
REGION = "us-east-1"
BUCKET = "essedum-reliability"
ROLE_ARN = "arn:aws:iam::123456789012:role/EssedumTraining"
SEED = 20241124


def job_rows(data: Path) -> dict[str, tuple[str, str | None, str | None]]:
    """Read every job's (status, failure_reason, external_id) straight from the database file."""
    conn = sqlite3.connect(data / "executor.sqlite3")
    try:
        return {row[0]: row[1:] for row in conn.execute("SELECT id, status, failure_reason, external_id FROM jobs")}
    finally:
        conn.close()


def kill_at_random_moments(service, data: Path, rng: random.Random, kills: int, args: list[str],
                           env: dict[str, str] | None = None):
    """Kill -9 the running service `kills` times at seeded random moments, restarting it each time."""
    proc = service(data, args=args, env=env)
    for _ in range(kills):
        time.sleep(rng.uniform(0.05, 0.8))
        proc.kill()
        proc = service(data, args=args, env=env)
    return proc


def wait_all_final(data: Path, ids: list[str], timeout: float) -> dict[str, tuple[str, str | None, str | None]]:
    """Wait until every job has ended; on timeout, fail naming the jobs that had not."""
    try:
        return wait_for(lambda: (rows := job_rows(data)) and all(rows[i][0] in FINAL for i in ids) and rows,
                        timeout=timeout, interval=0.2)
    except AssertionError:
        conn = sqlite3.connect(data / "executor.sqlite3")
        stuck = conn.execute("SELECT id, status, phase, external_id, attempts, details FROM jobs"
                             " WHERE status NOT IN ('COMPLETED', 'ERROR', 'CANCELLED')").fetchall()
        events = {row[0]: conn.execute("SELECT status, phase, message FROM job_events WHERE job_id = ? ORDER BY id",
                                       (row[0],)).fetchall() for row in stuck[:3]}
        conn.close()
        raise AssertionError(f"{len(stuck)} job(s) never ended: {stuck[:3]} {events}") from None


# -- kill -9 ------------------------------------------------------------------------------------


def test_kill_9_at_random_moments_loses_no_local_job_and_runs_none_twice(service, tmp_path):
    data = tmp_path / "data"
    # Each run appends a line to a file of its job's folder (all a sandboxed job may write): a job run
    # twice shows two lines.
    script = ("import os, time\nopen(os.path.join(os.environ['SM_OUTPUT_DATA_DIR'], 'runs'), 'a').write('run\\n')\n"
              "time.sleep(0.05)\n")
    write_pipeline(data / "storage", "quick", script)
    first = service(data, args=["--workers", "4"])
    ids = []
    for number in range(50):
        status, body = first.request("POST", "/execute", pipeline_body("quick", "python pipe1.py"))
        assert status == 201, body
        ids.append(body["task_id"])
    first.kill()  # the first of four kills: right after the last submission, while jobs run
    kill_at_random_moments(service, data, random.Random(SEED), kills=3, args=["--workers", "4"])

    rows = wait_all_final(data, ids, timeout=90)
    assert set(rows) == set(ids)  # none lost, none added
    for job_id in ids:
        status, reason, _ = rows[job_id]
        marker = data / "jobs" / job_id / "output" / "data" / "runs"
        runs_of_job = marker.read_text().count("run") if marker.exists() else 0
        if status == "COMPLETED":
            assert runs_of_job == 1, (job_id, runs_of_job)
        else:  # interrupted by a kill: ended with the reason, not run again
            assert status == "ERROR" and reason.startswith(RESTART_REASON) and runs_of_job <= 1, (job_id, status, reason)
    assert Counter(status for status, _, _ in rows.values())["COMPLETED"] >= 25


@pytest.fixture
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    # moto keeps its state per process, not per server: start from an empty account
    urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"), timeout=10).close()
    boto3.client("s3", endpoint_url=url, region_name=REGION, aws_access_key_id="testing",
                 aws_secret_access_key="testing").create_bucket(Bucket=BUCKET)
    yield url
    server.stop()


@pytest.fixture
def created_training_jobs(monkeypatch: pytest.MonkeyPatch) -> Counter:
    """Count CreateTrainingJob calls that reach moto, by name (moto overwrites a duplicate silently)."""
    from moto.sagemaker.models import SageMakerModelBackend

    created: Counter = Counter()
    lock = threading.Lock()
    original = SageMakerModelBackend.create_training_job

    def counting(self, *args: Any, **kwargs: Any):
        with lock:
            created[kwargs.get("training_job_name") or args[0]] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SageMakerModelBackend, "create_training_job", counting)
    return created


def sagemaker_env(url: str) -> dict[str, str]:
    return {"AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION, "EXECUTOR_BACKEND": "sagemaker", "EXECUTOR_S3_BUCKET": BUCKET,
            "EXECUTOR_SAGEMAKER_ROLE_ARN": ROLE_ARN, "EXECUTOR_MONITOR_INTERVAL": "0.2",
            "EXECUTOR_TRAINING_IMAGE": "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.5-gpu-py311"}


def test_kill_9_at_random_moments_launches_each_sagemaker_job_once(service, tmp_path, moto_url,
                                                                      created_training_jobs):
    data = tmp_path / "data"
    env = sagemaker_env(moto_url)
    write_pipeline(data / "storage", "Demo/pipe", "print('pipeline')\n")
    first = service(data, env=env, args=["--workers", "4"])
    ids = []
    for number in range(50):
        status, body = first.request("POST", "/execute",
                                     pipeline_body("Demo/pipe", f"python pipe1.py --run {number}"))
        assert status == 201, body
        ids.append(body["task_id"])
    first.kill()
    kill_at_random_moments(service, data, random.Random(SEED + 1), kills=3, args=["--workers", "4"], env=env)

    rows = wait_all_final(data, ids, timeout=90)
    assert set(rows) == set(ids)
    assert {status for status, _, _ in rows.values()} == {"COMPLETED"}, Counter(r[:2] for r in rows.values())
    names = [external_id for _, _, external_id in rows.values()]
    assert len(set(names)) == 50
    assert created_training_jobs == Counter({name: 1 for name in names})


# -- injected AWS faults ------------------------------------------------------------------------


class _Body:
    def __init__(self, data: bytes):
        self.data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.data


class FaultInjector:
    """A before-send handler that fails a seeded 30% of AWS attempts: throttled, or the connection dropped.

    The request never reaches the server, as when AWS throttles or the network fails before sending.
    """

    def __init__(self, rate: float = 0.3, seed: int = SEED):
        self.rate = rate
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.injected: Counter = Counter()
        self.attempts: Counter = Counter()

    def session(self, **kwargs: Any) -> boto3.session.Session:
        session = boto3.session.Session(**kwargs)
        session.events.register("before-send", self)
        return session

    def __call__(self, request: Any, event_name: str, **_: Any) -> AWSResponse | None:
        _, service, operation = event_name.split(".", 2)
        with self.lock:
            self.attempts[operation] += 1
            draw = self.rng.random()
            if draw >= self.rate:
                return None
            kind = "connection" if draw < self.rate / 2 else "throttle"
            self.injected[(operation, kind)] += 1
        if kind == "connection":
            raise ConnectionClosedError(endpoint_url=request.url)
        if service == "s3":
            return AWSResponse(request.url, 503, {"Content-Type": "application/xml"}, _Body(
                b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"))
        return AWSResponse(request.url, 400, {"Content-Type": "application/x-amz-json-1.1",
                                              "x-amzn-RequestId": str(uuid.uuid4())},
                           _Body(json.dumps({"__type": "ThrottlingException", "message": "Rate exceeded"}).encode()))


def test_throttling_and_connection_errors_on_30_percent_of_aws_calls_change_no_outcome(
        tmp_path, moto_url, created_training_jobs, monkeypatch):
    for name, value in sagemaker_env(moto_url).items():
        if name.startswith("AWS_"):
            monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    faults = FaultInjector()
    fault_clients = ClientFactory(region=REGION, session_factory=faults.session)
    storage = tmp_path / "storage"
    write_pipeline(storage, "Demo/pipe", "print('pipeline')\n")
    from app import create_app

    app = create_app({"data_dir": str(tmp_path / "data"), "local_storage_root": str(storage), "backend": "sagemaker",
                      "workers": "4", "s3_bucket": BUCKET, "sagemaker_role_arn": ROLE_ARN, "aws_region": REGION,
                      "training_image": sagemaker_env(moto_url)["EXECUTOR_TRAINING_IMAGE"],
                      "monitor_interval": "0.1", "shutdown_timeout": "5"}, clients=fault_clients)
    executor = app.config["EXECUTOR"]
    executor.queue.start()
    try:
        client = app.test_client()
        ids = []
        for number in range(20):
            answer = client.post("/execute", json=pipeline_body("Demo/pipe", f"python pipe1.py --run {number}"))
            assert answer.status_code == 201, answer.get_json()
            ids.append(answer.get_json()["task_id"])
        jobs = wait_for(lambda: (found := [executor.store.get(i) for i in ids])
                        and all(job.status.is_final for job in found) and found, timeout=90, interval=0.2)
    finally:
        executor.queue.stop(timeout=5)
        executor.store.close()
    assert [job.status.value for job in jobs] == ["COMPLETED"] * 20, [job.failure_reason for job in jobs]
    assert created_training_jobs == Counter({job.external_id: 1 for job in jobs})
    injected = sum(faults.injected.values())
    attempts = sum(faults.attempts.values())
    assert 0.2 < injected / attempts < 0.4, (injected, attempts)
    operations = {operation for operation, _ in faults.injected}
    assert {"CreateTrainingJob", "DescribeTrainingJob", "HeadObject"} <= operations, faults.injected
    assert {kind for _, kind in faults.injected} == {"connection", "throttle"}


# -- a locked database, a full disk -------------------------------------------------------------


def stored_job_count(app) -> int:
    return sum(app.config["EXECUTOR"].store.count_by_status().values())


def test_a_database_locked_longer_than_the_busy_timeout_is_a_clear_503_and_stores_nothing(
        make_app, data_dir, monkeypatch):
    monkeypatch.setattr(db, "BUSY_TIMEOUT_MS", 300)
    write_pipeline(data_dir / "storage", "quick", "print('hi')\n")
    app = make_app()
    client = app.test_client()
    before = client.post("/execute", json=pipeline_body("quick", "python pipe1.py")).get_json()["task_id"]
    holder = sqlite3.connect(data_dir / "executor.sqlite3", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        began = time.monotonic()
        answer = client.post("/execute", json=pipeline_body("quick", "python pipe1.py"))
        waited = time.monotonic() - began
        status = client.get(f"/execute/{before}/getStatus")  # readers are not blocked (WAL)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert answer.status_code == 503
    assert answer.is_json and "job store is unavailable" in answer.get_json()["error"]
    assert "locked" in answer.get_json()["error"]
    assert waited < 5
    assert status.status_code == 200
    assert stored_job_count(app) == 1
    assert client.post("/execute", json=pipeline_body("quick", "python pipe1.py")).status_code == 201


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs: a disk that can really fill up (needs root and mount; skipped elsewhere)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {result.stderr.strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(folder: Path) -> Path:
    """Write until the disk is full; return the filler file."""
    filler = folder / "filler"
    with open(filler, "wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError:
            pass
    return filler


def test_a_full_disk_is_a_clear_503_and_nothing_half_created(small_disk, make_app):
    data = small_disk / "data"
    write_pipeline(data / "storage", "quick", "print('hi')\n")
    app = make_app(data_dir=str(data))
    client = app.test_client()
    filler = fill(small_disk)
    accepted, refused = 0, None
    for _ in range(300):  # the WAL's free pages absorb a few writes before the disk shows as full
        answer = client.post("/execute", json=pipeline_body("quick", "python pipe1.py"))
        if answer.status_code != 201:
            refused = answer
            break
        accepted += 1
    assert refused is not None, "the disk never filled up"
    assert refused.status_code == 503 and refused.is_json
    assert "job store is unavailable" in refused.get_json()["error"] and "full" in refused.get_json()["error"]
    filler.unlink()
    assert stored_job_count(app) == accepted
    assert client.post("/execute", json=pipeline_body("quick", "python pipe1.py")).status_code == 201


def test_a_monitor_cycle_cut_short_at_a_completed_job_ends_it_the_next_cycle(
        backend, store, bundled_scripts, tmp_path):  # noqa: F811
    dataset = write_dataset(tmp_path / "data" / "storage" / "digits")
    job = new_running_job(store, "training", backend.check("training", request_of("training", training_request(dataset, bundled_scripts)),
                                                           {}), tmp_path)
    backend.run(job, context(store, job))
    name = store.get(job.id).external_id
    set_training_state(name, "InProgress", "Training")
    backend.follow(reporters(store))
    set_training_state(name, "Completed", "Completed")
    throttled = ClientError({"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}, "FilterLogEvents")
    # The final log read is throttled after the job was seen Completed, as a kill -9 there would cut it.
    with mock.patch.object(backend.training.logs, "tail_job", side_effect=throttled):
        backend.follow(reporters(store))
    assert store.get(job.id).status.value == "RUNNING"
    backend.training._backoff_until = 0.0  # the back-off is tested elsewhere; here only the next cycle matters
    backend.follow(reporters(store))
    assert store.get(job.id).status.value == "COMPLETED"


def test_a_run_let_go_while_the_store_is_locked_is_decided_by_the_recovery_rule_once_it_answers(
        make_app, data_dir, monkeypatch):
    # A lease lapses because the store does not answer; the run this executor then stops must not end ERROR
    # for that: once the store answers, the recovery rule decides (here: asked to be retried, so queued again).
    monkeypatch.setattr(db, "BUSY_TIMEOUT_MS", 300)
    write_pipeline(data_dir / "storage", "slow", "import time\nprint('sleeping now', flush=True)\ntime.sleep(60)\n")
    app = make_app(workers="1")
    queue = app.config["EXECUTOR"].queue
    client = app.test_client()
    job_id = client.post("/execute", json=pipeline_body("slow", "python pipe1.py",
                                                        configs={"retry_on_restart": True})).get_json()["task_id"]
    queue.start()
    log = data_dir / "logs" / "jobs" / f"{job_id}.log"
    wait_for(lambda: log.exists() and "sleeping now" in log.read_text(errors="replace"), timeout=30)
    holder = sqlite3.connect(data_dir / "executor.sqlite3", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        queue._let_go_of_runs()  # what the lease guard does once the lease has lapsed
        wait_for(lambda: queue.busy_workers() == 0, timeout=20)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    queue._settle_unfinished()
    job = queue.store.get(job_id)
    assert job.status in (JobStatus.WAITING, JobStatus.RUNNING) and job.failure_reason is None, job
    assert job.attempts <= 2
