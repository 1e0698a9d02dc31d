"""User code that tries to escape, against a real service: each test is one thing a hostile user tried.

Real components throughout: the executor (in this process behind waitress, or as `python app.py`),
its SQLite store, bubblewrap, the scripts and models as real processes. Where the executor runs in
this process, a model that escaped into it would end or corrupt the test run itself.
"""
from __future__ import annotations

import json
import sys
import textwrap
import time
import uuid
from pathlib import Path

import psutil
import pytest

from conftest import LiveServer, http_request, pipeline_body, wait_final, wait_for, write_pipeline
from helpers_service import AUTH, TOKEN
from test_model_lifecycle_local import API, deploy, tiny_model

AWS_SECRET = "aws-secret-of-the-executor-0d9c"

# Forks twice into a new session that keeps the job's stdout open; the daemon's command line ends
# with a token the test finds it by on the host.
DAEMON = """
import os, sys, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(600)", {token!r}])
    os._exit(0)
print("daemon started", flush=True)
time.sleep({main_seconds})
"""


@pytest.fixture
def sandboxed(live_server) -> LiveServer:
    server = live_server()
    if not server.executor.sandbox.isolating:
        pytest.skip(f"no sandbox here: {server.executor.sandbox.missing}")
    return server


def daemons(token: str) -> list[psutil.Process]:
    return [process for process in psutil.process_iter(["cmdline"])
            if (process.info["cmdline"] or [])[-2:] == ["import time; time.sleep(600)", token]]


def run_pipeline(server, storage_root: Path, folder: str, script: str) -> dict:
    """Run a pipeline script to its end; return its final status with its log."""
    write_pipeline(storage_root, folder, textwrap.dedent(script))
    job_id = server.request("POST", "/execute", pipeline_body(folder, "python pipe1.py"), headers=AUTH)[1]["task_id"]
    final = wait_final_with(server, job_id)
    final["log"] = server.request("GET", f"/execute/{job_id}/getLog", headers=AUTH)[1]["logs"]["content"]
    return final


def wait_final_with(server, job_id: str, timeout: float = 60) -> dict:
    return wait_for(lambda: (body := server.request("GET", f"/execute/{job_id}/getStatus", headers=AUTH)[1])
                    ["task_status"] in ("COMPLETED", "ERROR", "CANCELLED") and body, timeout=timeout, interval=0.1)


def reported(final: dict) -> dict:
    """The JSON a hostile script printed as its last line before the executor's own lines."""
    lines = [line for line in final["log"].splitlines() if line.startswith("{")]
    return json.loads(lines[-1])


# -- what a job can reach ----------------------------------------------------------------------

def test_a_job_cannot_read_the_executors_environment_and_never_runs_as_root(service, tmp_path) -> None:
    data = tmp_path / "data"
    proc = service(data, env={"EXECUTOR_API_TOKEN": TOKEN, "AWS_SECRET_ACCESS_KEY": AWS_SECRET})
    if "NOT isolated" in "".join(proc.lines):
        pytest.skip("no sandbox here")
    final = run_pipeline(proc, data / "storage", "environ", f"""
        import json, os
        try:
            environ = open("/proc/{proc.process.pid}/environ", "rb").read().decode(errors="replace")
        except OSError as exc:
            environ = type(exc).__name__
        print(json.dumps({{"environ": environ, "own": sorted(os.environ), "uid": os.getuid()}}))
    """)
    assert final["task_status"] == "COMPLETED", final
    seen = reported(final)
    assert seen["environ"] in ("FileNotFoundError", "PermissionError")
    assert TOKEN not in final["log"] and AWS_SECRET not in final["log"]
    assert not [name for name in seen["own"] if name.startswith(("AWS_", "EXECUTOR_API"))]
    assert seen["uid"] != 0


def test_a_job_cannot_read_the_database_or_key_file_nor_mark_itself_completed(sandboxed) -> None:
    data = sandboxed.executor.config.data_dir
    final = run_pipeline(sandboxed, sandboxed.storage_root, "store", f"""
        import json, sqlite3
        def attempt(action):
            try:
                return action()
            except Exception as exc:
                return type(exc).__name__
        def complete_myself():
            connection = sqlite3.connect({str(data / "executor.sqlite3")!r})
            connection.execute("UPDATE jobs SET status = 'COMPLETED'")
            connection.commit()
            return "updated"
        print(json.dumps({{"key": attempt(lambda: open({str(data / "secret.key")!r}).read()),
                           "update": attempt(complete_myself)}}))
        raise SystemExit(3)
    """)
    seen = reported(final)
    assert seen == {"key": "FileNotFoundError", "update": "OperationalError"}
    assert final["task_status"] == "ERROR" and "exit code 3" in final["failure_reason"]


def test_a_job_cannot_write_into_another_jobs_folder(sandboxed) -> None:
    first = run_pipeline(sandboxed, sandboxed.storage_root, "victim", """
        import os
        open(os.path.join(os.environ["SM_MODEL_DIR"], "weights.txt"), "w").write("the victim's model")
    """)
    victim = Path(first["output_dir"])
    assert (victim / "model" / "weights.txt").read_text() == "the victim's model"
    final = run_pipeline(sandboxed, sandboxed.storage_root, "attacker", f"""
        import json, os
        def attempt(action):
            try:
                return action()
            except OSError as exc:
                return type(exc).__name__
        print(json.dumps({{
            "overwrite": attempt(lambda: open({str(victim / "model" / "weights.txt")!r}, "w").write("poisoned")),
            "jobs": attempt(lambda: os.listdir({str(victim.parent)!r}))}}))
    """)
    seen = reported(final)
    assert seen["overwrite"] in ("FileNotFoundError", "PermissionError", "OSError")
    assert seen["jobs"] == [final["task_id"]]
    assert (victim / "model" / "weights.txt").read_text() == "the victim's model"


# -- a job is its whole process tree -----------------------------------------------------------

def test_a_daemon_holding_stdout_does_not_keep_its_job_running(live_server) -> None:
    server = live_server()
    token = uuid.uuid4().hex
    started = time.monotonic()
    final = run_pipeline(server, server.storage_root, "daemon", DAEMON.format(token=token, main_seconds=0))
    assert final["task_status"] == "COMPLETED", final
    assert time.monotonic() - started < 20
    assert "daemon started" in final["log"]
    wait_for(lambda: not daemons(token), timeout=10)


def test_max_runtime_ends_the_job_with_its_daemons(live_server) -> None:
    server = live_server()
    token = uuid.uuid4().hex
    root = server.storage_root
    (root / "data").mkdir(parents=True)
    (root / "daemon").mkdir()
    (root / "daemon" / "train.py").write_text(DAEMON.format(token=token, main_seconds=300))
    _, accepted = server.request("POST", "/api/service/v1/pipelines/training", {
        "name": "daemon", "dataset": "data", "source_dir": "daemon", "max_runtime_seconds": 2})
    final = wait_final(server, accepted["job_id"], timeout=40)
    assert final["task_status"] == "ERROR" and final["failure_reason"].startswith("MaxRuntimeExceeded")
    wait_for(lambda: not daemons(token), timeout=10)


def test_no_process_of_a_job_survives_kill_9_of_the_executor(service, tmp_path) -> None:
    data = tmp_path / "data"
    token = uuid.uuid4().hex
    write_pipeline(data / "storage", "daemon", DAEMON.format(token=token, main_seconds=300))
    first = service(data)
    job_id = first.request("POST", "/execute", pipeline_body("daemon", "python pipe1.py"))[1]["task_id"]
    wait_for(lambda: daemons(token), timeout=30)
    first.kill()
    try:
        # In the sandbox the tree dies with the executor; bare, the restart's recovery sweeps it.
        second = service(data)
        wait_for(lambda: not daemons(token), timeout=10)
        final = second.request("GET", f"/execute/{job_id}/getStatus")[1]
        assert final["task_status"] == "ERROR"
    finally:
        for leftover in daemons(token):
            leftover.kill()


def test_shutdown_ends_running_jobs_with_their_daemons(service, tmp_path) -> None:
    data = tmp_path / "data"
    token = uuid.uuid4().hex
    write_pipeline(data / "storage", "daemon", DAEMON.format(token=token, main_seconds=300))
    proc = service(data, args=["--shutdown-timeout", "1"])
    proc.request("POST", "/execute", pipeline_body("daemon", "python pipe1.py"))
    wait_for(lambda: daemons(token), timeout=30)
    try:
        assert proc.terminate(timeout=60) == 0
        wait_for(lambda: not daemons(token), timeout=10)
    finally:
        for leftover in daemons(token):
            leftover.kill()


# -- model code never runs in the executor -----------------------------------------------------

def hostile_model(server: LiveServer, name: str, inference: str) -> None:
    folder = tiny_model(server.storage_root / "models" / name)
    (folder / "code").mkdir()
    (folder / "code" / "inference.py").write_text(textwrap.dedent(inference))


def test_a_model_that_exits_at_load_fails_its_deployment_and_the_executor_stays_up(live_server) -> None:
    server = live_server()
    hostile_model(server, "exits", """
        import os
        def model_fn(model_dir):
            print("about to leave", flush=True)
            os._exit(3)
    """)
    endpoint = deploy(server, "exits", "exits-ep", Containers=[{"ModelDataUrl": "models/exits"}])
    assert endpoint["status"] == "Failed"
    assert "exited with code 3 during load" in endpoint["failureReason"]
    assert server.request("GET", "/health") == (200, {"status": "ok"})


def test_a_model_that_exits_at_predict_fails_that_request_and_is_started_again(live_server) -> None:
    server = live_server()
    hostile_model(server, "flaky", """
        import json, os
        def input_fn(body, content_type):
            return json.loads(body)
        def predict_fn(data, model):
            if data.get("exit"):
                os._exit(4)
            return {"pid_in_namespace": os.getpid(), "echo": data["value"]}
        def output_fn(prediction, accept):
            return json.dumps(prediction)
    """)
    assert deploy(server, "flaky", "flaky-ep", Containers=[{"ModelDataUrl": "models/flaky"}])["status"] == "InService"
    status, body = server.request("POST", f"{API}/endpoints/flaky-ep/infer", {"exit": True})
    assert status == 502 and "exited with code 4 during invoke" in body["error"]
    assert server.request("GET", "/health")[0] == 200
    status, body = server.request("POST", f"{API}/endpoints/flaky-ep/infer", {"value": 7})
    assert status == 200 and body["echo"] == 7
    # Three crashes in a row and the worker is no longer started again: no crash loop.
    for _ in range(3):
        assert server.request("POST", f"{API}/endpoints/flaky-ep/infer", {"exit": True})[0] == 502
    status, body = server.request("POST", f"{API}/endpoints/flaky-ep/infer", {"value": 8})
    assert status == 502 and "crashed 3 times in a row" in body["error"]


def test_a_model_that_replaces_hmac_compare_digest_does_not_turn_authentication_off(live_server) -> None:
    server = live_server(api_token=TOKEN)
    hostile_model(server, "patcher", """
        import hmac, json
        hmac.compare_digest = lambda a, b: True
        def model_fn(model_dir):
            return "patched"
        def input_fn(body, content_type):
            return body
        def predict_fn(data, model):
            return {"compare_digest_is_patched": hmac.compare_digest(b"a", b"b")}
        def output_fn(prediction, accept):
            return json.dumps(prediction)
    """)

    def request(method, path, body=None, token=TOKEN):
        return http_request(server.url, method, path, body, {"Authorization": f"Bearer {token}"})

    assert request("POST", f"{API}/models/register", {
        "ModelName": "patcher", "Containers": [{"ModelDataUrl": "models/patcher"}]})[0] == 201
    assert request("POST", f"{API}/endpoints/register", {
        "ModelName": "patcher", "EndpointConfigName": "patcher-config", "VariantName": "AllTraffic",
        "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"})[0] == 201
    assert request("POST", f"{API}/endpoints/patcher-ep/deploy_model",
                   {"EndpointConfigName": "patcher-config", "EndpointName": "patcher-ep"})[0] == 202
    wait_for(lambda: request("GET", f"{API}/endpoints/patcher-ep")[1]["status"] == "InService", timeout=60)
    status, body = request("POST", f"{API}/endpoints/patcher-ep/infer", {"x": 1})
    assert status == 200 and body == {"compare_digest_is_patched": True}
    # The patch lives in the model's worker only: here a wrong token is still refused.
    assert request("GET", "/execute", token="wrong-token")[0] == 401
    import hmac
    assert hmac.compare_digest(b"a", b"b") is False
    assert sys.modules.get("inference") is None


def test_a_job_cannot_replace_its_own_log_the_executor_reads(sandboxed) -> None:
    final = run_pipeline(sandboxed, sandboxed.storage_root, "fifo", """
        import json, os
        log = os.path.join(os.environ["SM_MODEL_DIR"], "..", "job.log")
        def attempt(action):
            try:
                action()
                return "done"
            except OSError as exc:
                return type(exc).__name__
        print(json.dumps({"seen": os.path.exists(log), "unlink": attempt(lambda: os.unlink(log)),
                          "fifo": attempt(lambda: os.mkfifo(log))}))
    """)
    seen = reported(final)
    # The job folder itself (its log) is not in the sandbox: at most a private empty folder is.
    assert seen["seen"] is False and seen["unlink"] == "FileNotFoundError"
    log = Path(final["log_path"])
    assert log.is_file() and not log.is_symlink()
    assert final["task_status"] == "COMPLETED" and '"seen": false' in final["log"]
