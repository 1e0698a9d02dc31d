"""The SageMaker backend: checks at submission, launching, idempotent re-runs, stops and recovery."""
from __future__ import annotations

import json
from unittest import mock

import pytest
from aws_fixtures import (BUCKET, IMAGE, ROLE_ARN, aws, aws_setup, backend, capture_params, clients,  # noqa: F401
                          config, context, reporters, bundled_scripts, moto_training_job, new_running_job,
                          running_jobs, set_training_state, store, training_request, write_dataset)
from botocore.exceptions import ClientError

from db import stored_request
from job import JobStatus
from mlops.job_requests import request_of
from mlops.sagemaker.training_service import training_job_name
from mlops.errors import AccessDenied, InvalidRequest, SageMakerJobError
from mlops.platform import Stop
from mlops.recovery import Outcome, decide

SECRET = "very-secret-token-value"


@pytest.fixture
def dataset(tmp_path):
    return write_dataset(tmp_path / "data" / "storage" / "digits")


def submit(backend, store, tmp_path, request, kind="training", secrets=None):  # noqa: F811
    checked = backend.check(kind, request_of(kind, json.loads(json.dumps(request))), secrets or {})
    job = new_running_job(store, kind, checked, tmp_path)
    backend.run(job, context(store, job, secrets))
    return store.get(job.id)


def pipeline_request(**configs):
    return {"bucket": "essedum-bucket", "project_id": "Demo", "name": "pipe1", "version": "3",
            "input_artifacts": "Demo/pipe1", "command": "python pipe1.py --x 1 --label=abc", "storage": "local",
            "configs": configs, "environment_keys": ["TOKEN"]}


def write_pipeline(tmp_path):
    folder = tmp_path / "data" / "storage" / "Demo" / "pipe1"
    folder.mkdir(parents=True)
    (folder / "pipe1.py").write_text("print('hello')\n")
    return folder


# -- check -------------------------------------------------------------------------------------

def test_check_resolves_settings_without_any_aws_call(backend, clients, dataset, bundled_scripts):  # noqa: F811
    before = clients.counter.total()
    checked = backend.check("training", request_of("training", training_request(dataset, bundled_scripts, metadata_file="metadata.csv",
                                                         hyperparameters={"epochs": "3", "learning_rate": "0.01"})), {})
    assert clients.counter.total() == before
    settings = checked.settings
    assert settings["instance_type"] == "ml.g5.xlarge"  # a GPU instance by default
    assert settings["hyperparameters"] == {"epochs": "3", "learning-rate": "0.01", "metadata-file": "metadata.csv"}
    assert settings["metric_definitions"][0]["Name"] == "epoch"
    assert settings["role_arn"] == ROLE_ARN and settings["bucket"] == BUCKET


@pytest.mark.parametrize("changes, field", [
    ({"instance_type": "ml.g5.enormous"}, "instance_type"),
    ({"max_runtime_seconds": 0}, "max_runtime_seconds"),
    ({"tags": {"aws:x": "y"}}, "tags"),
    ({"metadata_file": "nope.csv"}, "metadata_file"),
    ({"dataset": "s3://Bad_Bucket/x", "dataset_path": None}, "dataset"),
    ({"configs": {"role": "not-an-arn"}}, "configs.role"),
    ({"configs": {"bucket": "UPPER"}}, "configs.bucket"),
    ({"configs": {"region_name": "eu-west-1"}}, "configs.region_name"),
    ({"configs": {"container": "bad image"}}, "configs.container"),
    ({"spot": True, "max_wait_seconds": 10}, "max_wait_seconds"),
])
def test_check_names_the_bad_field(backend, clients, dataset, bundled_scripts, changes, field):  # noqa: F811
    before = clients.counter.total()
    with pytest.raises(InvalidRequest) as raised:
        backend.check("training", request_of("training", training_request(dataset, bundled_scripts, **changes)), {})
    assert raised.value.field == field
    assert clients.counter.total() == before


def test_check_of_a_pipeline_reads_its_arguments_as_hyperparameters(backend, tmp_path):
    write_pipeline(tmp_path)
    checked = backend.check("pipeline", request_of("pipeline", pipeline_request(instance_count="2")), {"environment": {"TOKEN": SECRET}})
    assert checked.settings["entry_point"] == "pipe1.py"
    assert checked.settings["hyperparameters"] == {"x": "1", "label": "abc"}
    assert checked.settings["instance_count"] == 2
    assert SECRET not in json.dumps([checked.request.to_stored(), checked.settings])


@pytest.mark.parametrize("command, argv", [
    ("python pipe1.py positional", ["pipe1.py", "positional"]),
    ("python pipe1.py --flag", ["pipe1.py", "--flag"]),
    ("python pipe1.py --x 1 --x 2", ["pipe1.py", "--x", "1", "--x", "2"]),
    # What the Essedum backend appends to a scheduled run (ICIPRemoteExecutorJob).
    ('python pipe1.py  "Last_Execution_Time":"-1"', ["pipe1.py", "Last_Execution_Time:-1"]),
])
def test_a_command_that_is_not_name_value_pairs_runs_through_the_launcher(backend, tmp_path, command, argv):
    write_pipeline(tmp_path)
    checked = backend.check("pipeline", request_of("pipeline", {**pipeline_request(), "command": command}), {})
    assert checked.settings["entry_point"] == "essedum_launch.py"
    assert json.loads(checked.settings["hyperparameters"]["essedum-argv"]) == argv


def test_a_reserved_hyperparameter_in_the_command_is_refused(backend, tmp_path):
    write_pipeline(tmp_path)
    with pytest.raises(InvalidRequest) as raised:
        backend.check("pipeline", request_of("pipeline", {**pipeline_request(), "command": "python pipe1.py --sagemaker_program evil.py"}), {})
    assert raised.value.field == "command"


def test_a_bad_environment_name_is_refused_without_echoing_values(backend, tmp_path):
    write_pipeline(tmp_path)
    with pytest.raises(InvalidRequest) as raised:
        backend.check("pipeline", request_of("pipeline", pipeline_request()), {"environment": {"BAD-NAME": SECRET}})
    assert raised.value.field == "environment" and SECRET not in str(raised.value)


# -- run ---------------------------------------------------------------------------------------

def test_run_uploads_and_creates_the_training_job(backend, store, clients, dataset, bundled_scripts, tmp_path):  # noqa: F811
    created = capture_params(clients.client("sagemaker"), "CreateTrainingJob")
    job = submit(backend, store, tmp_path, training_request(dataset, bundled_scripts, instance_count=2,
                                                            metadata_file="metadata.csv"))
    name = training_job_name(job.id, "digits run")
    assert job.status is JobStatus.RUNNING and job.external_id == name and job.phase == "Starting"
    [request] = created
    hyperparameters = request["HyperParameters"]
    assert hyperparameters["sagemaker_program"] == '"train.py"'
    assert hyperparameters["sagemaker_submit_directory"].startswith(f'"s3://{BUCKET}/essedum-executor/code/')
    assert hyperparameters["epochs"] == '"3"' and hyperparameters["metadata-file"] == '"metadata.csv"'
    assert hyperparameters["sagemaker_torch_distributed_enabled"] == "true"
    assert request["AlgorithmSpecification"]["TrainingImage"] == IMAGE
    assert [d["Name"] for d in request["AlgorithmSpecification"]["MetricDefinitions"]] == [
        "epoch", "train_loss", "val_loss", "val_accuracy", "val_auc"]
    channel = request["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"]
    assert channel.startswith(f"s3://{BUCKET}/essedum-executor/datasets/")
    assert request["OutputDataConfig"]["S3OutputPath"] == f"s3://{BUCKET}/essedum-executor/jobs/{job.id}/output"
    assert request["ResourceConfig"] == {"InstanceType": "ml.g5.xlarge", "InstanceCount": 2, "VolumeSizeInGB": 30}
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600}
    assert {"Key": "essedum:job-id", "Value": job.id} in request["Tags"]
    assert {"Key": "team", "Value": "vision"} in request["Tags"]


def test_spot_training_gets_a_wait_time_and_checkpoints(backend, store, clients, dataset, bundled_scripts, tmp_path):  # noqa: F811
    created = capture_params(clients.client("sagemaker"), "CreateTrainingJob")
    job = submit(backend, store, tmp_path, training_request(dataset, bundled_scripts, spot=True))
    [request] = created
    assert request["EnableManagedSpotTraining"] is True
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200}
    assert request["CheckpointConfig"]["S3Uri"] == f"s3://{BUCKET}/essedum-executor/jobs/{job.id}/checkpoints"


def test_an_s3_dataset_is_used_where_it_is(backend, store, clients, bundled_scripts, tmp_path):  # noqa: F811
    created = capture_params(clients.client("sagemaker"), "CreateTrainingJob")
    request = training_request(tmp_path, bundled_scripts, dataset=f"s3://{BUCKET}/shared/digits/")
    del request["dataset_path"]
    submit(backend, store, tmp_path, request)
    assert created[0]["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"] == f"s3://{BUCKET}/shared/digits/"
    assert clients.counter.total("s3", "PutObject") == 1  # the code archive only


def test_a_worker_that_died_after_create_finds_the_job_instead_of_creating_another(backend, store, clients,  # noqa: F811
                                                                                   dataset, bundled_scripts, tmp_path):
    job = submit(backend, store, tmp_path, training_request(dataset, bundled_scripts))
    store.update(job.id, external_id=None)  # the crash came before the id was recorded
    assert decide(store.get(job.id), backend, retry_interrupted=False).outcome is Outcome.REQUEUE
    store.transition(job.id, JobStatus.WAITING)
    again = store.claim_next(["sagemaker"])
    backend.run(again, context(store, again))
    assert clients.counter.total("sagemaker", "CreateTrainingJob") == 1
    assert store.get(job.id).external_id == training_job_name(job.id, "digits run")
    assert decide(store.get(job.id), backend, retry_interrupted=False).outcome is Outcome.MONITOR


def test_the_same_dataset_is_uploaded_once_for_two_jobs(backend, store, clients, dataset, bundled_scripts, tmp_path):  # noqa: F811
    submit(backend, store, tmp_path, training_request(dataset, bundled_scripts))
    submit(backend, store, tmp_path, training_request(dataset, bundled_scripts))
    assert clients.counter.total("s3", "PutObject") == 2  # dataset.tar and sourcedir.tar.gz, once each
    assert clients.counter.total("sagemaker", "CreateTrainingJob") == 2


def test_settings_ride_beside_the_request_and_a_job_stored_by_an_earlier_release_runs(  # noqa: F811
        backend, store, clients, dataset, bundled_scripts, tmp_path):
    checked = backend.check("training", request_of("training", training_request(dataset, bundled_scripts,
                                                         hyperparameters={"epochs": "3"})), {})
    assert "sagemaker" not in checked.request.to_stored()
    # An earlier release wrote the settings into the request it stored (request["sagemaker"] = settings):
    # the stored shape is unchanged, and such a row reads back as the request and its settings.
    earlier = {**checked.request.to_stored(), "sagemaker": checked.settings}
    assert json.dumps(stored_request(checked.request.to_stored(), checked.settings)) == json.dumps(earlier)
    job = new_running_job(store, "training", json.loads(json.dumps(earlier)), tmp_path)
    assert "sagemaker" not in job.request and job.settings == checked.settings
    created = capture_params(clients.client("sagemaker"), "CreateTrainingJob")
    backend.run(job, context(store, job))
    assert store.get(job.id).status is JobStatus.RUNNING
    assert created[0]["ResourceConfig"]["InstanceType"] == checked.settings["instance_type"]
    assert json.loads(created[0]["HyperParameters"]["epochs"]) == "3"


def test_a_job_cancelled_before_launch_is_not_created(backend, store, clients, dataset, bundled_scripts, tmp_path):  # noqa: F811
    checked = backend.check("training", request_of("training", training_request(dataset, bundled_scripts)), {})
    job = new_running_job(store, "training", checked, tmp_path)
    store.request_cancel(job.id)
    backend.run(job, context(store, job))
    assert store.get(job.id).status is JobStatus.CANCELLED
    assert clients.counter.total("sagemaker", "CreateTrainingJob") == 0


def test_a_pipeline_runs_its_own_files_with_its_environment_by_reference(backend, store, clients,  # noqa: F811
                                                                          tmp_path):
    write_pipeline(tmp_path)
    created = capture_params(clients.client("sagemaker"), "CreateTrainingJob")
    job = submit(backend, store, tmp_path, pipeline_request(instance_type="ml.m5.xlarge"), kind="pipeline",
                 secrets={"environment": {"TOKEN": SECRET}})
    [request] = created
    assert request["HyperParameters"]["sagemaker_program"] == '"essedum_launch.py"'
    assert request["HyperParameters"]["x"] == '"1"' and request["HyperParameters"]["label"] == '"abc"'
    arn = store.get(job.id).details["secret_arn"]
    assert request["Environment"] == {"ESSEDUM_SECRET_ARN": arn, "ESSEDUM_ENTRY_POINT": "pipe1.py"}
    assert SECRET not in json.dumps(request)
    secrets = clients.client("secretsmanager")
    assert json.loads(secrets.get_secret_value(SecretId=arn)["SecretString"]) == {"TOKEN": SECRET}
    tags = {tag["Key"]: tag["Value"] for tag in secrets.describe_secret(SecretId=arn)["Tags"]}
    assert tags == {"essedum:job-id": job.id, "essedum:kind": "pipeline"}
    assert (tmp_path / "data" / "jobs" / job.id / "code" / "essedum_launch.py").is_file()
    assert "InputDataConfig" not in request
    assert request["ResourceConfig"]["InstanceType"] == "ml.m5.xlarge"
    stored = store.get(job.id)
    assert SECRET not in json.dumps([stored.request, stored.details])
    assert SECRET not in open(stored.log_path, encoding="utf-8").read()
    assert SECRET.encode() not in (tmp_path / "data" / "jobs.db").read_bytes()


def test_the_secret_is_deleted_when_the_job_ends(backend, store, clients, tmp_path):  # noqa: F811
    write_pipeline(tmp_path)
    job = submit(backend, store, tmp_path, pipeline_request(), kind="pipeline", secrets={"environment": {"TOKEN": SECRET}})
    arn = job.details["secret_arn"]
    set_training_state(job.external_id, "Completed", "Completed")
    backend.follow(reporters(store))
    assert store.get(job.id).status is JobStatus.COMPLETED
    with pytest.raises(ClientError, match="ResourceNotFoundException"):
        clients.client("secretsmanager").describe_secret(SecretId=arn)


def test_without_secrets_manager_permissions_a_job_with_secrets_is_refused(backend, store, clients,  # noqa: F811
                                                                           tmp_path):
    write_pipeline(tmp_path)
    created = capture_params(clients.client("sagemaker"), "CreateTrainingJob")
    denied = ClientError({"Error": {"Code": "AccessDeniedException", "Message": "not authorized to perform: "
                                    "secretsmanager:CreateSecret"}}, "CreateSecret")
    checked = backend.check("pipeline", request_of("pipeline", pipeline_request()), {"environment": {"TOKEN": SECRET}})
    job = new_running_job(store, "pipeline", checked, tmp_path)
    with mock.patch.object(clients.client("secretsmanager"), "create_secret", side_effect=denied):
        with pytest.raises(AccessDenied) as refused:
            backend.run(job, context(store, job, {"environment": {"TOKEN": SECRET}}))
    assert refused.value.field == "environment" and "in clear" in str(refused.value)
    assert created == []


def test_a_sagemaker_error_at_launch_is_a_job_error_with_the_reason(backend, store, clients, dataset, bundled_scripts,  # noqa: F811
                                                                    tmp_path):
    from botocore.exceptions import ClientError
    checked = backend.check("training", request_of("training", training_request(dataset, bundled_scripts)), {})
    job = new_running_job(store, "training", checked, tmp_path)
    error = ClientError({"Error": {"Code": "AccessDeniedException", "Message": "not authorized to iam:PassRole"}},
                        "CreateTrainingJob")
    with mock.patch.object(clients.client("sagemaker"), "create_training_job", side_effect=error):
        with pytest.raises(SageMakerJobError, match="AccessDeniedException: not authorized to iam:PassRole"):
            backend.run(job, context(store, job))
    assert store.get(job.id).external_id is None


# -- cancel ------------------------------------------------------------------------------------

def test_cancel_stops_a_running_job_once(backend, store, clients, dataset, bundled_scripts, tmp_path):  # noqa: F811
    job = submit(backend, store, tmp_path, training_request(dataset, bundled_scripts))
    set_training_state(job.external_id, "InProgress", "Training")
    sagemaker = clients.client("sagemaker")
    # moto has no StopTrainingJob: patch the client call and count it.
    with mock.patch.object(sagemaker, "stop_training_job", return_value={}) as stop:
        assert backend.cancel(job, context(store, job)) is Stop.REQUESTED
        assert backend.cancel(store.get(job.id), context(store, job)) is Stop.REQUESTED
    stop.assert_called_once_with(TrainingJobName=job.external_id)


def test_cancel_does_not_stop_a_job_that_already_ended(backend, store, clients, dataset, bundled_scripts, tmp_path):  # noqa: F811
    job = submit(backend, store, tmp_path, training_request(dataset, bundled_scripts))
    with mock.patch.object(clients.client("sagemaker"), "stop_training_job") as stop:
        assert backend.cancel(job, context(store, job)) is Stop.NOTHING  # moto completed it at once
    stop.assert_not_called()
    assert store.get(job.id).details["describe_next"] is True


def test_cancel_before_launch_leaves_it_to_run(backend, store, dataset, bundled_scripts, tmp_path):  # noqa: F811
    checked = backend.check("training", request_of("training", training_request(dataset, bundled_scripts)), {})
    job = new_running_job(store, "training", checked, tmp_path)
    # Not launched yet: the stop is left to run(), which sees the flag before it creates anything.
    assert backend.cancel(job, context(store, job)) is Stop.REQUESTED


def test_moto_records_the_job(backend, store, dataset, bundled_scripts, tmp_path):  # noqa: F811
    job = submit(backend, store, tmp_path, training_request(dataset, bundled_scripts))
    assert moto_training_job(job.external_id).role_arn == ROLE_ARN
