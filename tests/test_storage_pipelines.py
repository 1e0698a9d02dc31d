"""Pipelines whose files live in S3-compatible storage: fetched and published with the request's own keys.

A moto server on loopback stands in for the MinIO/S3 endpoint the Essedum backend names.
"""
from __future__ import annotations

import boto3
import pytest
from moto.server import ThreadedMotoServer

from conftest import pipeline_body, wait_final

SCRIPT = """
import os
print("reading", open("params.txt").read(), flush=True)
open(os.path.join(os.environ["SM_MODEL_DIR"], "weights.txt"), "w").write("w=1")
"""


@pytest.fixture
def storage_server(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="minio-user",
                      aws_secret_access_key="minio-password")
    s3.create_bucket(Bucket="essedum-bucket")
    s3.put_object(Bucket="essedum-bucket", Key="Demo/remote/pipe1/3/Input/pipe1.py", Body=SCRIPT.encode())
    s3.put_object(Bucket="essedum-bucket", Key="Demo/remote/pipe1/3/Input/params.txt", Body=b"lr=0.1")
    yield url, s3
    server.stop()


def minio_body(url: str, **changes):
    body = pipeline_body("Demo/remote/pipe1/3/Input", "python pipe1.py", storage="minio",
                         credentials={"endpoint": url, "access_key": "minio-user", "secret_key": "minio-password"})
    body.update(changes)
    return body


def test_a_minio_pipeline_is_downloaded_run_and_its_outputs_published(live_server, storage_server):
    url, s3 = storage_server
    server = live_server(storage_endpoints=url)
    status, accepted = server.request("POST", "/execute", minio_body(url))
    assert status == 201
    assert accepted["log_path"] == "minio://essedum-bucket/Demo/remote/pipe1/3/outputartifacts/logs/log.txt"
    final = wait_final(server, accepted["task_id"])
    assert final["task_status"] == "COMPLETED", final
    log = s3.get_object(Bucket="essedum-bucket", Key="Demo/remote/pipe1/3/outputartifacts/logs/log.txt")
    assert b"reading lr=0.1" in log["Body"].read()
    weights = s3.get_object(Bucket="essedum-bucket", Key="Demo/remote/pipe1/3/outputartifacts/model/weights.txt")
    assert weights["Body"].read() == b"w=1"


def test_an_endpoint_the_operator_did_not_list_is_refused(client, storage_server):
    url, _ = storage_server
    response = client.post("/execute", json=minio_body(url))
    assert response.status_code == 422 and response.get_json()["field"] == "credentials.endpoint"
    response = client.post("/execute", json=minio_body(url, storage="s3"))
    assert response.status_code == 422 and response.get_json()["field"] == "credentials.endpoint"


def test_a_missing_prefix_fails_the_job_with_the_reason(live_server, storage_server):
    url, _ = storage_server
    server = live_server(storage_endpoints=url)
    _, accepted = server.request("POST", "/execute", minio_body(url, input_artifacts="Demo/remote/none"))
    final = wait_final(server, accepted["task_id"])
    assert final["task_status"] == "ERROR"
    assert final["failure_reason"] == "no files under s3://essedum-bucket/Demo/remote/none/"


def test_wrong_storage_keys_fail_the_job_without_revealing_them(live_server, storage_server):
    url, _ = storage_server
    server = live_server(storage_endpoints=url)
    body = minio_body(url, bucket="no-such-bucket")
    _, accepted = server.request("POST", "/execute", body)
    final = wait_final(server, accepted["task_id"])
    assert final["task_status"] == "ERROR" and "NoSuchBucket" in final["failure_reason"]
    assert "minio-password" not in str(final)
