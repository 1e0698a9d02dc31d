"""The Essedum backend's calls, replayed as its Java source builds them and parsed as it parses them.

Every request here is shaped by the backend's code in the public repository
essedum-project/essedum-platform, named in each test:
- the job API: `ICIPRemoteExecutorJob` (okhttp, an `accept` header and nothing else: no token; the
  body is `RemoteBody` as `getPayloadForScriptExecution` fills it from free-text datasource fields),
  polled and parsed by `ICIPRemoteLoggerService`;
- the MLOps API: `ICIPMlopsController` → `ICIPMlOpsRestAdapterService` → `ICIPAdaptersController` →
  `ICIPDataSetServiceUtilRestAbstract`, which calls `ICIPPluginConstants.MLOPS_APIS` with the UI's
  headers (the user's JWT in `Authorization`), the query `isInstance, <id>, isCached, adapter_instance,
  project`, and the path id URL-encoded with `/` and `:` put back; the SageMaker adapter
  (`ICIPModelAWSServiceSageMaker`) builds the register bodies with optString/optInt and parses records.

Both platforms: local, and SageMaker on moto. The executor runs with a token and trusts loopback, as
a deployment next to the backend would; every call below carries no executor token.
"""
from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote, urlencode

import numpy as np
import pytest
import torch
from aws_fixtures import (BUCKET, REGION, ROLE_ARN, aws, aws_setup, clients, make_config,  # noqa: F401
                          set_training_state, shared_session)
from conftest import ROOT, wait_for

from app import create_app
from job import JobStatus

TOKEN = "executor-token-for-people"
USER_JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJkZW1vQGVzc2VkdW0iLCJyb2xlIjoiYWRtaW4ifQ.dWktc2lnbmF0dXJl"
ADAPTER, PROJECT = "aws-sagemaker-remote", "Demo"
EXPORT_BUCKET = "essedum-exports"
IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.5-cpu-py311"

# ICIPPluginConstants.MLOPS_APIS, with the method ICIPMlopsController maps each one to.
MLOPS_APIS = {
    "projects_datasets_create": ("POST", "/api/service/v1/datasets"),
    "projects_datasets_list_list": ("GET", "/api/service/v1/datasets/list"),
    "projects_datasets_get": ("GET", "/api/service/v1/datasets/{dataset_id}"),
    "projects_datasets_delete": ("DELETE", "/api/service/v1/datasets/{dataset_id}"),
    "projects_datasets_export_create": ("POST", "/api/service/v1/datasets/{dataset_id}/export"),
    "projects_endpoints_create": ("POST", "/api/service/v1/endpoints/register"),
    "projects_endpoints_list_list": ("GET", "/api/service/v1/endpoints/list"),
    "projects_endpoints_get": ("GET", "/api/service/v1/endpoints/{endpoint_id}"),
    "projects_endpoints_delete": ("DELETE", "/api/service/v1/endpoints/{endpoint_id}/delete"),
    "projects_endpoints_deploy_model_create": ("POST", "/api/service/v1/endpoints/{endpoint_id}/deploy_model"),
    "projects_endpoints_explain_create": ("POST", "/api/service/v1/endpoints/{endpoint_id}/explain"),
    "projects_endpoints_infer_create": ("POST", "/api/service/v1/endpoints/{endpoint_id}/infer"),
    "projects_endpoints_undeploy_models_create": ("POST", "/api/service/v1/endpoints/{endpoint_id}/undeploy_models"),
    "projects_models_list": ("GET", "/api/service/v1/models/list"),
    "projects_models_register_create": ("POST", "/api/service/v1/models/register"),
    "projects_models_get": ("GET", "/api/service/v1/models/{model_id}"),
    "projects_models_delete": ("DELETE", "/api/service/v1/models/{model_id}"),
    "projects_models_export_create": ("POST", "/api/service/v1/models/{model_id}/export"),
    "training_automl_simplified_create": ("POST", "/api/service/v1/pipelines/training/automl"),
    "training_custom_script_create": ("POST", "/api/service/v1/pipelines/training/custom_script"),
    "training_istlist": ("GET", "/api/service/v1/pipelines/training/list"),
    "training_train_create": ("POST", "/api/service/v1/pipelines/training/train"),
    "training_cancel_list": ("GET", "/api/service/v1/pipelines/training/{training_job_id}/cancel"),
    "training_delete": ("DELETE", "/api/service/v1/projects_pipelines/{training_job_id}/delete"),
    "training_get_list": ("GET", "/api/service/v1/pipelines/training/{training_job_id}/get"),
    "projects_inferencePipelines_create": ("POST", "/api/service/v1/pipelines/inference"),
    "projects_inferencePipelines_list_list": ("GET", "/api/service/v1/pipelines/inference/list"),
    "projects_inferencePipelines_delete": ("DELETE", "/api/service/v1/pipelines/inference/{inference_job_id}"),
    "projects_inferencePipelines_cancel": ("POST", "/api/service/v1/pipelines/inference/{inference_job_id}/cancel"),
    "projects_inferencePipelines_get": ("POST", "/api/service/v1/pipelines/inference/{inference_job_id}/get"),
}
# What the UI sends and ICIPMlOpsRestAdapterService forwards unchanged (Content-Length aside).
UI_HEADERS = {"Authorization": f"Bearer {USER_JWT}", "Cookie": f"access_token={USER_JWT}",
              "Referer": "https://essedum.example/", "Project": "2", "Projectname": PROJECT,
              "Rolename": "IT Portfolio Manager", "Roleid": "1", "Accept": "application/json, text/plain, */*"}
# okhttp's own headers beside the one ICIPRemoteExecutorJob adds.
OKHTTP_HEADERS = {"accept": "application/json", "User-Agent": "okhttp/4.12.0", "Accept-Encoding": "gzip"}
STATUS_TIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{6}(Z|[+-]\d{2}:\d{2})$")
RECORD_TIME = "%Y-%m-%d %H-%M-%S"


# -- how the backend builds its requests -------------------------------------------------------

def remote_body(storage: str, environment: dict[str, str]) -> dict[str, Any]:
    """RemoteBody as getPayloadForScriptExecution fills it for a local-storage datasource.

    The credentials come from optString on the upload datasource: "" where a field is not set. The
    command is python <file> with the trigger-time arguments appended.
    """
    return {"bucket": "essedum", "command": 'python pipe1.py  "Last_Execution_Time":"-1" '
                                            '"Current_Execution_Time":"Fri, 27 Nov 2026 10:00:00 GMT"',
            "credentials": {"endpoint": "", "access_key": "", "secret_key": ""},
            "environment": environment, "input_artifacts": "Demo/remote/pipe1/3/Input", "name": "pipe1",
            "project_id": PROJECT, "version": "3", "storage": storage}


def java_path(path: str) -> str:
    """URL-encode a path as ICIPDataSetServiceUtilRestAbstract does: URLEncoder, then / and : put back."""
    return quote(path, safe="/:*").replace("~", "%7E")


class Backend:
    """Sends requests as the backend would, through a Flask test client with the loopback address."""

    def __init__(self, http: Any):
        self.http = http

    def job(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, str]:
        """An ICIPRemoteExecutorJob call: okhttp, `accept` only; a POST body is application/json."""
        headers = dict(OKHTTP_HEADERS)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json; charset=utf-8"
        answer = self.http.open(path, method=method, headers=headers, data=data)
        return answer.status_code, answer.get_data(as_text=True)

    def mlops(self, key: str, ids: dict[str, str] | None = None, body: Any = None, *, raw: bytes | None = None,
              content_type: str = "application/json") -> tuple[int, str, Any]:
        """An MLOPS_APIS call as the adapter proxy makes it: the UI's headers and the proxy's query."""
        method, path = MLOPS_APIS[key]
        ids = ids or {}
        for name, value in ids.items():
            path = path.replace("{" + name + "}", value)
        query = urlencode({"isInstance": "false", **ids, "isCached": "false", "adapter_instance": ADAPTER,
                           "project": PROJECT})
        headers = dict(UI_HEADERS)
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if data is not None:
            headers["Content-Type"] = content_type
        answer = self.http.open(f"{java_path(path)}?{query}", method=method, headers=headers, data=data)
        text = answer.get_data(as_text=True)
        assert answer.mimetype == "application/json", (key, answer.status_code, text[:200])
        return answer.status_code, text, json.loads(text)


def multipart(field: str, filename: str, content: bytes) -> tuple[bytes, str]:
    """The FILE body the REST util sends: one part named `file`, nothing else."""
    boundary = "JavaBoundary7d3f"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + content + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


# -- how the backend parses the answers ----------------------------------------------------------

def get_string(document: dict[str, Any], key: str) -> str:
    """org.json's getString: the key must be there and hold a string."""
    assert key in document, f"JSONObject[\"{key}\"] not found"
    assert isinstance(document[key], str), f"JSONObject[\"{key}\"] is not a string: {document[key]!r}"
    return document[key]


def finish_time(status: dict[str, Any]) -> datetime:
    """ICIPRemoteLoggerService on COMPLETED, ERROR and CANCELLED: started + timestamp seconds."""
    started, finished = get_string(status, "started"), get_string(status, "finished")
    assert STATUS_TIME.match(started) and STATUS_TIME.match(finished), (started, finished)
    # get("timestamp").toString() then Double.parseDouble: JSON null would read "null" and throw.
    assert isinstance(status["timestamp"], (int, float)) and not isinstance(status["timestamp"], bool)
    finish = datetime.fromisoformat(started) + _seconds(status["timestamp"])
    assert abs((finish - datetime.fromisoformat(finished)).total_seconds()) < 2e-6, status
    return finish


def _seconds(value: float):
    from datetime import timedelta

    return timedelta(microseconds=int(value * 1000 * 1_000_000) / 1000)


def parse_model(record: dict[str, Any]) -> None:
    """parseMLFedModel: sourceID, get(description|artifacts|container), getString(name), the dates."""
    source_id = record.get("sourceId") or record.get("sourceID")
    assert isinstance(source_id, str) and source_id
    for key in ("description", "artifacts", "container"):
        assert key in record, f"JSONObject[\"{key}\"] not found"
    get_string(record, "name")
    for key in ("createdOn", "syncDate"):
        datetime.strptime(record[key], RECORD_TIME)


def parse_endpoint(record: dict[str, Any]) -> None:
    """parseFedEndpoint: optString name is the id; syncDate and createdOn in yyyy-MM-dd HH-mm-ss."""
    assert isinstance(record["name"], str) and record["name"]
    for key in ("createdOn", "syncDate"):
        datetime.strptime(record[key], RECORD_TIME)


def deleted(text: str) -> bool:
    """deleteModelFromRemoteVM / deleteEndpointFromRemoteVM: success is an answer starting with '{'."""
    return text.startswith("{")


# -- the local platform ---------------------------------------------------------------------------

@pytest.fixture
def local(make_app) -> Any:
    return make_app(api_token=TOKEN, trusted_networks="127.0.0.0/8")


def write_pipeline(storage_root: Path) -> None:
    folder = storage_root / "Demo" / "remote" / "pipe1" / "3" / "Input"
    folder.mkdir(parents=True)
    (folder / "pipe1.py").write_text(
        "import os, sys\n"
        "print('args', sys.argv[1:])\n"
        "print('secret', os.environ['my api key'])\n", encoding="utf-8")


def wait_final(backend: Backend, task_id: str) -> dict[str, Any]:
    def final() -> dict[str, Any] | None:
        status, text = backend.job("GET", f"/execute/{task_id}/getStatus")
        assert status == 200, text
        body = json.loads(text)
        return body if body["task_status"] in ("COMPLETED", "ERROR", "CANCELLED") else None

    return wait_for(final, timeout=60, interval=0.1)


def test_the_job_api_runs_a_pipeline_as_the_backend_sends_and_polls_it(local):
    """ICIPRemoteExecutorJob.executeScript → getTaskStatus → getLog; ICIPRemoteLoggerService's parse."""
    executor = local.config["EXECUTOR"]
    write_pipeline(executor.config.storage_root)
    executor.queue.start()
    backend = Backend(local.test_client())
    # storage and credentials come verbatim from free-text fields; a secret's name is the user's.
    status, text = backend.job("POST", "/execute", remote_body("Local", {"my api key": "s3cr3t-7f"}))
    assert status in (200, 201), text
    task_id = get_string(json.loads(text), "task_id")

    final = wait_final(backend, task_id)
    assert final["task_status"] == "COMPLETED", final
    finish_time(final)
    status, text = backend.job("GET", f"/execute/{task_id}/getLog")
    content = get_string(json.loads(text)["logs"], "content")
    assert status == 200 and "secret ****" in content and "s3cr3t-7f" not in content
    assert "Last_Execution_Time" in content
    status, text = backend.job("GET", f"/execute/{task_id}/stop")  # ICIPRemoteStopJobService: 200 is enough
    assert status == 200 and json.loads(text) == {"Task cancelled": False}
    status, text = backend.job("GET", f"/execute/{task_id}/getOutputArtifacts")
    assert status == 200 and isinstance(json.loads(text), dict)


def test_a_job_cancelled_while_waiting_gives_the_backend_all_three_times(local):
    """ICIPRemoteLoggerService's CANCELLED branch reads started, finished and timestamp too."""
    write_pipeline(local.config["EXECUTOR"].config.storage_root)
    backend = Backend(local.test_client())  # the queue is not started: the job stays WAITING
    _, text = backend.job("POST", "/execute", remote_body("local", {}))
    task_id = json.loads(text)["task_id"]
    assert backend.job("GET", f"/execute/{task_id}/stop") == (200, '{"Task cancelled":true}\n')
    _, text = backend.job("GET", f"/execute/{task_id}/getStatus")
    status = json.loads(text)
    assert status["task_status"] == "CANCELLED" and status["timestamp"] == 0
    assert status["started"] == status["finished"]
    finish_time(status)


def test_an_untrusted_client_needs_the_token_the_backend_never_sends(local):
    client = local.test_client()
    outsider = {"REMOTE_ADDR": "192.0.2.7"}
    assert client.get("/execute", headers=OKHTTP_HEADERS, environ_base=outsider).status_code == 401
    forwarded = client.get("/api/service/v1/models/list", headers=UI_HEADERS, environ_base=outsider)
    assert forwarded.status_code == 401 and USER_JWT not in forwarded.get_data(as_text=True)
    with_token = client.get("/execute", headers={"Authorization": f"Bearer {TOKEN}"}, environ_base=outsider)
    assert with_token.status_code == 200


def image_model(folder: Path) -> Path:
    """A model folder as train.py writes it, served by the bundled inference.py.

    Its network's only evidence for class "one" is the 4x4 centre of an 8x8 grey image, so an
    explanation must find the centre and nothing else.
    """
    (folder / "code").mkdir(parents=True)
    for name in ("inference.py", "preprocessing.py"):
        shutil.copy(ROOT / "training_scripts" / name, folder / "code" / name)
    (folder / "labels.json").write_text(json.dumps({
        "labels": {"0": "zero", "1": "one"}, "image_size": 8, "channels": 1,
        "normalization": {"mean": [0.0], "std": [1.0]}}), encoding="utf-8")
    layer = torch.nn.Linear(64, 2)
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.copy_(torch.tensor([0.8, 0.0]))
        centre = torch.zeros(8, 8)
        centre[2:6, 2:6] = 1.0
        layer.weight[1] = centre.flatten() * 0.1
    torch.jit.script(torch.nn.Sequential(torch.nn.Flatten(), layer)).save(str(folder / "model.pt"))
    return folder


def test_the_mlops_routes_on_the_local_platform(local):
    """ICIPModelAWSServiceSageMaker's register, deploy, list and delete calls, and the UI's proxied routes."""
    executor = local.config["EXECUTOR"]
    executor.queue.start()
    image_model(executor.config.storage_root / "models" / "centre")
    backend = Backend(local.test_client())

    # registerModelFromRemoteVM: getModelBodyForRegister sends every field, "" where the user gave none.
    status, text, model = backend.mlops("projects_models_register_create", body={
        "ExecutionRoleArn": "", "ModelName": "centre", "Containers": [{
            "ContainerHostname": "", "Image": "", "Mode": "", "ModelDataUrl": "models/centre", "Environment": {}}]})
    assert status == 201 and text.startswith("{"), text
    parse_model(model)
    status, text, listed = backend.mlops("projects_models_list")
    assert text.startswith("[") and [item["sourceID"] for item in listed] == ["centre"]
    for item in listed:
        parse_model(item)

    # getBodyObjForEndpointsRegister: PrimaryContainer is always there, empty; optInt gives 0 when unset.
    status, text, config = backend.mlops("projects_endpoints_create", body={
        "ExecutionRoleArn": "", "ModelName": "centre", "VariantName": "AllTraffic", "InitialInstanceCount": 0,
        "InstanceType": "ml.m5.large", "EndpointConfigName": "centre-config",
        "PrimaryContainer": {"Image": "", "ModelDataUrl": ""}})
    assert status == 201 and config["name"] == "centre-config", text
    assert config["deployment"]["InitialInstanceCount"] == 1
    status, text, _ = backend.mlops("projects_endpoints_deploy_model_create", {"endpoint_id": "centre"},
                                    {"EndpointConfigName": "centre-config", "EndpointName": "centre"})
    assert status == 202, text
    wait_for(lambda: backend.mlops("projects_endpoints_get", {"endpoint_id": "centre"})[2]["status"] == "InService")
    _, text, endpoints = backend.mlops("projects_endpoints_list_list")
    assert text.startswith("[") and {item["name"] for item in endpoints} == {"centre", "centre-config"}
    for item in endpoints:
        parse_endpoint(item)

    bright_centre = np.zeros((8, 8), dtype=np.uint8)
    bright_centre[2:6, 2:6] = 255
    status, _, prediction = backend.mlops("projects_endpoints_infer_create", {"endpoint_id": "centre"},
                                          {"instances": [bright_centre.tolist()]})
    assert status == 200 and prediction["predictions"][0]["label"] == "one"
    status, text, explanation = backend.mlops("projects_endpoints_explain_create", {"endpoint_id": "centre"},
                                              {"instances": [bright_centre.tolist()]})
    assert status == 200, text
    assert explanation["method"] == "occlusion" and explanation["label"] == "one"
    assert explanation["probabilities"]["one"] == pytest.approx(prediction["predictions"][0]["probabilities"]["one"])
    saliency = np.array(explanation["saliency"])
    assert saliency.shape == (8, 8)
    assert saliency[2:6, 2:6].min() > 0.005 and np.abs(saliency[:2, :]).max() < 1e-6

    status, text, export = backend.mlops("projects_models_export_create", {"model_id": "centre"}, {})
    assert status == 200 and export["format"] == "file", text
    download = local.test_client().get(export["download"], headers=UI_HEADERS)
    archive = download.get_data()
    assert download.status_code == 200 and int(download.headers["Content-Length"]) == export["size"] == len(archive)
    assert hashlib.sha256(archive).hexdigest() == export["sha256"] == download.headers["X-Content-SHA256"]
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        assert {"model.pt", "labels.json", "code/inference.py"} <= set(tar.getnames())
    assert backend.mlops("projects_models_export_create", {"model_id": "centre"}, {})[2]["sha256"] == export["sha256"]

    status, text, undeployed = backend.mlops("projects_endpoints_undeploy_models_create", {"endpoint_id": "centre"}, {})
    assert status == 200 and undeployed["status"] == "Undeployed", text
    assert backend.mlops("projects_endpoints_infer_create", {"endpoint_id": "centre"},
                         {"instances": [bright_centre.tolist()]})[0] == 409
    assert backend.mlops("projects_endpoints_get", {"endpoint_id": "centre-config"})[2]["status"] == "Created"
    # Taken down, the endpoint no longer holds the model: the backend's delete goes to the sourceID.
    assert deleted(backend.mlops("projects_endpoints_delete", {"endpoint_id": "centre"})[1])
    assert deleted(backend.mlops("projects_endpoints_delete", {"endpoint_id": "centre-config"})[1])
    status, text, _ = backend.mlops("projects_models_delete", {"model_id": model["sourceID"]})
    assert status == 200 and deleted(text)
    assert backend.mlops("projects_models_get", {"model_id": "centre"})[0] == 404


def test_explain_answers_501_for_a_model_without_class_probabilities(local):
    """A platform that cannot explain says why, in JSON (the route exists on both platforms)."""
    executor = local.config["EXECUTOR"]
    executor.queue.start()
    folder = executor.config.storage_root / "models" / "scores"
    folder.mkdir(parents=True)
    torch.jit.script(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))).save(str(folder / "model.pt"))
    backend = Backend(local.test_client())
    backend.mlops("projects_models_register_create", body={"ModelName": "scores",
                                                           "Containers": [{"ModelDataUrl": "models/scores"}]})
    backend.mlops("projects_endpoints_create", body={"ModelName": "scores", "EndpointConfigName": "scores-config"})
    backend.mlops("projects_endpoints_deploy_model_create", {"endpoint_id": "scores"},
                  {"EndpointConfigName": "scores-config", "EndpointName": "scores"})
    wait_for(lambda: backend.mlops("projects_endpoints_get", {"endpoint_id": "scores"})[2]["status"] == "InService")
    status, text, body = backend.mlops("projects_endpoints_explain_create", {"endpoint_id": "scores"},
                                       {"instances": [np.zeros((8, 8)).tolist()]})
    assert status == 501 and "per-class probabilities" in body["error"], text
    two = {"instances": [np.zeros((8, 8)).tolist()] * 2}
    assert backend.mlops("projects_endpoints_explain_create", {"endpoint_id": "scores"}, two)[0] == 400
    large = {"instances": [np.zeros((300, 300)).tolist()]}
    assert backend.mlops("projects_endpoints_explain_create", {"endpoint_id": "scores"}, large)[0] == 413


def test_datasets_arrive_in_both_real_shapes_and_export_with_their_hash(local):
    """ICIPAdaptersController's file proxy (multipart, only `file`) and the JSON {Bucket, Key, local_dataset_path}."""
    executor = local.config["EXECUTOR"]
    backend = Backend(local.test_client())
    content = b"pixel_0,label\n0,1\n"
    raw, kind = multipart("file", "digits.csv", content)
    status, text, uploaded = backend.mlops("projects_datasets_create", raw=raw, content_type=kind)
    assert status == 201 and uploaded["sourceID"] == "datasets/digits.csv", text

    source = executor.config.storage_root / "incoming" / "churn.csv"
    source.parent.mkdir(parents=True)
    source.write_bytes(b"age,churned\n42,yes\n")
    status, text, imported = backend.mlops("projects_datasets_create", body={
        "Bucket": "churn", "Key": "", "local_dataset_path": "incoming/churn.csv"})
    assert status == 201 and imported["name"] == "churn/churn.csv", text
    for outside in ("../secret.csv", "/etc/passwd"):
        assert backend.mlops("projects_datasets_create", body={"local_dataset_path": outside})[0] == 422
    (executor.config.storage_root / "link.csv").symlink_to("/etc/passwd")
    assert backend.mlops("projects_datasets_create", body={"local_dataset_path": "link.csv"})[0] == 422

    _, text, listed = backend.mlops("projects_datasets_list_list")
    assert text.startswith("[") and {item["name"] for item in listed} == {"datasets/digits.csv", "churn/churn.csv"}
    status, _, export = backend.mlops("projects_datasets_export_create", {"dataset_id": "datasets/digits.csv"}, {})
    assert status == 200 and export["sha256"] == hashlib.sha256(content).hexdigest()
    assert local.test_client().get(export["download"], headers=UI_HEADERS).get_data() == content
    assert deleted(backend.mlops("projects_datasets_delete", {"dataset_id": "churn/churn.csv"})[1])


def test_training_jobs_are_listed_cancelled_and_deleted_by_the_ids_the_backend_keeps(local):
    """training_istlist, training_get_list, training_cancel_list and training_delete (projects_pipelines)."""
    write_pipeline(local.config["EXECUTOR"].config.storage_root)
    backend = Backend(local.test_client())  # the queue is not started: the job waits
    status, text, accepted = backend.mlops("training_custom_script_create", body=remote_body("LOCAL", {}))
    assert status == 201, text
    _, text, listed = backend.mlops("training_istlist")
    assert text.startswith("[") and len(listed) == 1
    record = listed[0]
    parse_model(record)
    source_id = record["sourceID"]
    assert backend.mlops("training_get_list", {"training_job_id": source_id})[2]["id"] == accepted["task_id"]
    status, _, cancelled = backend.mlops("training_cancel_list", {"training_job_id": source_id})
    assert status == 200 and cancelled["status"] == "Stopped"
    status, text, gone = backend.mlops("training_delete", {"training_job_id": source_id})
    assert status == 200 and gone["deleted"] is True, text
    assert backend.mlops("training_get_list", {"training_job_id": source_id})[0] == 404
    assert local.config["EXECUTOR"].store.get(accepted["task_id"]) is None


def test_a_running_training_job_is_stopped_before_it_is_deleted(local):
    executor = local.config["EXECUTOR"]
    folder = executor.config.storage_root / "Demo" / "remote" / "pipe1" / "3" / "Input"
    folder.mkdir(parents=True)
    (folder / "pipe1.py").write_text("import time\nprint('started', flush=True)\ntime.sleep(60)\n")
    executor.queue.start()
    backend = Backend(local.test_client())
    _, _, accepted = backend.mlops("training_custom_script_create", body=remote_body("local", {}))
    job_id = accepted["task_id"]
    wait_for(lambda: executor.store.get(job_id).status is JobStatus.RUNNING and executor.store.get(job_id).pid)
    status, _, stopping = backend.mlops("training_delete", {"training_job_id": job_id})
    assert status == 202 and stopping == {**stopping, "status": "Stopping", "deleted": False}
    wait_for(lambda: executor.store.get(job_id).status is JobStatus.CANCELLED)
    assert backend.mlops("training_delete", {"training_job_id": job_id})[2]["deleted"] is True


def test_batch_inference_is_fetched_cancelled_and_deleted(local):
    """projects_inferencePipelines_get (POSTed), _cancel and _delete."""
    executor = local.config["EXECUTOR"]
    image_model(executor.config.storage_root / "models" / "centre")
    inputs = executor.config.storage_root / "batch"
    inputs.mkdir()
    (inputs / "rows.csv").write_text(",".join(["0"] * 64) + "\n", encoding="utf-8")
    backend = Backend(local.test_client())
    backend.mlops("projects_models_register_create", body={"ModelName": "centre", "Containers": [
        {"ModelDataUrl": "models/centre"}]})
    status, text, _ = backend.mlops("projects_inferencePipelines_create", body={
        "TransformJobName": "nightly", "ModelName": "centre",
        "TransformInput": {"DataSource": {"S3DataSource": {"S3Uri": "batch"}}, "ContentType": "text/csv"}})
    assert status == 202, text
    status, text, record = backend.mlops("projects_inferencePipelines_get", {"inference_job_id": "nightly"}, {})
    assert status == 200 and record["name"] == "nightly", text
    status, _, cancelled = backend.mlops("projects_inferencePipelines_cancel", {"inference_job_id": "nightly"}, {})
    assert status == 200 and cancelled["status"] == "Stopped"  # it had not started: the queue is idle
    status, _, gone = backend.mlops("projects_inferencePipelines_delete", {"inference_job_id": "nightly"})
    assert status == 200 and gone["deleted"] is True
    assert backend.mlops("projects_inferencePipelines_list_list")[2] == []


# -- SageMaker, on moto -------------------------------------------------------------------------

@pytest.fixture
def sagemaker(tmp_path, clients, aws_setup):  # noqa: F811
    clients.client("s3").create_bucket(Bucket=EXPORT_BUCKET)
    config = make_config(tmp_path, api_token=TOKEN, trusted_networks="127.0.0.0/8", export_buckets=EXPORT_BUCKET)
    application = create_app(config, clients=clients)
    yield application
    application.config["EXECUTOR"].store.close()


def work(app) -> None:
    executor = app.config["EXECUTOR"]
    job = executor.store.claim_next(["sagemaker"])
    assert job is not None
    executor.queue.run_job(job)


def test_the_job_api_on_sagemaker(sagemaker, clients):  # noqa: F811
    """The same ICIPRemoteExecutorJob calls; the pipeline runs as a SageMaker training job."""
    executor = sagemaker.config["EXECUTOR"]
    write_pipeline(executor.config.storage_root)
    backend = Backend(sagemaker.test_client())
    # SageMaker's own rule for environment names ([a-zA-Z_][a-zA-Z0-9_]*) still applies there.
    status, text = backend.job("POST", "/execute", remote_body("Local", {"API_KEY": "k"}))
    assert status == 201, text
    task_id = json.loads(text)["task_id"]
    work(sagemaker)
    name = executor.store.get(task_id).external_id
    # The trigger-time arguments are not --name value pairs: the bundled launcher runs the script with them.
    hyperparameters = clients.client("sagemaker").describe_training_job(TrainingJobName=name)["HyperParameters"]
    assert json.loads(hyperparameters["sagemaker_program"]) == "essedum_launch.py"
    # Split as the old executor's shell split it: the quotes go, the words stay.
    argv = json.loads(json.loads(hyperparameters["essedum-argv"]))
    assert argv == ["pipe1.py", "Last_Execution_Time:-1", "Current_Execution_Time:Fri, 27 Nov 2026 10:00:00 GMT"]
    bucket, key = json.loads(hyperparameters["sagemaker_submit_directory"])[len("s3://"):].split("/", 1)
    code = clients.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(code)) as tar:
        assert {"pipe1.py", "essedum_launch.py"} <= set(tar.getnames())
    set_training_state(name, "Completed", "Completed", billable_time_in_seconds=60)
    executor.queue.monitor_once()
    _, text = backend.job("GET", f"/execute/{task_id}/getStatus")
    final = json.loads(text)
    assert final["task_status"] == "COMPLETED", final
    finish_time(final)
    status, text = backend.job("GET", f"/execute/{task_id}/getLog")
    assert status == 200 and isinstance(get_string(json.loads(text)["logs"], "content"), str)


def test_the_launcher_runs_the_script_with_the_backends_exact_arguments(tmp_path):
    """What the SageMaker container runs: `python essedum_launch.py --essedum-argv <JSON>` in the code folder."""
    shutil.copy(ROOT / "training_scripts" / "essedum_launch.py", tmp_path)
    (tmp_path / "pipe1.py").write_text("import json, sys\nprint(json.dumps(sys.argv))\n", encoding="utf-8")
    argv = ["pipe1.py", "Last_Execution_Time:-1", "Current_Execution_Time:Fri, 27 Nov 2026 10:00:00 GMT"]
    ran = subprocess.run([sys.executable, "essedum_launch.py", "--essedum-argv", json.dumps(argv)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(ran.stdout) == argv


def test_the_mlops_routes_on_sagemaker(sagemaker, clients):  # noqa: F811
    """ICIPModelAWSServiceSageMaker's calls against SageMaker (moto), ids as sourceID and as ARN."""
    s3 = clients.client("s3")
    s3.put_object(Bucket=BUCKET, Key="models/digits/model.tar.gz", Body=b"model bytes")
    backend = Backend(sagemaker.test_client())
    status, text, model = backend.mlops("projects_models_register_create", body={
        "ExecutionRoleArn": ROLE_ARN, "ModelName": "digits", "Containers": [{
            "ContainerHostname": "", "Image": IMAGE,
            "Mode": "", "ModelDataUrl": f"s3://{BUCKET}/models/digits/model.tar.gz", "Environment": {}}]})
    assert status == 201, text
    parse_model(model)
    assert model["sourceID"] == "digits" and model["arn"].endswith(":model/digits")
    assert backend.mlops("projects_models_get", {"model_id": model["arn"]})[2]["name"] == "digits"

    status, text, _ = backend.mlops("projects_endpoints_create", body={
        "ExecutionRoleArn": ROLE_ARN, "ModelName": "digits", "VariantName": "AllTraffic", "InitialInstanceCount": 1,
        "InstanceType": "ml.m5.large", "EndpointConfigName": "digits-config",
        "PrimaryContainer": {"Image": "", "ModelDataUrl": ""}})
    assert status == 201, text
    backend.mlops("projects_endpoints_deploy_model_create", {"endpoint_id": "digits"},
                  {"EndpointConfigName": "digits-config", "EndpointName": "digits"})
    work(sagemaker)
    sagemaker.config["EXECUTOR"].queue.monitor_once()
    _, _, endpoint = backend.mlops("projects_endpoints_get", {"endpoint_id": "digits"})
    assert endpoint["status"] == "InService"
    parse_endpoint(endpoint)

    status, text, refused = backend.mlops("projects_endpoints_explain_create", {"endpoint_id": "digits"},
                                          {"instances": [[[0, 255], [255, 0]]]})
    assert status == 501 and "Clarify" in refused["error"], text

    status, text, export = backend.mlops("projects_models_export_create", {"model_id": model["arn"]}, {})
    assert status == 200 and export["format"] == "presigned-url", text
    [file] = export["files"]
    assert file["S3Uri"] == f"s3://{BUCKET}/models/digits/model.tar.gz" and file["size"] == len(b"model bytes")
    assert file["url"].startswith(f"https://{BUCKET}.s3.amazonaws.com/models/digits/model.tar.gz?")
    status, text, copied = backend.mlops("projects_models_export_create", {"model_id": "digits"},
                                         {"S3Uri": f"s3://{EXPORT_BUCKET}/handover/"})
    assert status == 200, text
    assert s3.get_object(Bucket=EXPORT_BUCKET, Key="handover/model.tar.gz")["Body"].read() == b"model bytes"
    assert backend.mlops("projects_models_export_create", {"model_id": "digits"},
                         {"S3Uri": "s3://someone-elses-bucket/x/"})[0] == 422

    status, text, undeployed = backend.mlops("projects_endpoints_undeploy_models_create", {"endpoint_id": "digits"}, {})
    assert status == 200 and undeployed["status"] == "Undeployed", text
    sagemaker_client = clients.client("sagemaker")
    assert [item["EndpointName"] for item in sagemaker_client.list_endpoints()["Endpoints"]] == []
    assert sagemaker_client.describe_endpoint_config(EndpointConfigName="digits-config")
    assert deleted(backend.mlops("projects_endpoints_delete", {"endpoint_id": "digits"})[1])
    assert deleted(backend.mlops("projects_endpoints_delete", {"endpoint_id": "digits-config"})[1])
    status, text, _ = backend.mlops("projects_models_delete", {"model_id": model["arn"]})
    assert status == 200 and deleted(text)
    assert sagemaker_client.list_models()["Models"] == []


def test_explain_on_sagemaker_asks_clarify_where_the_configuration_has_it(sagemaker, clients):  # noqa: F811
    """moto keeps no ExplainerConfig (moto 5.2 drops it from CreateEndpointConfig): the describe answer
    gets it added as AWS returns it (API reference, DescribeEndpointConfig.ExplainerConfig), and moto's
    InvokeEndpoint answers what a Clarify endpoint answers (SageMaker developer guide, "Online
    explainability": version, predictions, explanations)."""
    import requests

    sagemaker_client = clients.client("sagemaker")
    sagemaker_client.create_model(ModelName="tabular", ExecutionRoleArn=ROLE_ARN,
                                  PrimaryContainer={"Image": "image", "ModelDataUrl": f"s3://{BUCKET}/m.tar.gz"})
    backend = Backend(sagemaker.test_client())
    backend.mlops("projects_endpoints_create", body={"ModelName": "tabular", "EndpointConfigName": "tabular-config",
                                                    "InstanceType": "ml.m5.large"})
    backend.mlops("projects_endpoints_deploy_model_create", {"endpoint_id": "tabular"},
                  {"EndpointConfigName": "tabular-config", "EndpointName": "tabular"})
    work(sagemaker)
    sagemaker.config["EXECUTOR"].queue.monitor_once()

    def with_clarify(parsed: dict[str, Any], **_: Any) -> None:
        parsed["ExplainerConfig"] = {"ClarifyExplainerConfig": {"ShapConfig": {
            "ShapBaselineConfig": {"ShapBaseline": "1,2,3"}}}}

    sagemaker_client.meta.events.register("after-call.sagemaker.DescribeEndpointConfig", with_clarify)
    # The runtime client an explanation uses: it reads for at most EXECUTOR_EXPLAIN_TIMEOUT.
    runtime = clients.client("sagemaker-runtime", read_timeout=sagemaker.config["EXECUTOR"].config.explain_timeout)
    sent: list[dict[str, Any]] = []
    runtime.meta.events.register("provide-client-params.sagemaker-runtime.InvokeEndpoint",
                                 lambda params, **_: sent.append(dict(params)))
    clarify = {"version": "1.0", "predictions": {"content_type": "text/csv", "data": "0.9\n"},
               "explanations": {"kernel_shap": [[{"attributions": [{"attribution": [0.1]}]}]]}}
    requests.post("http://motoapi.amazonaws.com/moto-api/static/sagemaker/endpoint-results", json={
        "results": [{"Body": json.dumps(clarify), "ContentType": "application/json"}]})
    status, text, answer = backend.mlops("projects_endpoints_explain_create", {"endpoint_id": "tabular"},
                                         raw=b"1,2,3\n", content_type="text/csv")
    assert status == 200, text
    assert answer["explanations"] == clarify["explanations"] and answer["method"] == "sagemaker-clarify"
    assert sent[-1]["EnableExplanations"] == "`true`" and sent[-1]["ContentType"] == "text/csv"


def test_datasets_and_transforms_on_sagemaker(sagemaker, clients):  # noqa: F811
    s3 = clients.client("s3")
    executor = sagemaker.config["EXECUTOR"]
    backend = Backend(sagemaker.test_client())
    raw, kind = multipart("file", "digits.csv", b"a,b\n1,2\n")
    status, text, uploaded = backend.mlops("projects_datasets_create", raw=raw, content_type=kind)
    assert status == 201 and uploaded["sourceID"] == f"{BUCKET}/digits.csv", text
    assert s3.get_object(Bucket=BUCKET, Key="digits.csv")["Body"].read() == b"a,b\n1,2\n"
    source = executor.config.storage_root / "exports" / "churn.csv"
    source.parent.mkdir(parents=True)
    source.write_bytes(b"age\n1\n")
    status, text, imported = backend.mlops("projects_datasets_create", body={
        "Bucket": BUCKET, "Key": "tables/churn.csv", "local_dataset_path": "exports/churn.csv"})
    assert status == 201 and s3.get_object(Bucket=BUCKET, Key="tables/churn.csv")["Body"].read() == b"age\n1\n"
    status, _, export = backend.mlops("projects_datasets_export_create", {"dataset_id": imported["sourceID"]}, {})
    assert status == 200 and export["files"][0]["size"] == 6

    clients.client("sagemaker").create_model(ModelName="digits", ExecutionRoleArn=ROLE_ARN,
                                             PrimaryContainer={"Image": "image", "ModelDataUrl": f"s3://{BUCKET}/m"})
    status, text, _ = backend.mlops("projects_inferencePipelines_create", body={
        "TransformJobName": "nightly", "ModelName": "digits",
        "TransformInput": {"DataSource": {"S3DataSource": {"S3Uri": f"s3://{BUCKET}/digits.csv"}}},
        "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": 1}})
    assert status == 202, text
    work(sagemaker)  # CreateTransformJob; moto completes it at once
    executor.queue.monitor_once()
    _, _, record = backend.mlops("projects_inferencePipelines_get", {"inference_job_id": "nightly"}, {})
    assert record["status"] == "Completed"
    _, _, cancelled = backend.mlops("projects_inferencePipelines_cancel", {"inference_job_id": record["arn"]}, {})
    assert cancelled["status"] == "Completed"  # it had ended: nothing to stop
    _, _, gone = backend.mlops("projects_inferencePipelines_delete", {"inference_job_id": "nightly"})
    assert gone["deleted"] is True


# -- every route of the backend's table ------------------------------------------------------------

@pytest.fixture(params=["local", "sagemaker"])
def platform(request, make_app, tmp_path):
    if request.param == "local":
        return make_app(api_token=TOKEN, trusted_networks="127.0.0.0/8")
    clients = request.getfixturevalue("clients")
    request.getfixturevalue("aws_setup")
    app = create_app(make_config(tmp_path, api_token=TOKEN, trusted_networks="127.0.0.0/8"), clients=clients)
    request.addfinalizer(app.config["EXECUTOR"].store.close)
    return app


@pytest.mark.parametrize("key", sorted(MLOPS_APIS))
def test_every_route_of_the_backends_table_answers_json(platform, key):
    """ICIPPluginConstants.MLOPS_APIS: each route, with the backend's method, is served (never 404/405/HTML)."""
    ids = {name: "no-such-thing" for name in re.findall(r"{(\w+)}", MLOPS_APIS[key][1])}
    status, text, body = Backend(platform.test_client()).mlops(key, ids, {} if MLOPS_APIS[key][0] == "POST" else None)
    assert status != 405, text
    assert isinstance(body, (dict, list))
    if status == 404:
        assert body["error"].startswith("id: no "), text  # the record is missing, not the route
    if status == 501:
        assert body["error"], text


# -- the backend's exact parsers, where a JDK is installed ---------------------------------------

@pytest.mark.skipif(shutil.which("java") is None, reason="no JDK: the Python mirror of the parse ran above")
def test_java_parses_our_times_exactly_as_the_backend_does(local):
    """The DateTimeFormatter of ICIPRemoteLoggerService and the SimpleDateFormat of ICIPModelAWSServiceSageMaker."""
    backend = Backend(local.test_client())
    write_pipeline(local.config["EXECUTOR"].config.storage_root)
    _, text = backend.job("POST", "/execute", remote_body("local", {}))
    task_id = json.loads(text)["task_id"]
    backend.job("GET", f"/execute/{task_id}/stop")
    status = json.loads(backend.job("GET", f"/execute/{task_id}/getStatus")[1])
    image_model(local.config["EXECUTOR"].config.storage_root / "m")
    _, _, model = backend.mlops("projects_models_register_create", body={
        "ModelName": "m", "Containers": [{"ModelDataUrl": "m"}]})
    lines = f"status\t{status['started']}\t{status['timestamp']}\nrecord\t{model['createdOn']}\n"
    answer = subprocess.run(["java", str(ROOT / "tests" / "java" / "BackendTimes.java")], input=lines,
                            capture_output=True, text=True, timeout=120, check=True).stdout.split()
    finished = datetime.fromisoformat(status["finished"])
    assert int(answer[0]) == int(finished.timestamp() * 1_000_000)
    created = datetime.strptime(model["createdOn"], RECORD_TIME).replace(tzinfo=timezone.utc)
    assert int(answer[1]) == int(created.timestamp()) * 1_000_000
    assert abs(created.timestamp() - time.time()) < 60
