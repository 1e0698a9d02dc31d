"""The one recovery rule: what a job left RUNNING by a restart, or stopped by a shutdown, becomes."""
from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from config import load_config
from db import SQLiteStore
from job import ENDPOINT, PIPELINE, TRAINING, Job, JobStatus
from mlops.aws import ClientFactory
from mlops.recovery import MAX_ATTEMPTS, Outcome, decide
from mlops.script_contract import BUNDLED_ENTRY_POINT, BUNDLED_SCRIPTS
from mlops.platforms import make_platform


@pytest.fixture
def store(tmp_path: Path):
    store = SQLiteStore(tmp_path / "executor.sqlite3")
    yield store
    store.close()


def platform_of(name: str, store: SQLiteStore, tmp_path: Path):
    config = load_config(environ={}, overrides={"data_dir": str(tmp_path / "data"), "backend": name,
                                                "aws_region": "us-east-1"})
    return make_platform(config, store, ClientFactory(region="us-east-1"))


def interrupted(store: SQLiteStore, tmp_path: Path, kind: str, request: dict, *, backend: str = "local",
                starts: int = 1) -> Job:
    """Store a job and claim it `starts` times, as workers of successive runs would."""
    job_id = str(uuid.uuid4())
    store.create_job(job_id, kind=kind, backend=backend, request=request, secrets=None,
                     log_path=str(tmp_path / job_id / "job.log"), output_dir=str(tmp_path / job_id))
    for number in range(starts):
        if number:
            store.transition(job_id, JobStatus.WAITING)
        store.claim_next([backend])
    return store.get(job_id)


def user_training(tmp_path: Path) -> dict:
    source = tmp_path / "src"
    source.mkdir(exist_ok=True)
    (source / "mine.py").write_text("print('hi')\n")
    return {"source_dir": str(source), "entry_point": "mine.py", "dataset": "d"}


def test_a_plain_pipeline_fails_with_a_reason_that_says_how_to_run_it_again(store, tmp_path):
    platform = platform_of("local", store, tmp_path)
    decision = decide(interrupted(store, tmp_path, PIPELINE, {}), platform, retry_interrupted=False)
    assert decision.outcome is Outcome.FAIL
    assert decision.reason.startswith("executor restarted while the job was running; to run it again")
    assert "retry_on_restart" in decision.reason


def test_retry_on_restart_or_the_global_setting_requeues(store, tmp_path):
    platform = platform_of("local", store, tmp_path)
    asked = interrupted(store, tmp_path, PIPELINE, {"retry_on_restart": True})
    assert decide(asked, platform, retry_interrupted=False).outcome is Outcome.REQUEUE
    plain = interrupted(store, tmp_path, PIPELINE, {})
    assert decide(plain, platform, retry_interrupted=True, at_shutdown=True).outcome is Outcome.REQUEUE


def test_a_job_asked_to_stop_is_never_requeued(store, tmp_path):
    platform = platform_of("local", store, tmp_path)
    job = interrupted(store, tmp_path, PIPELINE, {"retry_on_restart": True})
    store.request_cancel(job.id)
    assert decide(store.get(job.id), platform, retry_interrupted=True).outcome is Outcome.CANCEL


def test_training_that_can_resume_is_requeued_the_bundled_script_or_checkpoints_with_content(store, tmp_path):
    platform = platform_of("local", store, tmp_path)
    bundled = interrupted(store, tmp_path, TRAINING, {"source_dir": str(BUNDLED_SCRIPTS),
                                                      "entry_point": BUNDLED_ENTRY_POINT, "dataset": "d"})
    assert decide(bundled, platform, retry_interrupted=False).outcome is Outcome.REQUEUE
    own = interrupted(store, tmp_path, TRAINING, user_training(tmp_path))
    assert decide(own, platform, retry_interrupted=False).outcome is Outcome.FAIL
    checkpoints = Path(own.output_dir) / "checkpoints"
    checkpoints.mkdir(parents=True)
    assert decide(own, platform, retry_interrupted=False).outcome is Outcome.FAIL  # an empty folder resumes nothing
    (checkpoints / "checkpoint.pt").write_bytes(b"state")
    assert decide(own, platform, retry_interrupted=False).outcome is Outcome.REQUEUE


def test_requeues_are_bounded_and_the_failure_names_the_bound(store, tmp_path):
    platform = platform_of("local", store, tmp_path)
    job = interrupted(store, tmp_path, PIPELINE, {"retry_on_restart": True}, starts=MAX_ATTEMPTS)
    decision = decide(job, platform, retry_interrupted=True)
    assert decision.outcome is Outcome.FAIL
    assert f"the bound is {MAX_ATTEMPTS} attempts" in decision.reason


def test_model_lifecycle_jobs_are_requeued_but_bounded_too(store, tmp_path):
    platform = platform_of("local", store, tmp_path)
    deploy = {"EndpointName": "e", "EndpointConfigName": "c"}
    assert decide(interrupted(store, tmp_path, ENDPOINT, deploy), platform,
                  retry_interrupted=False).outcome is Outcome.REQUEUE
    looping = interrupted(store, tmp_path, ENDPOINT, deploy, starts=MAX_ATTEMPTS)
    assert decide(looping, platform, retry_interrupted=False).outcome is Outcome.FAIL


def test_a_remote_job_is_monitored_once_launched_and_launched_again_before(store, tmp_path):
    platform = platform_of("sagemaker", store, tmp_path)
    job = interrupted(store, tmp_path, TRAINING, {"name": "x"}, backend="sagemaker")
    assert decide(job, platform, retry_interrupted=False).outcome is Outcome.REQUEUE
    store.update(job.id, external_id="essedum-x-1")
    store.request_cancel(job.id)  # the monitor sends the stop, then ends it CANCELLED once SageMaker has
    assert decide(store.get(job.id), platform, retry_interrupted=False).outcome is Outcome.MONITOR


def test_a_job_of_the_other_platform_fails_naming_the_platform_now_used(store, tmp_path):
    platform = platform_of("local", store, tmp_path)
    job = interrupted(store, tmp_path, TRAINING, {"name": "x"}, backend="sagemaker")
    decision = decide(job, platform, retry_interrupted=True)
    assert decision.outcome is Outcome.FAIL and "now uses the local backend" in decision.reason

