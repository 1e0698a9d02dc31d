"""Essedum's MLOps training routes on the SageMaker backend, driven one worker step and monitor cycle at a time."""
from __future__ import annotations

import json

import pytest
from aws_fixtures import (ACCOUNT, BUCKET, REGION, ROLE_ARN, aws, aws_setup, capture_params, clients,  # noqa: F401
                          make_config, shared_session)

from app import create_app
from job import JobStatus
from mlops.aws import ClientFactory

CSV = b"age,income,churned\n42,1000,yes\n31,2000,no\n"
AUTOML_BODY = {"job_name": "churn-automl-1",
               "input_data_config": {"s3_uri": f"s3://{BUCKET}/data/churn.csv", "content_type": "text/csv;header=present"},
               "output_data_config": {"s3_output_path": f"s3://{BUCKET}/automl-out"},
               "target_attribute_name": "churned", "problem_type": "BinaryClassification",
               "objective": {"metric_name": "F1"}, "max_candidates": 3, "mode": "ENSEMBLING",
               "tags": [{"Key": "team", "Value": "growth"}]}
PIPELINE_BODY = {"bucket": "essedum-bucket", "project_id": "Demo", "name": "pipe1", "version": "3",
                 "credentials": {"endpoint": "https://s3.us-east-1.amazonaws.com", "access_key": "AKIAEXAMPLEKEY123",
                                 "secret_key": "s3cr3t-Value-Never-Shown"},
                 "input_artifacts": "Demo/pipe1", "command": "python pipe1.py --epochs 2", "storage": "local",
                 "configs": {"instance_type": "ml.m5.xlarge"}, "environment": {"API_TOKEN": "tok-123456"}}


@pytest.fixture
def app(tmp_path, clients, aws_setup):  # noqa: F811
    config = make_config(tmp_path)
    application = create_app(config, clients=clients)
    clients.client("s3").put_object(Bucket=BUCKET, Key="data/churn.csv", Body=CSV)
    yield application
    application.config["EXECUTOR"].store.close()


@pytest.fixture
def http(app):
    return app.test_client()


def executor(app):
    return app.config["EXECUTOR"]


def work(app):
    """Run the next queued job in this thread, as a worker would."""
    job = executor(app).store.claim_next(["sagemaker"])
    assert job is not None
    executor(app).queue.run_job(job)
    return executor(app).store.get(job.id)


def monitor(app):
    executor(app).queue.monitor_once()


@pytest.mark.parametrize("target", ["churn", " "])
def test_train_refuses_a_target_that_is_not_a_column_and_lists_the_columns(http, target):
    answer = http.post("/api/service/v1/pipelines/training/train", json={
        "RoleArn": ROLE_ARN, "Bucket": BUCKET, "S3Prefix": "automl", "inputs": f"s3://{BUCKET}/data/churn.csv",
        "target_attribute_name": target})
    assert answer.status_code == 400
    assert answer.json["field"] == "target_attribute_name"
    assert answer.json["available_columns"] == ["age", "income", "churned"]


def test_train_on_a_csv_prefix_runs_an_automl_job_to_its_aws_outcome(app, http, clients):  # noqa: F811
    answer = http.post("/api/service/v1/pipelines/training/train", json={
        "RoleArn": ROLE_ARN, "Bucket": BUCKET, "S3Prefix": "automl", "inputs": f"s3://{BUCKET}/data/",
        "target_attribute_name": "churned", "problem_type": "BinaryClassification"})  # moto cannot infer it
    assert answer.status_code == 202, answer.json
    assert answer.json["status"] == "Submitted" and answer.json["job_arn"] is None
    job = work(app)
    assert job.status is JobStatus.RUNNING and job.external_id == answer.json["job_name"]
    created = clients.client("sagemaker").describe_auto_ml_job_v2(AutoMLJobName=job.external_id)
    assert created["OutputDataConfig"]["S3OutputPath"] == f"s3://{BUCKET}/automl/automl-output"
    assert created["AutoMLProblemTypeConfig"]["TabularJobConfig"]["TargetAttributeName"] == "churned"
    from moto.sagemaker.models import sagemaker_backends
    moto_job = sagemaker_backends[ACCOUNT][REGION].auto_ml_jobs[job.external_id]
    moto_job.auto_ml_job_status = "Completed"
    monitor(app)
    record = http.get(f"/api/service/v1/pipelines/training/{job.external_id}/get").json
    assert record["executorStatus"] == "COMPLETED" and record["status"] == "Completed"
    # moto's best candidate, as AWS would report it: nothing is made up by the executor
    assert record["bestCandidate"]["name"] == moto_job.best_candidate["CandidateName"]
    assert record["bestCandidate"]["objectiveMetric"]["value"] == \
        moto_job.best_candidate["FinalAutoMLJobObjectiveMetric"]["Value"]


def test_automl_creates_the_job_with_every_setting(app, http, clients):  # noqa: F811
    answer = http.post("/api/service/v1/pipelines/training/automl", json=AUTOML_BODY)
    assert answer.status_code == 201, answer.json
    assert answer.json["job_name"] == "churn-automl-1"
    work(app)
    described = clients.client("sagemaker").describe_auto_ml_job_v2(AutoMLJobName="churn-automl-1")
    tabular = described["AutoMLProblemTypeConfig"]["TabularJobConfig"]
    assert tabular["ProblemType"] == "BinaryClassification" and tabular["Mode"] == "ENSEMBLING"
    assert tabular["CompletionCriteria"] == {"MaxCandidates": 3}
    assert described["AutoMLJobObjective"] == {"MetricName": "F1"}
    assert described["RoleArn"] == ROLE_ARN


def test_train_sends_the_default_objective_of_its_problem_type_and_csv_with_its_header(app, http, clients):  # noqa: F811
    sent = capture_params(clients.client("sagemaker"), "CreateAutoMLJobV2")
    answer = http.post("/api/service/v1/pipelines/training/train", json={
        "RoleArn": ROLE_ARN, "Bucket": BUCKET, "S3Prefix": "automl", "inputs": f"s3://{BUCKET}/data/churn.csv",
        "target_attribute_name": "income", "problem_type": "Regression"})
    assert answer.status_code == 202, answer.json
    work(app)
    # AutoMLJobObjective's documentation: the default of Regression is MSE; AWS takes both or neither.
    assert sent[0]["AutoMLJobObjective"] == {"MetricName": "MSE"}
    assert sent[0]["AutoMLJobInputDataConfig"][0]["ContentType"] == "text/csv;header=present"


def test_an_objective_without_a_problem_type_is_refused(http, app):
    body = {key: value for key, value in AUTOML_BODY.items() if key != "problem_type"}
    answer = http.post("/api/service/v1/pipelines/training/automl", json=body)
    assert (answer.status_code, answer.json["field"]) == (422, "problem_type")


def test_plain_text_csv_is_sent_as_csv_with_a_header(app, http, clients):  # noqa: F811
    sent = capture_params(clients.client("sagemaker"), "CreateAutoMLJobV2")
    body = {**AUTOML_BODY, "input_data_config": {**AUTOML_BODY["input_data_config"], "content_type": "text/csv"}}
    assert http.post("/api/service/v1/pipelines/training/automl", json=body).status_code == 201
    work(app)
    assert sent[0]["AutoMLJobInputDataConfig"][0]["ContentType"] == "text/csv;header=present"


@pytest.mark.parametrize("changes, field, status", [
    ({"objective": {"metric_name": "Happiness"}}, "objective.metric_name", 422),
    ({"objective": {"metric_name": "MSE"}}, "objective.metric_name", 422),  # a Regression metric, not Binary
    ({"job_name": "has_underscore"}, "job_name", 422),
    ({"problem_type": "Clustering"}, "problem_type", 422),
    ({"role_arn": "arn:aws:iam::1:role/x"}, "role_arn", 422),
    ({"target_attribute_name": " "}, "target_attribute_name", 422),
    ({"input_data_config": {"s3_uri": "s3://Not_A_Bucket/churn.csv"}}, "input_data_config.s3_uri", 422),
    # The executor's bounds: 28 days a candidate's training job (AWS's MaxRuntimeInSeconds), 30 days the job.
    ({"max_runtime_per_training_job_in_seconds": 28 * 24 * 3600 + 1}, "max_runtime_per_training_job_in_seconds", 422),
    ({"total_job_runtime_in_seconds": 30 * 24 * 3600 + 1}, "total_job_runtime_in_seconds", 422),
    ({"unknown": 1}, "unknown", 400)])
def test_a_bad_automl_request_names_its_field(http, app, changes, field, status):
    answer = http.post("/api/service/v1/pipelines/training/automl", json={**AUTOML_BODY, **changes})
    assert (answer.status_code, answer.json["field"]) == (status, field)
    assert executor(app).store.list_jobs() == []


def test_an_automl_name_taken_outside_the_executor_is_an_error_not_adopted(app, http, clients):  # noqa: F811
    clients.client("sagemaker").create_auto_ml_job_v2(
        AutoMLJobName="churn-automl-1", RoleArn=ROLE_ARN,
        AutoMLJobInputDataConfig=[{"ChannelType": "training", "ContentType": "text/csv;header=present",
                                   "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix",
                                                                   "S3Uri": f"s3://{BUCKET}/other/"}}}],
        OutputDataConfig={"S3OutputPath": f"s3://{BUCKET}/other-out"},
        AutoMLProblemTypeConfig={"TabularJobConfig": {"TargetAttributeName": "x", "CompletionCriteria": {},
                                                      "ProblemType": "Regression"}},
        AutoMLJobObjective={"MetricName": "MSE"})
    http.post("/api/service/v1/pipelines/training/automl", json=AUTOML_BODY)
    job = work(app)
    assert job.status is JobStatus.ERROR and "already exists" in job.failure_reason


def test_cancel_stops_an_automl_job_and_it_ends_cancelled(app, http):
    job_id = http.post("/api/service/v1/pipelines/training/automl", json=AUTOML_BODY).json["job_id"]
    work(app)
    answer = http.get(f"/api/service/v1/pipelines/training/{job_id}/cancel")
    assert answer.json == {"message": "the job is being stopped", "job_name": "churn-automl-1", "job_id": job_id,
                           "status": "Stopping"}
    monitor(app)  # StopAutoMLJob (moto stops it at once), then the change is seen
    monitor(app)
    assert executor(app).store.get(job_id).status is JobStatus.CANCELLED


def test_custom_script_runs_the_pipelines_own_files_as_a_training_job(app, http, clients):  # noqa: F811
    folder = executor(app).config.storage_root / "Demo" / "pipe1"
    folder.mkdir(parents=True)
    (folder / "pipe1.py").write_text("print('epoch=1/2 loss=0.5')\n")
    created = capture_params(clients.client("sagemaker"), "CreateTrainingJob")
    answer = http.post("/api/service/v1/pipelines/training/custom_script", json=PIPELINE_BODY)
    assert answer.status_code == 201 and answer.json["task_status"] == "Submitted"
    job = work(app)
    assert job.status is JobStatus.RUNNING, job.failure_reason
    described = clients.client("sagemaker").describe_training_job(TrainingJobName=job.external_id)
    # its environment is a secret: the launcher runs first and starts pipe1.py with the values
    assert described["HyperParameters"]["sagemaker_program"] == '"essedum_launch.py"'
    assert created[0]["Environment"]["ESSEDUM_ENTRY_POINT"] == "pipe1.py"
    assert "tok-123456" not in json.dumps(created)
    assert described["HyperParameters"]["epochs"] == '"2"'
    listed = http.get("/api/service/v1/pipelines/training/list").json
    assert [record["type"] for record in listed] == ["custom_script"]
    assert "tok-123456" not in json.dumps(listed) and "s3cr3t" not in json.dumps(listed)


def test_get_passes_aws_s_description_on_without_the_jobs_environment(app, http, monkeypatch):
    folder = executor(app).config.storage_root / "Demo" / "pipe1"
    folder.mkdir(parents=True)
    (folder / "pipe1.py").write_text("print('hello')\n")
    assert http.post("/api/service/v1/pipelines/training/custom_script", json=PIPELINE_BODY).status_code == 201
    job = work(app)
    platform = executor(app).platform
    described = platform.describe(job)
    # moto leaves Environment out of DescribeTrainingJob; AWS answers it (botocore's sagemaker
    # service-2.json, DescribeTrainingJobResponse.Environment), so it is added here as AWS would.
    monkeypatch.setattr(platform, "describe", lambda _job: {**described, "Environment": {"API_TOKEN": "tok-123456"}})
    got = http.get(f"/api/service/v1/pipelines/training/{job.external_id}/get").json
    assert json.loads(got["rawPayload"])["Environment"] == {"API_TOKEN": "****"}
    assert "tok-123456" not in json.dumps(got)


def test_list_and_get_answer_essedum_records(app, http):
    job_id = http.post("/api/service/v1/pipelines/training/automl", json=AUTOML_BODY).json["job_id"]
    [record] = http.get("/api/service/v1/pipelines/training/list").json
    assert set(record) >= {"sourceID", "container", "adapter", "rawPayload", "syncDate", "description", "project",
                           "type", "createdOn", "sourceOrg", "name", "id", "sourcename", "status", "artifacts",
                           "deployment", "jobStatus", "failureReason", "bestCandidate"}
    assert record["status"] == "Pending" and isinstance(json.loads(record["rawPayload"]), dict)
    work(app)
    got = http.get(f"/api/service/v1/pipelines/training/{job_id}/get").json
    assert got["sourceID"] == "churn-automl-1" and got["arn"].endswith(":automl-job/churn-automl-1")
    assert got["jobStatus"] == "InProgress"
    assert json.loads(got["rawPayload"])["AutoMLJobName"] == "churn-automl-1"


def test_shared_session_helper_is_used(clients):  # noqa: F811
    assert isinstance(clients, ClientFactory) and clients.session_factory is shared_session


def test_cloudconnect_reports_each_check_of_the_executors_own_aws_access(http):
    response = http.post("/cloudconnect")
    body = response.get_json()
    assert response.status_code == 200 and body["valid"] is True
    assert {check["name"]: check["passed"] for check in body["checks"]} == {
        "region": True, "credentials": True, "bucket": True, "role": True, "instance_type": True, "permissions": True}


def test_cloudconnect_names_what_fails(tmp_path, clients, aws_setup):  # noqa: F811
    application = create_app(make_config(tmp_path, s3_bucket="bucket-that-does-not-exist"), clients=clients)
    response = application.test_client().post("/cloudconnect")
    failed = {check["name"]: check["detail"] for check in response.get_json()["checks"] if not check["passed"]}
    assert response.status_code == 502 and list(failed) == ["bucket"]
    assert "bucket-that-does-not-exist" in failed["bucket"]
    application.config["EXECUTOR"].store.close()


def test_ready_asks_aws_through_the_backend(app, http):
    executor(app).queue.started = True
    body = http.get("/ready").get_json()
    assert body["checks"]["backend"] == {"ok": True, "reason": None}


@pytest.mark.parametrize("missing, setting", [("sagemaker_role_arn", "EXECUTOR_SAGEMAKER_ROLE_ARN"),
                                              ("s3_bucket", "EXECUTOR_S3_BUCKET")])
def test_a_training_without_a_setting_names_the_setting_not_a_field_it_refuses(tmp_path, clients, aws_setup,  # noqa: F811
                                                                                 missing, setting):
    application = create_app(make_config(tmp_path, **{missing: ""}), clients=clients)
    try:
        answer = application.test_client().post("/api/service/v1/pipelines/training",
                                                 json={"name": "digits", "dataset": f"s3://{BUCKET}/digits"})
        body = answer.get_json()
        assert answer.status_code == 422 and body["field"] == setting and setting in body["error"]
        assert "configs" not in body["error"]  # a training request has no configs: naming it would mislead
        answer = application.test_client().post("/api/service/v1/pipelines/training", json={
            "name": "digits", "dataset": f"s3://{BUCKET}/digits", "configs": {}})
        assert answer.status_code == 400 and answer.get_json()["field"] == "configs"
        # A pipeline does carry configs, and may name the value there.
        answer = application.test_client().post("/execute", json=PIPELINE_BODY)
        assert answer.status_code == 422 and answer.get_json()["field"].startswith("configs.")
    finally:
        application.config["EXECUTOR"].store.close()
