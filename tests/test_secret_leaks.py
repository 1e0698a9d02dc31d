"""Secrets a hostile or careless request carries never come back: not in error answers, not in clear in
the database, not split across log lines, not through an AWS description passed on as rawPayload."""
from __future__ import annotations

import json
import sqlite3

from mlops.job_requests import PipelineRequest
from conftest import pipeline_body, wait_final, write_pipeline
from job_secrets import redact, redact_description, secret_values

SECRET = "sk-LIVE-7Hq2-never-echo"


def post(client, body):
    return client.post("/execute", data=json.dumps(body), content_type="application/json")


def test_too_many_environment_entries_are_refused_without_echoing_a_value(client):
    environment = {f"VAR_{number}": f"{SECRET}-{number}" for number in range(101)}
    answer = post(client, pipeline_body("x", "python pipe1.py", environment=environment))
    assert answer.status_code == 422
    assert SECRET not in answer.get_data(as_text=True)


def test_too_many_configs_are_refused_without_echoing_a_value(client):
    configs = {f"setting_{number}": SECRET for number in range(101)}
    answer = post(client, pipeline_body("x", "python pipe1.py", configs=configs))
    assert answer.status_code == 422 and SECRET not in answer.get_data(as_text=True)


def test_a_bad_credential_value_is_refused_without_echoing_it(client):
    credentials = {"endpoint": "https://s3.amazonaws.com", "access_key": "", "secret_key": SECRET}
    answer = post(client, pipeline_body("x", "python pipe1.py", credentials=credentials))
    assert answer.status_code in (400, 422) and SECRET not in answer.get_data(as_text=True)


def test_configs_entries_named_like_secrets_are_sealed_at_any_depth_and_case():
    body = pipeline_body("x", "python pipe1.py", configs={
        "instance_type": "ml.m5.large", "API_Key": "k1-secret", "nested": {"db": {"Password": "p1-secret"},
                                                                          "list": [{"authToken": "t1-secret"}]}})
    request, secrets = PipelineRequest.from_body(body)
    stored = request.to_stored()
    assert "secret" not in json.dumps(stored["configs"])
    assert stored["configs"]["instance_type"] == "ml.m5.large"
    assert secrets["configs"] == {"API_Key": "k1-secret", "nested.db.Password": "p1-secret",
                                  "nested.list.0.authToken": "t1-secret"}


def test_a_secret_with_a_line_break_is_redacted_line_by_line():
    values = secret_values({"environment": {"PEM": "-----BEGIN KEY-----\nMIIEvQIBADANBg\n-----END KEY-----"}})
    printed = ["-----BEGIN KEY-----", "MIIEvQIBADANBg", "-----END KEY-----"]
    assert [redact(line, values) for line in printed] == ["****"] * 3


def test_aws_descriptions_are_redacted_where_they_carry_secrets():
    described = {
        "TrainingJobName": "job-1",
        "Environment": {"API_TOKEN": SECRET, "PLAIN": "visible?"},
        "HyperParameters": {"epochs": "5", "db_password": SECRET},
        "VpcConfig": {"SecurityGroupIds": ["sg-1"]},
        "OutputDataConfig": {"KmsKeyId": "alias/my-key", "S3OutputPath": "s3://b/p"},
        "Containers": [{"Image": "i", "Environment": {"SECRET_KEY": SECRET}}],
        "Credentials": {"SessionToken": SECRET},
    }
    redacted = redact_description(described)
    text = json.dumps(redacted)
    assert SECRET not in text and "visible?" not in text
    assert redacted["HyperParameters"]["epochs"] == "5"
    assert redacted["OutputDataConfig"]["KmsKeyId"] == "alias/my-key"


def test_a_script_printing_a_multi_line_secret_and_nested_configs_leaks_nothing(live_server, data_dir):
    server = live_server()
    script = ("import os\nprint(os.environ['PEM'])\nprint('done')\n"
              "open(os.path.join(os.environ['SM_OUTPUT_DATA_DIR'], 'leak.txt'), 'w').write(os.environ['PEM'])\n")
    folder = write_pipeline(server.storage_root, "multi", script)
    pem = "-----BEGIN KEY-----\nAAAApartONE1234\nBBBBpartTWO5678\n-----END KEY-----"
    body = pipeline_body(folder, "python pipe1.py", environment={"PEM": pem},
                         configs={"service": {"Api_Key": "nested-KEY-4242"}})
    _, accepted = server.request("POST", "/execute", body)
    assert wait_final(server, accepted["task_id"])["task_status"] == "COMPLETED"
    _, log = server.request("GET", f"/execute/{accepted['task_id']}/getLog")
    _, artifacts = server.request("GET", f"/execute/{accepted['task_id']}/getOutputArtifacts")
    answers = json.dumps([log, artifacts])
    for piece in ("AAAApartONE1234", "BBBBpartTWO5678", "nested-KEY-4242"):
        assert piece not in answers
    conn = sqlite3.connect(data_dir / "executor.sqlite3")
    stored = json.dumps(conn.execute("SELECT request, details, artifacts FROM jobs").fetchall())
    conn.close()
    assert "nested-KEY-4242" not in stored
