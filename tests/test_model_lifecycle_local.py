"""The model lifecycle on the local backend: train, register, deploy, infer, batch inference, datasets.

Real components throughout: the executor app with its SQLite store and queue, the bundled training
script as a child process, TorchScript models loaded through their inference.py, a waitress server.
"""
from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from conftest import ROOT, LiveServer
from mlops.local.platform import LocalPlatform
from mlops.platform import Platform

API = "/api/service/v1"
# Digits the model never saw: training uses the first 300 of sklearn's 1,797.
HELD_OUT = slice(1500, 1600)


@pytest.fixture
def server(live_server) -> LiveServer:
    return live_server()


def tiny_model(folder: Path) -> Path:
    """A TorchScript model with no inference.py: 8x8 images to two scores (the default handlers serve it)."""
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    network = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))
    torch.jit.script(network).save(str(folder / "model.pt"))
    return folder


def deploy(server: LiveServer, model: str, endpoint: str, **model_source: Any) -> dict[str, Any]:
    """Register a model and an endpoint configuration, deploy, and wait until the endpoint settles."""
    status, body = server.request("POST", f"{API}/models/register", {"ModelName": model, **model_source})
    assert status == 201, body
    status, body = server.request("POST", f"{API}/endpoints/register", {
        "ModelName": model, "EndpointConfigName": f"{endpoint}-config", "VariantName": "AllTraffic",
        "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"})
    assert status == 201, body
    status, body = server.request("POST", f"{API}/endpoints/{endpoint}/deploy_model",
                               {"EndpointConfigName": f"{endpoint}-config", "EndpointName": endpoint})
    assert status == 202, body
    assert body["status"] in ("Creating", "InService") and body["jobId"]
    return server.wait(f"{API}/endpoints/{endpoint}", lambda record: record["status"] != "Creating")


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_model_trained_here_is_deployed_and_predicts_digits_over_http(server: LiveServer) -> None:
    dataset = server.storage_root / "digits"
    subprocess.run([sys.executable, str(ROOT / "training_scripts" / "make_digits_dataset.py"), str(dataset),
                    "--limit", "300"], check=True, capture_output=True)
    status, body = server.request("POST", f"{API}/pipelines/training", {
        "name": "digits", "dataset": "digits", "hyperparameters": {"epochs": 3, "image-size": 8}})
    assert status == 202, body
    training = server.wait(f"/status/{body['job_id']}",
                           lambda job: job["status"] in ("COMPLETED", "ERROR", "CANCELLED"), timeout=120)
    assert training["status"] == "COMPLETED", training

    endpoint = deploy(server, "digits-cnn", "digits", TrainingJobId=body["job_id"])
    assert endpoint["status"] == "InService", endpoint
    assert endpoint["deployment"]["models"] == ["digits-cnn"]
    status, model = server.request("GET", f"{API}/models/digits-cnn")
    assert model["container"]["ModelDataUrl"].endswith("model")
    assert "code/inference.py" in model["artifacts"]["files"]
    assert json.loads(model["rawPayload"])["TrainingJobId"] == body["job_id"]

    digits = load_digits()
    images = np.rint(digits.images[HELD_OUT] * (255 / 16))
    labels = [str(label) for label in digits.target[HELD_OUT]]
    status, answer = server.request("POST", f"{API}/endpoints/digits/infer", {"instances": images.tolist()})
    assert status == 200, answer
    predicted = [item["label"] for item in answer["predictions"]]
    accuracy = float(np.mean([p == t for p, t in zip(predicted, labels)]))
    print(f"held-out accuracy of the deployed model: {accuracy:.2f} on {len(labels)} digits")
    assert accuracy >= 0.7
    assert set(answer["predictions"][0]["probabilities"]) == {str(digit) for digit in range(10)}

    # The same digits as base64 PNGs in JSON, and as multipart uploads, get the same answers.
    encoded = [base64.b64encode(png(image)).decode() for image in images[:5]]
    status, from_base64 = server.request("POST", f"{API}/endpoints/digits/infer", {"instances": encoded})
    assert status == 200 and [item["label"] for item in from_base64["predictions"]] == predicted[:5]
    status, one = server.upload(f"{API}/endpoints/digits/infer", {}, [("file", "d.png", png(images[0]), "image/png")])
    assert status == 200 and one["predictions"][0]["label"] == predicted[0]
    status, several = server.upload(f"{API}/endpoints/digits/infer", {},
                                    [("file", f"d{n}.png", png(images[n]), "image/png") for n in range(3)])
    assert status == 200 and [item["label"] for item in several["predictions"]] == predicted[:3]

    # Batch inference over a folder of PNGs in the storage root writes one .out file per image.
    batch = server.storage_root / "batch"
    batch.mkdir()
    for number in range(4):
        (batch / f"digit{number}.png").write_bytes(png(images[number]))
    status, transform = server.request("POST", f"{API}/pipelines/inference", {
        "TransformJobName": "digits-batch", "ModelName": "digits-cnn",
        "TransformInput": {"DataSource": {"S3DataSource": {"S3Uri": "batch"}}}})
    assert status == 202, transform
    done = server.wait(f"{API}/pipelines/inference/digits-batch/get", lambda record: record["status"] != "InProgress")
    assert done["status"] == "Completed", done
    out_dir = Path(done["artifacts"]["output_dir"])
    written = [json.loads((out_dir / f"digit{n}.png.out").read_text())["predictions"][0]["label"] for n in range(4)]
    assert written == predicted[:4]


def test_a_models_raw_payload_is_its_registration_as_sent(server: LiveServer) -> None:
    # The record's shape is the platform contract's; here the raw payload is the request (no cloud describes it).
    tiny_model(server.storage_root / "models" / "tiny")
    body = {"ModelName": "tiny", "Description": "<b>two & classes</b>",
            "Containers": [{"ModelDataUrl": "models/tiny", "Image": "local"}]}
    status, record = server.request("POST", f"{API}/models/register", body)
    assert status == 201 and json.loads(record["rawPayload"]) == body, record


def test_bad_requests_get_a_4xx_naming_the_field(server: LiveServer) -> None:
    # The refusals both platforms share are the platform contract's; these are the local host's own.
    tiny_model(server.storage_root / "models" / "tiny")
    status, body = server.request("POST", f"{API}/models/register",
                                  {"ModelName": "m", "Containers": [{"ModelDataUrl": "../../etc"}]})
    assert (status, body["field"]) == (422, "Containers.0.ModelDataUrl"), body
    status, body = server.request("POST", f"{API}/endpoints/e/infer", {"instances": []})
    assert (status, body["field"]) == (404, "id"), body

    assert deploy(server, "tiny", "tiny-ep", Containers=[{"ModelDataUrl": "models/tiny"}])["status"] == "InService"
    status, body = server.request("POST", f"{API}/endpoints/tiny-ep/infer", raw=b"{not json")
    assert status == 400 and body["field"] == "body"
    status, body = server.request("POST", f"{API}/endpoints/tiny-ep/infer", {"instances": "abc"})
    assert status == 400 and body["field"] == "body"
    status, body = server.request("POST", f"{API}/endpoints/tiny-ep/infer", [[[1.0] * 8] * 8])
    assert status == 200 and len(body["predictions"][0]) == 2
    # The executor hosts the model itself: once the endpoint is deleted, nothing answers for it.
    assert server.request("DELETE", f"{API}/endpoints/tiny-ep")[0] == 200
    assert server.request("POST", f"{API}/endpoints/tiny-ep/infer", {"instances": [[[0] * 8] * 8]})[0] == 404


def test_datasets_are_kept_under_the_storage_root_with_safe_keys(server: LiveServer) -> None:
    # Upload, list, get and delete are the platform contract's; this is where the local platform keeps them.
    status, record = server.upload(f"{API}/datasets", {"Bucket": "essedum", "Key": "iris/train.csv"},
                                   [("file", "train.csv", b"a,b\n1,2\n", "text/csv")])
    assert status == 201, record
    assert (record["name"], record["status"], record["artifacts"]["size"]) == ("essedum/iris/train.csv", "Available", 8)
    stored = server.storage_root / "datasets" / "essedum" / "iris" / "train.csv"
    assert stored.read_bytes() == b"a,b\n1,2\n"

    # Keys that leave the bucket and unsafe file names are the platform contract's; here, where they land.
    status, body = server.upload(f"{API}/datasets", {"Bucket": "essedum", "Key": "folder/"},
                                 [("file", "../../My Data.csv", b"x", "text/csv")])
    assert status == 201 and (server.storage_root / "datasets" / "essedum" / "folder" / "My_Data.csv").is_file()
    assert not list(server.storage_root.parent.glob("*.csv"))

    assert server.request("DELETE", f"{API}/datasets/essedum/iris/train.csv")[0] == 200
    assert not stored.exists()


def test_a_dataset_larger_than_the_upload_limit_is_refused(make_app) -> None:
    app = make_app(max_upload_bytes="1000")
    executor = app.config["EXECUTOR"]
    client = app.test_client()
    answer = client.post(f"{API}/datasets", data={"Key": "big.bin", "file": (io.BytesIO(b"x" * 50_000), "big.bin")},
                         content_type="multipart/form-data")
    assert answer.status_code == 413
    assert not (executor.config.storage_root / "datasets").exists() or not any(
        (executor.config.storage_root / "datasets").rglob("*.bin"))
    # The JSON routes keep the small body limit.
    assert client.post(f"{API}/models/register", data=b"x" * (2 << 20), content_type="application/json").status_code == 413


def test_the_local_platform_is_one_object_for_its_jobs_and_its_records(make_app) -> None:
    executor = make_app().config["EXECUTOR"]
    platform = executor.platform

    assert isinstance(platform, LocalPlatform) and isinstance(platform, Platform)
    assert platform.training.running_job_ids() == []
    assert (platform.name, platform.kinds) == ("local", {"pipeline", "training", "tuning", "endpoint", "transform"})
    assert platform.ready_check() is None  # nothing remote to reach


def test_batch_inference_turns_csv_rows_into_images_and_writes_one_answer_a_row(server: LiveServer) -> None:
    tiny_model(server.storage_root / "models" / "tiny")
    server.request("POST", f"{API}/models/register", {"ModelName": "tiny", "Containers": [{"ModelDataUrl": "models/tiny"}]})
    (server.storage_root / "rows.csv").write_text("\n".join(",".join(["8"] * 64) for _ in range(3)) + "\n")

    status, record = server.request("POST", f"{API}/pipelines/inference", {
        "TransformJobName": "rows", "ModelName": "tiny",
        "TransformInput": {"DataSource": {"S3DataSource": {"S3Uri": "rows.csv"}}, "ContentType": "text/csv"}})
    assert status == 202, record
    done = server.wait(f"{API}/pipelines/inference/rows/get", lambda record: record["status"] != "InProgress")

    assert done["status"] == "Completed" and done["artifacts"]["records"] == 3, done
    lines = (Path(done["artifacts"]["output_dir"]) / "rows.csv.out").read_text().splitlines()
    assert [len(json.loads(line)["predictions"][0]) for line in lines] == [2, 2, 2]
