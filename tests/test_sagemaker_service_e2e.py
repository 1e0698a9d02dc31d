"""The real service process, on the sagemaker backend, against a moto server reached through AWS_ENDPOINT_URL.

moto stands in for AWS (this machine cannot reach it); its training jobs complete the moment they
are created, so this test follows the whole path — HTTP, queue, upload, CreateTrainingJob, monitor,
status — while the progressions (InProgress, Failed, Stopped) are tested against moto's backend objects
in test_sagemaker_monitor.py.
"""
from __future__ import annotations

import io
import json
import tarfile
import urllib.request

import boto3
import pytest
from moto.server import ThreadedMotoServer

from conftest import pipeline_body, wait_for, write_pipeline

BUCKET = "essedum-e2e-bucket"
ROLE_ARN = "arn:aws:iam::123456789012:role/EssedumTraining"
FINAL = {"COMPLETED", "ERROR", "CANCELLED"}


@pytest.fixture
def moto_url():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    # moto keeps its state per process, not per server: start each test from an empty account
    urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"), timeout=10).close()
    yield url
    server.stop()


def aws_env(url: str) -> dict[str, str]:
    return {"AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1", "EXECUTOR_BACKEND": "sagemaker", "EXECUTOR_S3_BUCKET": BUCKET,
            "EXECUTOR_SAGEMAKER_ROLE_ARN": ROLE_ARN, "EXECUTOR_MONITOR_INTERVAL": "0.2"}


def test_a_training_request_becomes_a_sagemaker_job_and_its_outcome(service, tmp_path, moto_url):
    env = aws_env(moto_url)
    client = {name: boto3.client(name, endpoint_url=moto_url, region_name="us-east-1",
                                 aws_access_key_id="testing", aws_secret_access_key="testing")
              for name in ("s3", "sagemaker")}
    client["s3"].create_bucket(Bucket=BUCKET)
    data = tmp_path / "data"
    dataset = data / "storage" / "datasets" / "tiny"
    dataset.mkdir(parents=True)
    (dataset / "a.png").write_bytes(b"\x89PNG not really")
    (dataset / "metadata.csv").write_text("filename,label\na.png,zero\n")
    write_pipeline(data / "storage", "Demo/pipe", "print('pipeline')\n")
    proc = service(data, env=env)

    status, accepted = proc.request("POST", "/api/service/v1/pipelines/training", {
        "name": "digits", "dataset": "datasets/tiny", "hyperparameters": {"epochs": 4},
        "instance_type": "ml.g5.2xlarge"})
    assert status == 202, accepted
    pipeline = proc.request("POST", "/execute", pipeline_body("Demo/pipe", "python pipe1.py --epochs 2"))[1]
    finals = {}
    for job_id in (accepted["job_id"], pipeline["task_id"]):
        finals[job_id] = wait_for(lambda: (b := proc.request("GET", f"/status/{job_id}")[1])["status"] in FINAL and b,
                                  timeout=60, interval=0.2)
    training = finals[accepted["job_id"]]
    assert training["status"] == "COMPLETED", training
    assert training["timestamp"] is not None and training["external_id"]
    assert finals[pipeline["task_id"]]["status"] == "COMPLETED", finals[pipeline["task_id"]]

    described = client["sagemaker"].describe_training_job(TrainingJobName=training["external_id"])
    assert described["ResourceConfig"]["InstanceType"] == "ml.g5.2xlarge"
    assert described["RoleArn"] == ROLE_ARN
    hyperparameters = described["HyperParameters"]
    # JSON-encoded, as the SageMaker SDK sends them and the container's toolkit decodes them
    assert json.loads(hyperparameters["sagemaker_program"]) == "train.py" and json.loads(hyperparameters["epochs"]) == "4"
    # the dataset went up as one archive, which the bundled script unpacks
    channel = described["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"]
    objects = client["s3"].list_objects_v2(Bucket=BUCKET, Prefix=channel.split(f"{BUCKET}/", 1)[1])["Contents"]
    archive = client["s3"].get_object(Bucket=BUCKET, Key=objects[0]["Key"])["Body"].read()
    assert sorted(tarfile.open(fileobj=io.BytesIO(archive)).getnames()) == ["a.png", "metadata.csv"]

    pipeline_job = client["sagemaker"].describe_training_job(
        TrainingJobName=finals[pipeline["task_id"]]["external_id"])
    assert json.loads(pipeline_job["HyperParameters"]["sagemaker_program"]) == "pipe1.py"
    assert json.loads(pipeline_job["HyperParameters"]["epochs"]) == "2"


def test_a_request_sagemaker_would_refuse_is_a_4xx_before_any_aws_call(service, tmp_path, moto_url):
    data = tmp_path / "data"
    (data / "storage" / "datasets" / "tiny").mkdir(parents=True)
    proc = service(data, env=aws_env(moto_url))
    status, body = proc.request("POST", "/api/service/v1/pipelines/training", {
        "name": "digits", "dataset": "datasets/tiny", "instance_type": "ml.notreal.xlarge"})
    assert status == 422 and body["field"] == "instance_type"
    status, body = proc.request("POST", "/api/service/v1/pipelines/training", {
        "name": "digits", "dataset": "datasets/tiny", "hyperparameters": {"epochz": 3}})
    assert status == 422 and body["field"] == "hyperparameters.epochz"
    sagemaker = boto3.client("sagemaker", endpoint_url=moto_url, region_name="us-east-1",
                             aws_access_key_id="testing", aws_secret_access_key="testing")
    assert sagemaker.list_training_jobs()["TrainingJobSummaries"] == []
