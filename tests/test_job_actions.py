"""Job ids by prefix, rerun, and downloads of a job's outputs (safe against links and traversal), on a real server."""
from __future__ import annotations

import io
import json
import os
import tarfile
import time
import urllib.request

import jsonschema
import pytest

from api.downloads import FILE_LIST_SCHEMA
from conftest import pipeline_body, wait_final, write_pipeline
from job import JobStatus
from mlops import job_files
from mlops.job_outputs import MAX_LISTED_FILES
from mlops.job_requests import TrainingRequest
from mlops.tuning import TRIAL_PLATFORM_JOB

OUTPUT_SCRIPT = """
import os
model, data = os.environ["SM_MODEL_DIR"], os.environ["SM_OUTPUT_DATA_DIR"]
os.makedirs(os.path.join(model, "code"), exist_ok=True)
with open(os.path.join(model, "model.pt"), "wb") as handle:
    handle.write(bytes(range(256)) * 4096)
with open(os.path.join(model, "code", "inference.py"), "w") as handle:
    handle.write("def model_fn(model_dir): pass\\n")
with open(os.path.join(data, "report.txt"), "w") as handle:
    handle.write("accuracy 0.9")
# What a hostile job would try: links out of its folder to the executor's files, and a FIFO.
secret = os.path.join(os.environ["SM_MODEL_DIR"], "..", "..", "..", "outside.txt")
os.symlink(secret, os.path.join(model, "stolen.key"))
os.symlink(os.path.dirname(secret), os.path.join(data, "executor"))
os.mkfifo(os.path.join(data, "pipe"))
print("secret key readable by the job:", os.path.exists(secret), flush=True)
"""
# A job decides how many files it writes: here five more than a listing holds.
MANY_FILES_SCRIPT = f"""
import os
open(os.path.join(os.environ["SM_MODEL_DIR"], "model.pt"), "wb").write(b"weights")
for index in range({MAX_LISTED_FILES + 5}):
    open(os.path.join(os.environ["SM_OUTPUT_DATA_DIR"], f"part-{{index:04d}}.csv"), "w").close()
"""


@pytest.fixture
def server(live_server):
    server = live_server()
    write_pipeline(server.storage_root, "outputs", OUTPUT_SCRIPT, name="make.py")
    write_pipeline(server.storage_root, "hello", "import os\nprint('HELLO_SET', 'HELLO' in os.environ, flush=True)\n",
                   name="hello.py")
    return server


def run(server, folder: str, command: str, **changes) -> str:
    status, body = server.request("POST", "/execute", pipeline_body(folder, command, **changes))
    assert status == 201, body
    assert wait_final(server, body["task_id"])["task_status"] == "COMPLETED"
    return body["task_id"]


def download(server, path: str) -> tuple[int, bytes, dict[str, str]]:
    try:
        with urllib.request.urlopen(server.url + path, timeout=30) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read(), dict(error.headers)


def test_a_unique_prefix_names_a_job_everywhere_and_an_ambiguous_one_is_refused(server):
    job_id = run(server, "hello", "python hello.py")
    status, body = server.request("GET", f"/status/{job_id[:6]}")
    assert status == 200 and body["job_id"] == job_id
    assert server.request("GET", f"/execute/{job_id[:6].upper()}/getStatus")[1]["task_id"] == job_id
    assert server.request("GET", f"/api/jobs/{job_id[:8]}")[1]["job_id"] == job_id

    store = server.executor.store
    for twin in ("abcd1111-0000-4000-8000-000000000000", "abcd2222-0000-4000-8000-000000000000"):
        # Stored as ended jobs: two ids that share a prefix, not work for the queue.
        store.create_job(twin, kind="pipeline", backend="local", request={"name": twin}, secrets=None,
                         log_path=str(server.storage_root / "twin.log"), output_dir=str(server.storage_root))
        store.transition(twin, JobStatus.CANCELLED, expected=JobStatus.WAITING)
    status, body = server.request("GET", "/status/abcd")
    assert status == 409 and body["field"] == "job_id" and len(body["candidates"]) == 2
    assert server.request("GET", "/execute/abcd/getStatus")[1]["field"] == "task_id"  # each route names its own
    assert server.request("GET", "/status/abcd2")[1]["job_id"].startswith("abcd2222")
    assert server.request("GET", "/status/abc")[0] == 400  # too short to be typed on purpose
    assert server.request("GET", "/status/ffff9")[0] == 404


def test_a_rerun_of_a_pipeline_whose_secrets_were_erased_asks_for_them(server):
    first = run(server, "hello", "python hello.py", environment={"HELLO": "hidden-value-42"})
    status, body = server.request("POST", f"/api/jobs/{first}/rerun")
    assert status == 409 and body["field"] == "environment" and "erased" in body["error"]
    status, body = server.request("POST", f"/api/jobs/{first}/rerun", {"environment": {"HELLO": "again-43"}})
    assert status == 202, body
    assert wait_final(server, body["job_id"])["task_status"] == "COMPLETED"
    _, log = server.request("GET", f"/execute/{body['job_id']}/getLog")
    assert "HELLO_SET True" in log["logs"]["content"]
    assert "again-43" not in str(server.request("GET", f"/status/{body['job_id']}")[1])


def test_downloads_stream_regular_output_files_and_never_follow_links(server, data_dir):
    job_id = run(server, "outputs", "python make.py")
    (data_dir / "outside.txt").write_bytes(b"EXECUTOR-SECRET")  # a file of the executor's, beside its key file

    _, listing = server.request("GET", f"/api/jobs/{job_id}/files")
    assert [item["path"] for item in listing["files"]] == [
        "model/code/inference.py", "model/model.pt", "output/data/report.txt"]
    assert listing["truncated"] is False
    _, detail = server.request("GET", f"/api/jobs/{job_id}")
    assert detail["files"] == listing["files"] and detail["files_truncated"] is False
    status, content, headers = download(server, f"/api/jobs/{job_id[:8]}/files/model/model.pt")
    assert status == 200 and content == bytes(range(256)) * 4096
    assert headers["Content-Disposition"] == 'attachment; filename="model.pt"'
    assert download(server, f"/api/jobs/{job_id}/files/output/data/report.txt")[1] == b"accuracy 0.9"

    for hostile in ("model/stolen.key", "output/data/executor/outside.txt", "output/data/pipe",
                    "model/../../../outside.txt", "model/%2e%2e/%2e%2e/%2e%2e/outside.txt", "code/make.py",
                    "input/config/hyperparameters.json", "job.log", "model"):
        status, content, _ = download(server, f"/api/jobs/{job_id}/files/{hostile}")
        assert status == 404, hostile
        assert b"EXECUTOR-SECRET" not in content

    status, archive, headers = download(server, f"/api/jobs/{job_id}/model.tar.gz")
    assert status == 200 and headers["Content-Type"] == "application/gzip"
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        assert sorted(tar.getnames()) == ["code/inference.py", "model.pt"]
        assert tar.extractfile("model.pt").read() == bytes(range(256)) * 4096


def test_a_job_with_more_files_than_a_listing_holds_lists_the_first_and_says_the_list_was_cut(server):
    write_pipeline(server.storage_root, "many", MANY_FILES_SCRIPT, name="many.py")
    job_id = run(server, "many", "python many.py")
    first = ["model/model.pt"] + [f"output/data/part-{index:04d}.csv" for index in range(MAX_LISTED_FILES - 1)]

    _, listing = server.request("GET", f"/api/jobs/{job_id}/files")
    jsonschema.validate(listing, FILE_LIST_SCHEMA)
    assert [item["path"] for item in listing["files"]] == first and listing["truncated"] is True
    _, detail = server.request("GET", f"/api/jobs/{job_id}")
    assert detail["files"] == listing["files"] and detail["files_truncated"] is True
    _, status = server.request("GET", f"/status/{job_id}")
    assert status["artifacts"]["files"] == first and "files_left_out" in status["artifacts"]

    left_out = f"output/data/part-{MAX_LISTED_FILES + 4:04d}.csv"
    assert download(server, f"/api/jobs/{job_id}/files/{left_out}")[0] == 200
    status, archive, _ = download(server, f"/api/jobs/{job_id}/model.tar.gz")
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        assert status == 200 and tar.getnames() == ["model.pt"]


def test_a_job_without_model_files_has_no_model_archive(server):
    job_id = run(server, "hello", "python hello.py")
    assert download(server, f"/api/jobs/{job_id}/model.tar.gz")[0] == 404


def test_a_model_too_large_to_list_whole_is_refused_not_cut(app, client, tmp_path, monkeypatch):
    store = app.config["EXECUTOR"].store
    job_id = "b16e0000-0000-4000-8000-000000000000"
    (tmp_path / "model").mkdir()
    for index in range(6):
        (tmp_path / "model" / f"shard-{index}.pt").write_bytes(b"w")
    store.create_job(job_id, kind="training", backend="local", request={"name": "big"}, secrets=None,
                     log_path=str(tmp_path / "job.log"), output_dir=str(tmp_path))
    monkeypatch.setattr(job_files, "MAX_COMPLETE_WALK_ENTRIES", 6)
    answer = client.get(f"/api/jobs/{job_id}/model.tar.gz")
    assert answer.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(answer.data), mode="r:gz") as tar:
        assert len(tar.getnames()) == 6
    (tmp_path / "model" / "shard-6.pt").write_bytes(b"w")
    answer = client.get(f"/api/jobs/{job_id}/model.tar.gz")
    assert answer.status_code == 413 and "cannot be archived whole" in answer.get_json()["error"]


def test_root_sends_a_browser_to_the_dashboard(client):
    answer = client.get("/")
    assert answer.status_code == 302 and answer.headers["Location"].endswith("/execute/jobs")
    assert os.path.basename(answer.headers["Location"]) == "jobs"


def test_the_eta_of_a_running_job_comes_from_the_time_its_epochs_took(app, client):
    store = app.config["EXECUTOR"].store
    job_id = "eeee0000-0000-4000-8000-000000000000"
    store.create_job(job_id, kind="training", backend="local", request={"name": "eta", "hyperparameters": {}},
                     secrets=None, log_path="/nonexistent/job.log", output_dir="/nonexistent")
    store.claim_next()
    store.update(job_id, progress={"epoch": 3, "epochs": 10, "percent": 30.0})
    now = time.time()
    # Epochs of 10 s, 12 s (the median of two is the larger) ... the third ended 5 s ago.
    for step, ended in ((1, now - 27), (2, now - 17), (3, now - 5)):
        store.add_metrics(job_id, [("train_loss", 1.0 / step, step)], when=ended)
    detail = client.get(f"/api/jobs/{job_id[:8]}").get_json()
    assert detail["eta_seconds"] == pytest.approx(7 * 12 - 5, abs=1)
    assert detail["request"]["instance_type"] == "this machine"
    store.transition(job_id, JobStatus.COMPLETED)
    assert client.get(f"/api/jobs/{job_id}").get_json()["eta_seconds"] is None


def test_a_sagemaker_jobs_model_download_says_where_the_model_is(app, client):
    store = app.config["EXECUTOR"].store
    job_id = "5a9e0000-0000-4000-8000-000000000000"
    store.create_job(job_id, kind="training", backend="sagemaker", request={"name": "remote"}, secrets=None,
                     log_path="/nonexistent/job.log", output_dir="/nonexistent")
    store.update(job_id, artifacts={"model": "s3://bucket/prefix/remote/output/model.tar.gz"})
    answer = client.get(f"/api/jobs/{job_id}/model.tar.gz")
    assert answer.status_code == 404
    assert "s3://bucket/prefix/remote/output/model.tar.gz" in answer.get_json()["error"]


def stored_training(server, job_id: str) -> str:
    """Store an ended training job under a chosen id (two that share a beginning make a prefix ambiguous)."""
    store = server.executor.store
    store.create_job(job_id, kind="training", backend="local", request={"name": f"train-{job_id[:8]}"}, secrets=None,
                     log_path=str(server.storage_root / f"{job_id}.log"), output_dir=str(server.storage_root / job_id))
    store.transition(job_id, JobStatus.CANCELLED, expected=JobStatus.WAITING)
    return job_id


def test_the_training_record_routes_and_training_job_id_take_a_prefix(server):
    first = stored_training(server, "5eed1111-0000-4000-8000-000000000000")
    stored_training(server, "5eed2222-0000-4000-8000-000000000000")
    status, body = server.request("GET", "/api/service/v1/pipelines/training/5eed1/get")
    assert status == 200 and body["jobId"] == first
    status, body = server.request("GET", "/api/service/v1/pipelines/training/5eed/get")
    assert status == 409 and body["field"] == "id" and sorted(body["candidates"]) == [
        "5eed1111-0000-4000-8000-000000000000", "5eed2222-0000-4000-8000-000000000000"]

    # The prefix reaches the job: what is refused is the job (not finished), not the id's shape.
    status, body = server.request("POST", "/api/service/v1/models/register",
                                  {"ModelName": "prefixed", "TrainingJobId": "5eed1"})
    assert status == 409 and body["field"] == "TrainingJobId" and "CANCELLED" in body["error"]
    status, body = server.request("POST", "/api/service/v1/models/register",
                                  {"ModelName": "prefixed", "TrainingJobId": "5eed"})
    assert status == 409 and len(body["candidates"]) == 2

    status, body = server.request("DELETE", "/api/service/v1/projects_pipelines/5eed2/delete")
    assert status == 200 and body["deleted"] is True and body["job_id"].startswith("5eed2222")
    assert server.request("GET", "/api/service/v1/pipelines/training/5eed/get")[1]["jobId"] == first


def test_the_dashboard_page_and_its_routes_take_a_prefix(server):
    job_id = run(server, "outputs", "python make.py")
    page = urllib.request.urlopen(f"{server.url}/execute/jobs/{job_id[:6]}", timeout=30).read().decode()
    for path in (f"/api/jobs/{job_id[:6]}", f"/api/jobs/{job_id[:6]}/files", f"/execute/{job_id[:6]}/stop",
                 f"/api/jobs/{job_id[:6]}/rerun", f"/api/jobs/{job_id[:6]}/model.tar.gz"):
        assert path in page  # the page's own calls go through the prefix, which every one of them resolves
    assert server.request("GET", f"/api/jobs/{job_id[:6]}/files")[0] == 200
    assert download(server, f"/api/jobs/{job_id[:6]}/model.tar.gz")[0] == 200


def test_elapsed_counts_the_time_a_job_ran_not_the_time_the_executor_was_down(server):
    from db import SQLiteStore

    now = [1_000_000.0]
    store = SQLiteStore(server.executor.store.path, clock=lambda: now[0])
    job_id = "e1a95ed0-0000-4000-8000-000000000000"
    # Stored for a backend this server does not run, so that none of its workers claims it.
    store.create_job(job_id, kind="training", backend="sagemaker", request={"name": "resumed"}, secrets=None,
                     log_path=str(server.storage_root / "e.log"), output_dir=str(server.storage_root / "e"))
    for moment, step in ((10, "claim"), (25, JobStatus.WAITING), (3625, "claim"), (3640, JobStatus.COMPLETED)):
        now[0] = 1_000_000.0 + moment
        if step == "claim":
            assert store.claim_next(["sagemaker"]).id == job_id
        else:
            store.transition(job_id, step, expected=JobStatus.RUNNING, message="stopped by a shutdown")
    store.close()
    detail = server.request("GET", f"/api/jobs/{job_id}")[1]
    assert detail["elapsed_seconds"] == 30.0  # 15 s before the stop and 15 s after the restart, not the hour between
    listed = next(job for job in server.request("GET", "/api/jobs")[1]["jobs"] if job["id"] == job_id)
    assert listed["elapsed_seconds"] == 30.0


def test_a_rerun_of_a_trial_stores_its_request_as_a_training_of_its_own(app, client):
    executor = app.config["EXECUTOR"]
    (executor.config.storage_root / "digits").mkdir(parents=True)
    body = {"name": "t-trial-2", "dataset": "digits", "hyperparameters": {"learning-rate": "0.1"}}
    trial = TrainingRequest.from_body(body, executor.config.storage_root, 600).to_stored()
    # As a tuning stores its trial: the tuning's fields among the training's, and a key of another release.
    stored = {"parent": "7e000000-0000-4000-8000-000000000000", **trial, "trial": 2,
              TRIAL_PLATFORM_JOB: "t-2-abc", "origin": {"project": "p"}}
    job_id = "7e1a0000-0000-4000-8000-000000000000"
    executor.store.create_job(job_id, kind="training", backend="local", request=stored, secrets=None,
                              log_path="/nonexistent/job.log", output_dir="/nonexistent")
    answer = client.post(f"/api/jobs/{job_id}/rerun")
    assert answer.status_code == 202, answer.get_json()
    again = executor.store.get(answer.get_json()["job_id"])
    expected = {key: value for key, value in stored.items() if key not in ("parent", "trial", TRIAL_PLATFORM_JOB)}
    assert json.dumps(again.request) == json.dumps(expected)


# A row of each family holding less than its family now requires: an earlier release's, or one written by
# hand. Each is still listed and shown by every route that answers for it; none turns a list into an error.
THIN_ROWS = {"pipeline": {"name": "p"}, "training": {"name": "t"}, "tuning": {"name": "u", "tuning": "bad"},
             "automl": {}, "endpoint": {"EndpointName": "e"}, "transform": {"TransformJobName": "x"}}


def test_rows_holding_less_than_their_family_requires_are_still_listed_and_shown(app, client, data_dir):
    store = app.config["EXECUTOR"].store
    for number, (kind, request) in enumerate(THIN_ROWS.items()):
        job_id = f"7e1a000{number}-0000-4000-8000-000000000000"
        store.create_job(job_id, kind=kind, backend="local", request=request, secrets=None,
                         log_path=str(data_dir / f"{number}.log"), output_dir=str(data_dir / str(number)))
        store.transition(job_id, JobStatus.CANCELLED, expected=JobStatus.WAITING)
        for path in (f"/status/{job_id}", f"/execute/{job_id}/getStatus", f"/api/jobs/{job_id}"):
            answer = client.get(path)
            assert answer.status_code == 200, (kind, path, answer.get_json())
        assert client.get(f"/status/{job_id}").get_json()["name"] == request.get("name")
    for path in ("/execute", "/api/jobs", "/api/service/v1/pipelines/training/list",
                 "/api/service/v1/pipelines/tuning/list"):
        answer = client.get(path)
        assert answer.status_code == 200, (path, answer.get_json())
    tuning = client.get("/api/service/v1/pipelines/tuning/7e1a0002-0000-4000-8000-000000000000/get")
    assert tuning.status_code == 200 and tuning.get_json()["tuning"] is None
