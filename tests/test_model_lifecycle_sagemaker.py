"""The model lifecycle on SageMaker, against moto: models, endpoint configs, endpoints through the queue
and the monitor, InvokeEndpoint (results injected through moto's API), batch transform, datasets in S3.

moto creates endpoints InService and transform jobs Completed at once; the tests move them through
other states by setting fields on moto's backend objects. Where moto lacks an operation
(UpdateEndpoint, StopTransformJob) or cannot fail one on demand, a fake on the boto3 client stands
in, and the test says so.
"""
from __future__ import annotations

import base64
import io
import json
import logging
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import boto3
import pytest
import requests
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.sagemaker.models import sagemaker_backends
from moto.sagemakerruntime.models import sagemakerruntime_backends

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from app import create_app  # noqa: E402
from job import TRAINING, Job, JobStatus  # noqa: E402
from mlops.platform import Platform  # noqa: E402
from mlops.aws import ClientFactory  # noqa: E402
from mlops.sagemaker.platform import SageMakerPlatform  # noqa: E402
from mlops.sagemaker.validation import validate_instance_type  # noqa: E402

API = "/api/service/v1"
REGION = "us-east-1"
ROLE = "arn:aws:iam::123456789012:role/SageMakerExecution"
BUCKET = "essedum-models"
MODEL_TAR = f"s3://{BUCKET}/jobs/digits/output/model.tar.gz"
IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.5-cpu-py311"


class Harness:
    """An app whose queue is driven by hand: one worker step, one monitor cycle at a time."""

    def __init__(self, data_dir: Path, **settings: str):
        self.clients = ClientFactory(region=REGION)
        self.app = create_app({"data_dir": str(data_dir), "s3_bucket": BUCKET, "sagemaker_role_arn": ROLE,
                               "backend": "sagemaker", **settings}, clients=self.clients)
        self.executor = self.app.config["EXECUTOR"]
        self.http = self.app.test_client()
        self.sagemaker = boto3.client("sagemaker", region_name=REGION)
        self.moto = sagemaker_backends[DEFAULT_ACCOUNT_ID][REGION]

    def call(self, method: str, path: str, body: Any = None, **kwargs: Any) -> tuple[int, Any]:
        answer = self.http.open(API + path, method=method, json=body, **kwargs)
        return answer.status_code, answer.get_json()

    def work(self) -> None:
        """Let one worker run the oldest waiting job."""
        job = self.executor.store.claim_next([self.executor.platform.name])
        assert job is not None, "no job was waiting"
        self.executor.queue.run_job(job)

    def monitor(self) -> None:
        self.executor.queue.monitor_once()

    def models(self) -> list[str]:
        return [model["ModelName"] for model in self.sagemaker.list_models()["Models"]]

    def job(self, job_id: str) -> Job:
        job = self.executor.store.get(job_id)
        assert job is not None
        return job

    def register_endpoint(self, config: str, model: str = "digits", **extra: Any) -> dict[str, Any]:
        status, body = self.call("POST", "/endpoints/register", {
            "ModelName": model, "EndpointConfigName": config, "VariantName": "AllTraffic",
            "InitialInstanceCount": 1, "InstanceType": "ml.m5.large", **extra})
        assert status == 201, body
        return body

    def deploy(self, endpoint: str, config: str) -> dict[str, Any]:
        status, body = self.call("POST", f"/endpoints/{endpoint}/deploy_model",
                                 {"EndpointConfigName": config, "EndpointName": endpoint})
        assert status == 202, body
        return body


@pytest.fixture
def harness(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    """An app on moto; settings of its own come as the fixture's parameter (indirect parametrization)."""
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    with mock_aws():
        boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
        harness = Harness(tmp_path / "data", **getattr(request, "param", {}))
        yield harness
        harness.executor.store.close()


def model_container() -> dict[str, Any]:
    return {"Image": IMAGE, "ModelDataUrl": MODEL_TAR, "Environment": {"SAGEMAKER_PROGRAM": "inference.py"}}


def finished_training_job(harness: Harness) -> str:
    """A SageMaker training job of this executor that completed with a model in S3."""
    store = harness.executor.store
    job = store.create_job("7d4f7b8e-1d7a-4c55-9a34-3b1e2f0c9a11", kind=TRAINING, backend="sagemaker",
                           request={"name": "digits"}, secrets=None, log_path="/dev/null", output_dir="/tmp")
    store.transition(job.id, JobStatus.RUNNING)
    store.update(job.id, external_id="digits-2025", artifacts={"model": MODEL_TAR})
    store.transition(job.id, JobStatus.COMPLETED)
    return job.id


def test_a_finished_training_job_is_registered_with_the_pytorch_inference_image(harness: Harness) -> None:
    job_id = finished_training_job(harness)

    status, record = harness.call("POST", "/models/register?adapter_instance=aws&project=Demo",
                                  {"ModelName": "digits", "TrainingJobId": job_id, "InstanceType": "ml.m5.large"})

    assert status == 201, record
    described = harness.sagemaker.describe_model(ModelName="digits")
    container = described["PrimaryContainer"]
    assert (container["Image"], container["ModelDataUrl"]) == (IMAGE, MODEL_TAR)
    assert container["Environment"]["SAGEMAKER_PROGRAM"] == "inference.py"
    assert container["Environment"]["SAGEMAKER_SUBMIT_DIRECTORY"] == "/opt/ml/model/code"
    assert described["ExecutionRoleArn"] == ROLE
    assert record["sourceID"] == "digits" and record["arn"] == described["ModelArn"]
    assert record["sourceOrg"] == "AWS SageMaker"
    assert json.loads(record["rawPayload"])["ModelName"] == "digits"


def test_a_bad_sagemaker_field_in_a_model_route_answers_its_4xx_not_502(harness: Harness,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # validation.py's InvalidSageMakerField is an InvalidRequest and a BackendError (the seeds' error),
    # and a BackendError answers 502: the one handler must pick the 4xx. The training instance-type
    # check stands in for a route that uses it.
    monkeypatch.setattr(harness.executor.platform, "inference_image",
                        lambda instance_type: validate_instance_type(instance_type, "InstanceType"))

    status, body = harness.call("POST", "/models/register", {
        "ModelName": "digits", "TrainingJobId": finished_training_job(harness), "InstanceType": "ml.nope.large"})

    assert (status, body["field"]) == (422, "InstanceType"), body
    assert "digits" not in harness.models()


def test_the_sagemaker_platform_is_one_object_for_its_jobs_and_its_records(harness: Harness) -> None:
    platform = harness.executor.platform

    assert isinstance(platform, SageMakerPlatform) and isinstance(platform, Platform)
    assert (platform.name, platform.kinds) == ("sagemaker", {"pipeline", "training", "automl", "tuning", "endpoint",
                                                             "transform"})


def test_an_endpoint_is_created_by_a_queued_job_that_the_monitor_ends(harness: Harness) -> None:
    harness.register_endpoint("digits-v1", PrimaryContainer=model_container())
    deployed = harness.deploy("digits", "digits-v1")
    assert deployed["status"] == "Creating"
    assert "digits" not in harness.moto.endpoints  # nothing is called on the request thread

    harness.work()
    assert harness.moto.endpoints["digits"].endpoint_config_name == "digits-v1"
    harness.moto.endpoints["digits"].endpoint_status = "Creating"  # moto is InService at once
    harness.monitor()
    assert harness.job(deployed["jobId"]).status is JobStatus.RUNNING
    assert harness.call("GET", "/endpoints/digits")[1]["status"] == "Creating"

    harness.moto.endpoints["digits"].endpoint_status = "InService"
    harness.monitor()

    # The record the routes answer is the platform contract's; here, that it names AWS's endpoint.
    assert harness.job(deployed["jobId"]).status is JobStatus.COMPLETED
    assert harness.call("GET", "/endpoints/digits")[1]["arn"].endswith(":endpoint/digits")


def test_infer_sends_json_csv_and_s3_objects_and_returns_the_endpoint_answer(harness: Harness) -> None:
    harness.register_endpoint("digits-v1", PrimaryContainer=model_container())
    harness.deploy("digits", "digits-v1")
    harness.work()
    harness.monitor()
    answers = [{"predictions": [{"label": "7", "probabilities": {"7": 0.9}}]}, {"predictions": [{"label": "1"}]},
               {"predictions": [{"label": "3"}]}]
    requests.post("http://motoapi.amazonaws.com/moto-api/static/sagemaker/endpoint-results", json={
        "results": [{"Body": json.dumps(answer), "ContentType": "application/json"} for answer in answers]})
    boto3.client("s3", region_name=REGION).put_object(Bucket=BUCKET, Key="inputs/row.csv", Body=b"3,3,3\n")

    assert harness.call("POST", "/endpoints/digits/infer", {"instances": [[[0, 255], [255, 0]]]}) == (200, answers[0])
    csv = harness.http.post(f"{API}/endpoints/digits/infer", data=b"1,2,3\n", content_type="text/csv")
    assert (csv.status_code, csv.get_json()) == (200, answers[1])
    assert harness.call("POST", "/endpoints/digits/infer", {"S3Uri": f"s3://{BUCKET}/inputs/row.csv"}) == (200, answers[2])

    # What moto received, read back from its result cache (moto 5.2 files it under endpoint None).
    received = sagemakerruntime_backends[DEFAULT_ACCOUNT_ID][REGION].results
    sent = [json.loads(base64.b64decode(key)) for cache in received.values() for key in cache]
    assert [item["Body"] for item in sent] == [json.dumps({"instances": [[[0, 255], [255, 0]]]}), "1,2,3\n",
                                               "3,3,3\n"]
    status, body = harness.call("POST", "/endpoints/digits/infer", {"S3Uri": "https://example.com/x.csv"})
    assert (status, body["field"]) == (400, "S3Uri")
    status, body = harness.call("POST", "/endpoints/digits/infer", {"S3Uri": f"s3://{BUCKET}/inputs/missing.csv"})
    assert (status, body["field"]) == (404, "S3Uri")


@pytest.mark.parametrize("model_status, status, field", [
    (400, 400, "body"), (406, 406, "Accept"), (413, 413, "body"), (415, 400, "body"), (500, 502, None),
    (None, 502, None)])
def test_a_model_error_answers_the_models_own_status_as_the_local_host_does(
        harness: Harness, caplog: pytest.LogCaptureFixture, model_status: int | None, status: int,
        field: str | None) -> None:
    harness.register_endpoint("digits-v1", PrimaryContainer=model_container())
    harness.deploy("digits", "digits-v1")
    harness.work()
    harness.monitor()
    words = "unsupported accept type 'text/csv': only application/json is offered"
    log_stream = "arn:aws:logs:us-east-1:123456789012:log-group:/aws/sagemaker/Endpoints/digits"
    # moto's InvokeEndpoint never fails, and the machine cannot reach SageMaker: botocore's Stubber
    # gives the ModelError as botocore parses it, its members checked against the ModelError shape of
    # botocore's sagemaker-runtime model (Message, OriginalStatusCode, OriginalMessage, LogStreamArn; 424).
    # The toolkit answers a refusal as its message, a newline and the container's traceback
    # (sagemaker-inference-toolkit, transformer.py handle_error): the traceback is not the caller's.
    traceback = 'Traceback (most recent call last):\n  File "/opt/ml/model/code/inference.py", line 120'
    modeled = {"OriginalMessage": f"{words}\n{traceback}", "LogStreamArn": log_stream}
    if model_status is not None:
        modeled["OriginalStatusCode"] = model_status
    runtime = harness.clients.client("sagemaker-runtime")
    caplog.set_level(logging.WARNING, logger="mlops.sagemaker.serving")
    with Stubber(runtime) as stubber:
        stubber.add_client_error(
            "invoke_endpoint", "ModelError", http_status_code=424, modeled_fields=modeled,
            service_message=f"Received client error ({model_status}) from primary with message \"{words}\". See "
                            "https://us-east-1.console.aws.amazon.com/cloudwatch/home in account 123456789012 "
                            "for more information.")
        answer_status, body = harness.call("POST", "/endpoints/digits/infer", {"instances": [[[0, 255]]]})
        stubber.assert_no_pending_responses()

    assert answer_status == status and words in body["error"], body
    assert "123456789012" not in body["error"]  # SageMaker's console link is for the operator, not the caller
    assert "Traceback" not in body["error"] and "/opt/ml" not in body["error"]
    if field is not None:
        assert body["field"] == field
    else:
        assert "endpoint 'digits': the model failed" in body["error"] and "field" not in body
        assert log_stream in caplog.text


@pytest.fixture
def slow_runtime(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """A loopback server standing in for the SageMaker runtime endpoint: it answers each call after 8 s.

    The machine cannot reach SageMaker, and moto's InvokeEndpoint answers at once: the slow endpoint is faked
    here, at that edge, where botocore sends the call (AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME, which botocore honours).
    Yields the paths of the calls it received.
    """
    released = threading.Event()
    received: list[str] = []

    class SlowEndpoint(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            received.append(self.path)
            released.wait(8)
            answer = b'{"predictions": [0.9]}'
            try:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
            except OSError:
                pass  # the client stopped reading, as it should have

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), SlowEndpoint)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", f"http://127.0.0.1:{server.server_port}")
    yield received
    released.set()
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.mark.parametrize("harness", [{"explain_timeout": "1.5"}], indirect=True)
def test_a_sagemaker_explanation_past_its_deadline_answers_504_naming_the_setting(
        slow_runtime: list[str], harness: Harness) -> None:
    harness.register_endpoint("digits-v1", PrimaryContainer=model_container())
    harness.deploy("digits", "digits-v1")
    harness.work()
    harness.monitor()

    # moto 5.2 drops ExplainerConfig from CreateEndpointConfig: DescribeEndpointConfig gets it added as AWS
    # returns it (API reference, DescribeEndpointConfig.ExplainerConfig).
    def with_clarify(parsed: dict[str, Any], **_: Any) -> None:
        parsed["ExplainerConfig"] = {"ClarifyExplainerConfig": {"ShapConfig": {
            "ShapBaselineConfig": {"ShapBaseline": "1,2,3"}}}}

    harness.clients.client("sagemaker").meta.events.register("after-call.sagemaker.DescribeEndpointConfig",
                                                             with_clarify)
    started = time.monotonic()
    answer = harness.http.post(f"{API}/endpoints/digits/explain", data=b"1,2,3\n", content_type="text/csv")
    took = time.monotonic() - started
    assert answer.status_code == 504, answer.get_json()
    error = answer.get_json()["error"]
    assert "explaining endpoint 'digits' took longer than EXECUTOR_EXPLAIN_TIMEOUT (1.5 s)" in error, error
    assert took < 4, took  # not botocore's 70 s read of an ordinary invocation, nor the 8 s of the slow answer
    assert slow_runtime == ["/endpoints/digits/invocations"]  # sent once: an invocation is not retried


def test_a_refused_endpoint_config_takes_back_the_model_made_for_it(harness: Harness,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # moto accepts any endpoint config, so a fake answers as AWS does when the instance quota is 0.
    def refuse(**_: Any) -> None:
        raise ClientError({"Error": {"Code": "ResourceLimitExceeded", "Message": "quota is 0"}},
                          "CreateEndpointConfig")

    monkeypatch.setattr(harness.clients.client("sagemaker"), "create_endpoint_config", refuse)

    status, body = harness.call("POST", "/endpoints/register", {
        "ModelName": "digits", "EndpointConfigName": "digits-v1", "InstanceType": "ml.g5.xlarge",
        "PrimaryContainer": model_container()})

    assert status == 429 and body["field"] == "EndpointConfigName" and "quota" in body["error"]
    assert "digits" not in harness.models()
    assert harness.call("GET", "/models/list") == (200, [])


def test_datasets_are_put_in_s3_and_deleted_from_it(harness: Harness) -> None:
    answer = harness.http.post(f"{API}/datasets?project=Demo", data={
        "Bucket": BUCKET, "Key": "datasets/iris.csv", "file": (io.BytesIO(b"a,b\n1,2\n"), "iris.csv")},
        content_type="multipart/form-data")
    assert answer.status_code == 201, answer.get_json()
    record = answer.get_json()
    assert record["artifacts"] == {"S3Uri": f"s3://{BUCKET}/datasets/iris.csv", "size": 8}
    s3 = boto3.client("s3", region_name=REGION)
    assert s3.get_object(Bucket=BUCKET, Key="datasets/iris.csv")["Body"].read() == b"a,b\n1,2\n"

    missing = harness.http.post(f"{API}/datasets", data={
        "Bucket": "no-such-bucket", "Key": "x.csv", "file": (io.BytesIO(b"x"), "x.csv")},
        content_type="multipart/form-data")
    assert missing.status_code == 404 and missing.get_json()["field"] == "Bucket"

    assert harness.call("DELETE", f"/datasets/{BUCKET}/datasets/iris.csv")[0] == 200
    assert s3.list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0


def test_a_transform_is_checked_once_at_submission(harness: Harness) -> None:
    # A model SageMaker has but the executor never recorded: only a DescribeModel can find it.
    harness.sagemaker.create_model(ModelName="outside", ExecutionRoleArn=ROLE, PrimaryContainer=model_container())
    before = harness.clients.counter.total("sagemaker", "DescribeModel")

    status, record = harness.call("POST", "/pipelines/inference", {
        "TransformJobName": "outside-batch", "ModelName": "outside",
        "TransformInput": {"DataSource": {"S3DataSource": {"S3Uri": f"s3://{BUCKET}/batch/"}}},
        "TransformResources": {"InstanceType": "ml.m5.large"}})

    assert status == 202, record
    assert harness.clients.counter.total("sagemaker", "DescribeModel") - before == 1
