"""`Task cancelled: true` is a promise: the job ends CANCELLED. A batch transform stopped mid-file stops;
a deployment, which cannot be stopped half-way, answers false and runs to its end."""
from __future__ import annotations

from conftest import wait_final

API = "/api/service/v1"

# A model whose predict takes a while per record, so a stop arrives mid-file; no torch needed.
SLOW_MODEL = """\
import json, time
def model_fn(model_dir):
    return "slow"
def input_fn(body, content_type):
    return body
def predict_fn(data, model):
    time.sleep(0.05)
    return len(data)
def output_fn(prediction, accept):
    return json.dumps({"predictions": [prediction]})
"""


def register_slow_model(server) -> None:
    folder = server.storage_root / "models" / "slow"
    (folder / "code").mkdir(parents=True)
    (folder / "model.pt").write_bytes(b"not used by this model_fn")
    (folder / "code" / "inference.py").write_text(SLOW_MODEL)
    status, body = server.request("POST", f"{API}/models/register",
                                  {"ModelName": "slow", "Containers": [{"ModelDataUrl": "models/slow"}]})
    assert status == 201, body


def test_a_transform_stopped_mid_file_ends_cancelled_and_stopped(live_server):
    server = live_server()
    register_slow_model(server)
    (server.storage_root / "many.jsonl").write_text("".join(f'{{"n": {n}}}\n' for n in range(400)))
    status, record = server.request("POST", f"{API}/pipelines/inference", {
        "TransformJobName": "long", "ModelName": "slow",
        "TransformInput": {"DataSource": {"S3DataSource": {"S3Uri": "many.jsonl"}}, "SplitType": "Line"}})
    assert status == 202, record
    server.wait(f"/execute/{record['jobId']}/getStatus", lambda body: body["task_status"] == "RUNNING")
    assert server.request("POST", f"/execute/{record['jobId']}/stop")[1] == {"Task cancelled": True}
    assert wait_final(server, record["jobId"], timeout=30)["task_status"] == "CANCELLED"
    done = server.request("GET", f"{API}/pipelines/inference/long/get")[1]
    assert done["status"] == "Stopped" and done["artifacts"]["records"] < 400


def test_a_running_deployment_cannot_be_stopped_and_says_so(live_server):
    server = live_server()
    register_slow_model(server)
    slow_load = server.storage_root / "models" / "slow" / "code" / "inference.py"
    slow_load.write_text(SLOW_MODEL.replace('    return "slow"', '    time.sleep(2)\n    return "slow"'))
    status, body = server.request("POST", f"{API}/models/register",
                                  {"ModelName": "slow-load", "Containers": [{"ModelDataUrl": "models/slow"}]})
    assert status == 201, body
    assert server.request("POST", f"{API}/endpoints/register", {
        "ModelName": "slow-load", "EndpointConfigName": "slow-config", "VariantName": "AllTraffic",
        "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"})[0] == 201
    status, deploying = server.request("POST", f"{API}/endpoints/slow-ep/deploy_model",
                                       {"EndpointConfigName": "slow-config", "EndpointName": "slow-ep"})
    assert status == 202, deploying
    server.wait(f"/execute/{deploying['jobId']}/getStatus", lambda body: body["task_status"] == "RUNNING")
    assert server.request("POST", f"/execute/{deploying['jobId']}/stop")[1] == {"Task cancelled": False}
    assert wait_final(server, deploying["jobId"], timeout=30)["task_status"] == "COMPLETED"
