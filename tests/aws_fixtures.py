"""Fixtures and helpers of the SageMaker tests: moto for AWS, a real job store, a real backend.

Import the fixtures a test module uses by name (`from aws_fixtures import aws, backend`); the
lead owns conftest.py.
"""
from __future__ import annotations

import json
import os
import stat
import sys
import textwrap
import uuid
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

import boto3
import pytest
from moto import mock_aws

from config import load_config
from db import SQLiteStore
from job import Job, JobStatus
from mlops.job_requests import Checked
from mlops.reporter import JobReporter
from mlops.aws import ClientFactory

REGION = "us-east-1"
ACCOUNT = "123456789012"
BUCKET = "essedum-test-bucket"
ROLE_NAME = "EssedumTrainingRole"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/{ROLE_NAME}"
IMAGE = f"763104351884.dkr.ecr.{REGION}.amazonaws.com/pytorch-training:2.5-gpu-py311"
LOG_GROUP = "/aws/sagemaker/TrainingJobs"
ROOT = Path(__file__).resolve().parents[1]

@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fake AWS credentials and region, and moto answering every AWS call."""
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws():
        yield


def make_config(tmp_path: Path, **overrides: Any):
    """Return a sagemaker-backend configuration on a temporary data folder."""
    settings = {"data_dir": str(tmp_path / "data"), "backend": "sagemaker", "aws_region": REGION,
                "s3_bucket": BUCKET, "sagemaker_role_arn": ROLE_ARN, "training_image": IMAGE,
                "monitor_interval": "0", **overrides}
    return load_config(environ={}, overrides=settings)


@pytest.fixture
def config(tmp_path: Path):
    return make_config(tmp_path)


_sessions: dict[tuple, boto3.session.Session] = {}


def shared_session(**kwargs: Any) -> boto3.session.Session:
    """Return one boto3 session per argument set for the whole run: loading models is the slow part."""
    key = tuple(sorted(kwargs.items()))
    if key not in _sessions:
        _sessions[key] = boto3.session.Session(**kwargs)
    return _sessions[key]


def allow_all_simulations(params: dict[str, Any], **_: Any) -> tuple[Any, dict[str, Any]]:
    """Answer SimulatePrincipalPolicy (a before-call handler) with every action allowed."""
    form = params["body"]  # IAM's query protocol: ActionNames.member.1, ActionNames.member.2, ...
    members = sorted((key for key in form if key.startswith("ActionNames.member.")),
                     key=lambda key: int(key.rsplit(".", 1)[1]))
    names = [form[key] for key in members]
    return (SimpleNamespace(status_code=200, headers={}),
            {"EvaluationResults": [{"EvalActionName": name, "EvalResourceName": "*", "EvalDecision": "allowed"}
                                   for name in names], "IsTruncated": False,
             "ResponseMetadata": {"HTTPStatusCode": 200, "HTTPHeaders": {}, "RetryAttempts": 0}})


@pytest.fixture
def clients(aws) -> ClientFactory:
    factory = ClientFactory(region=REGION, session_factory=shared_session)
    # moto 5 lacks IAM's policy simulator (NotImplementedError): an identity allowed everything answers
    # instead; tests of a denied permission stub the simulator with botocore's Stubber.
    factory.client("iam").meta.events.register("before-call.iam.SimulatePrincipalPolicy", allow_all_simulations)
    return factory


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    job_store = SQLiteStore(tmp_path / "data" / "jobs.db")
    yield job_store
    job_store.close()


@pytest.fixture
def aws_setup(clients: ClientFactory) -> None:
    """Create the bucket and the execution role (trusted by SageMaker) in moto."""
    clients.client("s3").create_bucket(Bucket=BUCKET)
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                      "Principal": {"Service": "sagemaker.amazonaws.com"}}]}
    clients.client("iam").create_role(RoleName=ROLE_NAME, AssumeRolePolicyDocument=json.dumps(trust))


@pytest.fixture
def backend(config, clients: ClientFactory, store: SQLiteStore, aws_setup):
    """The SageMaker platform, driven directly (no queue)."""
    return sagemaker_platform(config, clients, store)


def sagemaker_platform(config, clients: ClientFactory, store: SQLiteStore, **options: Any):
    from mlops.records import RecordBook
    from mlops.sagemaker.platform import SageMakerPlatform

    return SageMakerPlatform(config, RecordBook(store), clients, **options)


@pytest.fixture
def bundled_scripts() -> Path:
    """The bundled training_scripts folder: the only code the executor describes with --describe."""
    return ROOT / "training_scripts"


def write_dataset(root: Path, files: int = 3) -> Path:
    """Write a small dataset folder with a metadata CSV."""
    root.mkdir(parents=True, exist_ok=True)
    rows = ["filename,label"]
    for index in range(files):
        name = f"img_{index:05d}.png"
        (root / name).write_bytes(b"\x89PNG fake image %d" % index)
        rows.append(f"{name},{'cat' if index % 2 else 'dog'}")
    (root / "metadata.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


def training_request(dataset_dir: Path, source_dir: Path, **changes: Any) -> dict[str, Any]:
    """Return a normalised training request as the lead's route builds it."""
    request = {"name": "digits run", "dataset": "digits", "dataset_path": str(dataset_dir), "metadata_file": None,
               "hyperparameters": {"epochs": "3"}, "instance_type": None, "instance_count": 1,
               "max_runtime_seconds": 3600, "spot": False, "entry_point": "train.py",
               "source_dir": str(source_dir), "tags": {"team": "vision"}}
    request.update(changes)
    return request


def new_running_job(store: SQLiteStore, kind: str, request: Checked | dict[str, Any], tmp_path: Path,
                    job_id: str | None = None) -> Job:
    """Store a job (a checked request, or a request as stored) and claim it, as a worker would; return it RUNNING."""
    job_id = job_id or str(uuid.uuid4())
    job_dir = tmp_path / "data" / "jobs" / job_id
    stored, settings = (request.request.to_stored(), request.settings) if isinstance(request, Checked) else (request, None)
    store.create_job(job_id, kind=kind, backend="sagemaker", request=stored, settings=settings, secrets=None,
                     log_path=str(job_dir / "job.log"), output_dir=str(job_dir))
    claimed = store.claim_next(["sagemaker"])
    assert claimed is not None and claimed.id == job_id
    return claimed


def context(store: SQLiteStore, job: Job, secrets: dict[str, Any] | None = None) -> JobReporter:
    """Return the reporter the queue would give a platform for this job."""
    return JobReporter(job, store, lambda: secrets or {})


def reporters(store: SQLiteStore) -> list[JobReporter]:
    """Return a reporter for each launched running job, as a monitor cycle hands them to the platform."""
    return [context(store, job) for job in running_jobs(store)]


def running_jobs(store: SQLiteStore) -> list[Job]:
    return [job for job in store.jobs_in_status(JobStatus.RUNNING, backend="sagemaker") if job.external_id]


def moto_training_job(name: str) -> Any:
    """Return moto's record of a training job, whose fields tests move along."""
    from moto.sagemaker.models import sagemaker_backends

    return sagemaker_backends[ACCOUNT][REGION].training_jobs[name]


def set_training_state(name: str, status: str, secondary: str, **fields: Any) -> None:
    """Move a moto training job to a status (and touch LastModifiedTime, as AWS does)."""
    job = moto_training_job(name)
    job.training_job_status = status
    job.secondary_status = secondary
    job.last_modified_time = datetime.now(timezone.utc).replace(tzinfo=None)
    for key, value in fields.items():
        setattr(job, key, value)


def put_log_lines(clients: ClientFactory, stream: str, lines: list[tuple[int, str]]) -> None:
    """Write (timestamp ms, message) lines to a training log stream, creating group and stream."""
    logs = clients.client("logs")
    try:
        logs.create_log_group(logGroupName=LOG_GROUP)
    except logs.exceptions.ResourceAlreadyExistsException:
        pass
    try:
        logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=stream)
    except logs.exceptions.ResourceAlreadyExistsException:
        pass
    logs.put_log_events(logGroupName=LOG_GROUP, logStreamName=stream,
                        logEvents=[{"timestamp": ts, "message": text} for ts, text in lines])


def capture_params(client: Any, operation: str) -> list[dict[str, Any]]:
    """Record the parameters of every call of an operation on a client (moto drops some fields)."""
    calls: list[dict[str, Any]] = []
    client.meta.events.register(f"provide-client-params.{client.meta.service_model.service_name}.{operation}",
                                lambda params, **_: calls.append(json.loads(json.dumps(params, default=str))))
    return calls


def fake_docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exit_code: int = 0) -> Path:
    """Put a fake `docker` on PATH that records its arguments and stdin; return the record file."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    record = tmp_path / "docker-calls.jsonl"
    script = bin_dir / "docker"
    script.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import json, os, sys
        data = sys.stdin.read() if not sys.stdin.isatty() else ""
        with open({str(record)!r}, "a") as handle:
            handle.write(json.dumps({{"argv": sys.argv[1:], "stdin": data,
                                      "docker_config": os.environ.get("DOCKER_CONFIG")}}) + "\\n")
        if {exit_code}:
            sys.stderr.write("fake docker: simulated failure\\n")
        sys.exit({exit_code})
    """), encoding="utf-8")
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    return record


def docker_calls(record: Path) -> list[dict[str, Any]]:
    if not record.exists():
        return []
    return [json.loads(line) for line in record.read_text().splitlines()]

