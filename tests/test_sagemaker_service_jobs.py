"""The seeds' submit, status, cancel and list of SageMakerTrainingService, through a real queue and store on moto.

The queue is the app's own, driven one worker step and one monitor cycle at a time; moto answers
every AWS call, and tests move its training jobs along (aws_fixtures.set_training_state).
"""
from __future__ import annotations

from unittest import mock

import pytest
from aws_fixtures import (BUCKET, IMAGE, REGION, ROLE_ARN, aws, aws_setup, capture_params, clients,  # noqa: F401
                          make_config, set_training_state)

from app import create_app
from job import TRAINING, JobStatus
from mlops.errors import InvalidRequest, SageMakerConfigurationError, SageMakerJobError
from mlops.sagemaker.training_service import SageMakerJobConfig, SageMakerTrainingService, training_job_name

INPUT = f"s3://{BUCKET}/datasets/digits/"
OUTPUT = f"s3://{BUCKET}/models/digits"
OTHER_IMAGE = f"123456789012.dkr.ecr.{REGION}.amazonaws.com/essedum-training:7"
SPECIAL = "a b;$(rm -rf /)`|&<>\"'\\é"
SUMMARY_KEYS = {"job_id", "kind", "name", "status", "phase", "failure_reason", "sagemaker_job_name",
                "sagemaker_job_arn", "sagemaker_status", "secondary_status", "submitted", "started", "finished",
                "estimated_cost_usd"}


@pytest.fixture
def executor(tmp_path, clients, aws_setup):  # noqa: F811
    app = create_app(make_config(tmp_path), clients=clients)
    yield app.config["EXECUTOR"]
    app.config["EXECUTOR"].store.close()


@pytest.fixture
def service(executor):
    return SageMakerTrainingService(executor.config, executor.clients, queue=executor.queue)


def digits(**changes) -> SageMakerJobConfig:
    # role_arn and image_uri here are replaced by submit's arguments, as in the seeds.
    settings = {"job_name": "digits", "role_arn": "", "image_uri": "", "instance_type": "ml.g5.xlarge",
                "hyperparameters": {"epochs": "2"}, **changes}
    return SageMakerJobConfig(**settings)


def submit(service, executor, config=None, **arguments):
    values = {"s3_input_uri": INPUT, "s3_output_uri": OUTPUT, "role_arn": ROLE_ARN, "image_uri": OTHER_IMAGE,
              **arguments}
    return service.submit_training_job(config or digits(), values["s3_input_uri"], values["s3_output_uri"],
                                       values["role_arn"], values["image_uri"], executor.store)


def work(executor):
    """Run the next queued job in this thread, as a worker would."""
    job = executor.store.claim_next(["sagemaker"])
    assert job is not None
    executor.queue.run_job(job)
    return executor.store.get(job.id)


def test_a_submitted_job_is_queued_launched_once_and_followed_to_completed(service, executor, clients):  # noqa: F811
    created = capture_params(clients.client("sagemaker"), "CreateTrainingJob")
    job_id = submit(service, executor)
    waiting = service.get_job_status(job_id, executor.store)
    assert waiting["status"] == "WAITING" and waiting["sagemaker_job_name"] is None
    assert clients.counter.total("sagemaker") == 0  # queued: nothing is made in AWS before a worker runs it

    job = work(executor)
    name = training_job_name(job_id, "digits")  # named from the job id: a rerun of the attempt finds it
    assert job.status is JobStatus.RUNNING and job.external_id == name, job.failure_reason
    [request] = created
    assert request["TrainingJobName"] == name and request["RoleArn"] == ROLE_ARN
    assert request["AlgorithmSpecification"]["TrainingImage"] == OTHER_IMAGE
    assert request["OutputDataConfig"] == {"S3OutputPath": OUTPUT}
    assert request["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"] == INPUT
    assert request["ResourceConfig"]["InstanceType"] == "ml.g5.xlarge"
    assert request["HyperParameters"]["epochs"] == '"2"'

    set_training_state(name, "InProgress", "Training")
    executor.queue.monitor_once()
    running = service.get_job_status(job_id, executor.store)
    assert (running["status"], running["sagemaker_status"], running["secondary_status"]) == (
        "RUNNING", "InProgress", "Training")

    set_training_state(name, "Completed", "Completed", billable_time_in_seconds=60)
    executor.queue.monitor_once()
    done = service.get_job_status(job_id, executor.store)
    assert (done["status"], done["sagemaker_status"]) == ("COMPLETED", "Completed")
    assert done["finished"] is not None and done["sagemaker_job_arn"].endswith(f"training-job/{name}")
    assert clients.counter.total("sagemaker", "CreateTrainingJob") == 1


def test_status_has_the_seeds_shape_and_reads_only_the_store(service, executor, clients):  # noqa: F811
    job_id = submit(service, executor)
    work(executor)
    before = clients.counter.total()
    status = service.get_job_status(job_id, executor.store)
    assert set(status) == SUMMARY_KEYS | {"progress", "metrics", "artifacts", "cost_note"}
    assert status["job_id"] == job_id and status["kind"] == TRAINING and status["name"] == "digits"
    assert isinstance(status["metrics"], dict) and isinstance(status["artifacts"], dict)
    assert clients.counter.total() == before


@pytest.mark.parametrize("job_id", [-1, 0, 10 ** 30, "", "no-such-job", None, 1.5])
def test_unknown_job_ids_are_named_without_aws_calls(service, executor, clients, job_id):  # noqa: F811
    before = clients.counter.total()
    with pytest.raises(SageMakerJobError):
        service.get_job_status(job_id, executor.store)
    with pytest.raises(SageMakerJobError):
        service.cancel_training_job(job_id, executor.store)
    assert clients.counter.total() == before


def test_cancelling_a_waiting_job_ends_it_before_aws_sees_it(service, executor, clients):  # noqa: F811
    job_id = submit(service, executor)
    assert service.cancel_training_job(job_id, executor.store) is True
    assert service.get_job_status(job_id, executor.store)["status"] == "CANCELLED"
    assert executor.store.claim_next(["sagemaker"]) is None
    assert clients.counter.total("sagemaker") == 0
    assert service.cancel_training_job(job_id, executor.store) is False  # it has ended


def test_cancelling_a_running_job_stops_it_once_and_it_ends_cancelled(service, executor, clients):  # noqa: F811
    job_id = submit(service, executor)
    name = work(executor).external_id
    set_training_state(name, "InProgress", "Training")
    sagemaker = clients.client("sagemaker")

    def stop_training_job(**params):
        # moto has no StopTrainingJob; AWS moves the job to Stopping (API reference, StopTrainingJob).
        set_training_state(params["TrainingJobName"], "Stopping", "Stopping")
        return {}

    with mock.patch.object(sagemaker, "stop_training_job", side_effect=stop_training_job) as stop:
        assert service.cancel_training_job(job_id, executor.store) is True
        executor.queue.monitor_once()  # the monitor makes the stop call, not the caller's thread
        assert service.get_job_status(job_id, executor.store)["status"] == "RUNNING"
        set_training_state(name, "Stopped", "Stopped")
        executor.queue.monitor_once()
    stop.assert_called_once_with(TrainingJobName=name)
    status = service.get_job_status(job_id, executor.store)
    assert (status["status"], status["sagemaker_status"]) == ("CANCELLED", "Stopped")
    assert service.cancel_training_job(job_id, executor.store) is False


def test_the_list_is_the_stores_sagemaker_training_jobs_newest_first(service, executor, clients):  # noqa: F811
    first = submit(service, executor, digits(job_name="first"))
    second = submit(service, executor, digits(job_name="second"))
    work(executor)
    before = clients.counter.total()
    listed = service.list_training_jobs(executor.store)
    assert [item["job_id"] for item in listed] == [second, first]
    assert all(set(item) == SUMMARY_KEYS for item in listed)
    assert {item["name"]: item["status"] for item in listed} == {"first": "RUNNING", "second": "WAITING"}
    assert clients.counter.total() == before


@pytest.mark.parametrize("argument, value", [
    ("s3_input_uri", ""), ("s3_input_uri", SPECIAL), ("s3_input_uri", "s3://UPPER/x"),
    ("s3_output_uri", ""), ("s3_output_uri", SPECIAL), ("role_arn", ""), ("role_arn", SPECIAL),
    ("image_uri", ""), ("image_uri", SPECIAL)])
def test_each_bad_argument_is_named_and_nothing_is_queued(service, executor, clients, argument, value):  # noqa: F811
    before = clients.counter.total()
    with pytest.raises(InvalidRequest) as raised:
        submit(service, executor, **{argument: value})
    assert raised.value.field == argument
    assert executor.store.list_jobs(limit=10) == [] and clients.counter.total() == before


@pytest.mark.parametrize("field, value", [
    ("job_name", ""), ("job_name", SPECIAL), ("instance_type", "ml.nope"), ("instance_count", 0),
    ("hyperparameters", {"no-such-flag": "1"}), ("environment_variables", {"TOKEN": "x"}),
    ("source_s3_uri", f"s3://{BUCKET}/code/sourcedir.tar.gz"), ("region", "eu-west-1")])
def test_a_config_the_training_path_refuses_is_named_and_nothing_is_queued(service, executor, clients,  # noqa: F811
                                                                          field, value):
    before = clients.counter.total()
    with pytest.raises(InvalidRequest) as raised:
        submit(service, executor, digits(**{field: value}))
    assert raised.value.field.split(".")[0] == field
    assert executor.store.list_jobs(limit=10) == [] and clients.counter.total() == before


def test_submit_needs_the_executors_queue_and_its_store(executor, tmp_path):
    without_queue = SageMakerTrainingService(executor.config, executor.clients)
    with pytest.raises(SageMakerConfigurationError, match="queue"):
        submit(without_queue, executor)
    from db import SQLiteStore
    other = SQLiteStore(tmp_path / "other.db")
    try:
        with pytest.raises(SageMakerConfigurationError, match="store"):
            SageMakerTrainingService(executor.config, executor.clients, queue=executor.queue).submit_training_job(
                digits(), INPUT, OUTPUT, ROLE_ARN, IMAGE, other)
    finally:
        other.close()
    assert executor.store.list_jobs(limit=10) == []
