"""The Essedum base job API, validated request by request, and run end to end on a real server."""
from __future__ import annotations

import json
import os
import uuid

import pytest

from conftest import pipeline_body, wait_final, write_pipeline
from job import JobStatus


METRIC_SCRIPT = """
import json, os, sys
print("args", sys.argv[1:], flush=True)
for epoch in range(1, 4):
    print(f"epoch={epoch}/3 train_loss={1 / epoch:.4f} val_accuracy={0.6 + epoch / 10:.4f}", flush=True)
with open(os.path.join(os.environ["SM_MODEL_DIR"], "summary.json"), "w") as handle:
    json.dump({"hosts": json.loads(os.environ["SM_HOSTS"]), "channel": os.environ["SM_CHANNEL_TRAINING"]}, handle)
with open(os.path.join(os.environ["SM_OUTPUT_DATA_DIR"], "report.txt"), "w") as handle:
    handle.write("done")
"""


@pytest.fixture
def storage_root(app):
    return app.config["EXECUTOR"].config.storage_root


def post(client, body, path="/execute"):
    return client.post(path, data=json.dumps(body), content_type="application/json")


def test_a_pipeline_runs_end_to_end_on_a_real_server(live_server):
    server = live_server()
    folder = write_pipeline(server.executor.config.storage_root, "Demo/remote/pipe1/3/Input", METRIC_SCRIPT)
    # The answers' times, metrics, progress and listing are the platform contract's; here, the container's view.
    status, accepted = server.request("POST", "/execute", pipeline_body(folder, "python pipe1.py --lr 0.1"))
    assert status == 201, accepted
    assert wait_final(server, accepted["task_id"])["task_status"] == "COMPLETED"
    _, log = server.request("GET", f"/execute/{accepted['task_id']}/getLog")
    assert "args ['--lr', '0.1']" in log["logs"]["content"]
    _, artifacts = server.request("GET", f"/execute/{accepted['task_id']}/getOutputArtifacts")
    assert artifacts["summary"]["content"]["hosts"] == ["algo-1"]
    assert artifacts["summary"]["content"]["channel"].endswith("input/data/training")
    assert artifacts["report"]["content"] == "done"


def test_a_failing_script_is_reported_as_error_with_its_failure_file(live_server):
    server = live_server()
    script = ("import os\nopen(os.path.join(os.environ['SM_OUTPUT_DIR'], 'failure'), 'w')"
              ".write('label column missing')\nraise SystemExit(3)\n")
    folder = write_pipeline(server.executor.config.storage_root, "fails", script)
    _, accepted = server.request("POST", "/execute", pipeline_body(folder, "python pipe1.py"))
    final = wait_final(server, accepted["task_id"])
    assert final["task_status"] == "ERROR"
    assert final["failure_reason"] == "label column missing (exit code 3)"
    assert final["timestamp"] is not None and final["finished"] is not None


def test_secrets_never_reach_the_database_the_log_or_a_response(live_server, data_dir):
    server = live_server()
    script = "import os\nprint('token is', os.environ['API_TOKEN'])\nprint(os.environ.get('AWS_SECRET_ACCESS_KEY'))\n"
    folder = write_pipeline(server.executor.config.storage_root, "leaky", script)
    body = pipeline_body(folder, "python pipe1.py", environment={"API_TOKEN": "tok-ABCDEF-123456"},
                         configs={"instance_type": "ml.m5.large", "db_password": "pw-QWERTY-987"})
    _, accepted = server.request("POST", "/execute", body)
    final = wait_final(server, accepted["task_id"])
    assert final["task_status"] == "COMPLETED"
    _, log = server.request("GET", f"/execute/{accepted['task_id']}/getLog")
    assert "token is ****" in log["logs"]["content"]
    responses = json.dumps([accepted, final, log, server.request("GET", f"/status/{accepted['task_id']}")[1]])
    stored = b"".join(path.read_bytes() for path in data_dir.rglob("*") if path.is_file() and path.name != "secret.key")
    for secret in ("tok-ABCDEF-123456", "s3cr3t-Value-Never-Shown", "AKIAEXAMPLEKEY123", "pw-QWERTY-987"):
        assert secret not in responses
        assert secret.encode() not in stored


def test_the_job_environment_does_not_inherit_the_executors_secrets(live_server, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "executor-own-aws-secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "executor-own-session-token")
    server = live_server()
    script = "import os\nprint(sorted(k for k in os.environ if k.startswith('AWS')))\n"
    folder = write_pipeline(server.executor.config.storage_root, "env", script)
    _, accepted = server.request("POST", "/execute", pipeline_body(folder, "python pipe1.py"))
    wait_final(server, accepted["task_id"])
    _, log = server.request("GET", f"/execute/{accepted['task_id']}/getLog")
    assert "\n[]\n" in log["logs"]["content"]


@pytest.mark.parametrize("change, status, field", [
    ({"bucket": ""}, 422, "bucket"),
    ({"bucket": 7}, 400, "bucket"),
    ({"storage": "ftp"}, 422, "storage"),
    ({"unexpected": 1}, 400, "unexpected"),
    ({"credentials": {"endpoint": "x", "access_key": "y"}}, 400, "credentials.secret_key"),
    ({"name": "a\u0000b"}, 422, "name"),
    ({"name": "x" * 300}, 422, "name"),
    ({"command": "bash -c 'rm -rf /'"}, 422, "command"),
    ({"command": "python pipe1.py; rm -rf /"}, 422, "command"),
    ({"command": "python ../../etc/passwd.py"}, 422, "command"),
    ({"command": "python missing.py"}, 422, "command"),
    ({"command": "python 'unterminated"}, 422, "command"),
    ({"input_artifacts": "../outside"}, 422, "input_artifacts"),
    ({"input_artifacts": "/etc"}, 422, "input_artifacts"),
    ({"input_artifacts": "nowhere"}, 422, "input_artifacts"),
    ({"environment": {"A=B": "x"}}, 422, "environment"),
    ({"name": "../../x"}, 422, "name"),
    ({"version": "3/../../x"}, 422, "version"),
    ({"project_id": "Demo\\x"}, 422, "project_id"),
    ({"project_id": "Demo\nx"}, 422, "project_id"),
    ({"environment": {"X": 1}}, 400, "environment.X"),
    ({"configs": []}, 400, "configs"),
])
def test_bad_pipeline_fields_are_refused_naming_the_field(client, storage_root, change, status, field):
    folder = write_pipeline(storage_root, "ok", "print(1)\n")
    response = post(client, {**pipeline_body(folder, "python pipe1.py"), **change})
    assert response.status_code == status, response.get_json()
    assert response.get_json()["field"] == field
    assert client.get("/execute").get_json() == []


@pytest.mark.skipif(not hasattr(os, "symlink") or os.name == "nt", reason="needs POSIX symbolic links")
def test_links_in_input_artifacts_are_followed_inside_the_storage_root_and_refused_outside(client, storage_root,
                                                                                            tmp_path):
    write_pipeline(storage_root, "real/pipe", "print(1)\n")
    (storage_root / "inside").symlink_to(storage_root / "real")
    outside = write_pipeline(tmp_path / "elsewhere", "pipe", "print(1)\n")
    (storage_root / "real" / "away").symlink_to(tmp_path / "elsewhere" / outside)
    assert post(client, pipeline_body("inside/pipe", "python pipe1.py")).status_code == 201
    for linked in ("real/away", "inside/away"):
        response = post(client, pipeline_body(linked, "python pipe1.py"))
        assert response.status_code == 422 and response.get_json()["field"] == "input_artifacts", linked
        assert "outside the storage root" in response.get_json()["error"]
    assert len(client.get("/execute").get_json()) == 1


@pytest.mark.parametrize("missing", ["bucket", "project_id", "name", "version", "credentials", "input_artifacts",
                                     "command", "storage"])
def test_each_missing_key_is_a_400_naming_it(client, storage_root, missing):
    body = pipeline_body(write_pipeline(storage_root, "ok", "print(1)\n"), "python pipe1.py")
    del body[missing]
    response = post(client, body)
    assert response.status_code == 400 and response.get_json()["field"] == missing


@pytest.mark.parametrize("raw", [b"", b"not json", b"[1, 2]", b"null", b"{\"a\":", b"[" * 5000 + b"]" * 5000])
def test_bodies_that_are_not_a_json_object_are_400(client, raw):
    response = client.post("/execute", data=raw, content_type="application/json")
    assert response.status_code == 400
    assert "error" in response.get_json()


def test_oversized_bodies_are_413(make_app):
    client = make_app(max_body_bytes="1024").test_client()
    response = client.post("/execute", data=b"{" + b" " * 4096 + b"}", content_type="application/json")
    assert response.status_code == 413 and "error" in response.get_json()


def test_unknown_and_malformed_ids_and_wrong_methods(client):
    assert client.get(f"/execute/{uuid.uuid4()}/getStatus").status_code == 404
    assert client.get("/execute/not-a-uuid/getStatus").status_code == 400
    assert client.get("/execute/1' OR '1'='1/getLog").status_code == 400
    assert client.get("/status/-1").status_code == 400
    assert client.delete("/execute").status_code == 405
    assert client.put(f"/execute/{uuid.uuid4()}/getStatus").status_code == 405
    assert client.get("/no/such/route").status_code == 404


def test_with_a_token_every_route_but_health_needs_it(make_app, storage_root):
    client = make_app(api_token="t0ken-for-tests").test_client()
    assert client.get("/health").status_code == 200
    assert client.get("/execute").status_code == 401
    assert client.get("/execute", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/execute", headers={"Authorization": "Bearer t0ken-for-tests"}).status_code == 200


def test_times_follow_the_configured_zone(make_app, storage_root):
    client = make_app(timezone="Asia/Kolkata").test_client()
    folder = write_pipeline(storage_root, "p", "print(1)\n")
    accepted = post(client, pipeline_body(folder, "python pipe1.py")).get_json()
    body = client.get(f"/execute/{accepted['task_id']}/getStatus").get_json()
    assert body["submitted"].endswith("+05:30")


def test_a_status_poll_answers_every_change_of_the_job_at_once(client, app, storage_root):
    # Answers are kept between polls: each must still show the job as the store has it now.
    store = app.config["EXECUTOR"].store
    folder = write_pipeline(storage_root, "p", "print(1)\n")
    task_id = post(client, pipeline_body(folder, "python pipe1.py")).get_json()["task_id"]
    path = f"/execute/{task_id}/getStatus"
    assert client.get(path).get_json()["task_status"] == "WAITING"
    assert client.get(path).get_json()["task_status"] == "WAITING"
    claimed = store.claim_next()
    assert claimed.id == task_id
    running = client.get(path).get_json()
    assert running["task_status"] == "RUNNING" and running["started"] is not None and running["finished"] is None
    store.update(task_id, pid="4242")
    assert client.get(path).get_json()["pid"] == "4242"
    store.transition(task_id, JobStatus.ERROR, failure_reason="exit code 3")
    ended = client.get(path).get_json()
    assert ended["task_status"] == "ERROR" and ended["failure_reason"] == "exit code 3" and ended["finished"]
    # A prefix is looked up each time: a second job sharing it makes it ambiguous at once.
    prefix = task_id[:4]
    assert client.get(f"/execute/{prefix}/getStatus").get_json()["task_id"] == task_id
    store.create_job(prefix + str(uuid.uuid4())[4:], kind="pipeline", backend="local", request={}, secrets=None,
                     log_path="logs/x.log", output_dir="jobs/x")
    assert client.get(f"/execute/{prefix}/getStatus").status_code == 409
    assert store.delete_job(task_id)
    assert client.get(path).status_code == 404
