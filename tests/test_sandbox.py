"""The sandbox of user code, tried as a hostile script would: real bubblewrap, real processes.

Each test runs a script inside the sandbox the executor would build for its data folder and checks
what the script could reach. They skip, saying why, where bubblewrap cannot run.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from config import ConfigError, load_config
from conftest import ROOT
from mlops import sandbox as sandbox_module

PATH = "/usr/local/bin:/usr/bin:/bin"


def make_sandbox(data_dir: Path, **settings: str) -> sandbox_module.Sandbox:
    config = load_config(environ={}, overrides={"data_dir": str(data_dir), **settings})
    found = sandbox_module.detect(config)
    if not found.isolating:
        pytest.skip(f"no sandbox here: {found.missing}")
    return found


@pytest.fixture
def executor_files(tmp_path: Path) -> dict[str, Path]:
    """A data folder as the executor keeps it: database, key file, two jobs; a storage root."""
    data = tmp_path / "data"
    mine = data / "jobs" / "mine"
    other = data / "jobs" / "other"
    for folder in (mine / "code", mine / "model", other / "model", data / "storage" / "Demo"):
        folder.mkdir(parents=True)
    (data / "secret.key").write_text("the-fernet-key")
    (data / "executor.sqlite3").write_text("the database")
    (other / "model" / "weights.bin").write_text("another job's model")
    (data / "storage" / "Demo" / "secret.csv").write_text("someone's dataset")
    return {"data": data, "mine": mine, "other": other}


def run_inside(box: sandbox_module.Sandbox, job: Path, script: str, *, env: dict[str, str] | None = None,
               writable: list[Path] | None = None) -> dict:
    """Run a script in the job's sandbox; return the JSON it prints."""
    box.hand_over(job)
    process = box.start([sys.executable, "-c", textwrap.dedent(script)], cwd=job / "code",
                        writable=writable if writable is not None else [job / "code", job / "model"],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                        env=env if env is not None else {"PATH": PATH})
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    return json.loads(stdout)


def test_a_job_sees_nothing_of_the_data_folder_but_its_own_folders(executor_files) -> None:
    box = make_sandbox(executor_files["data"])
    data, other = executor_files["data"], executor_files["other"]
    seen = run_inside(box, executor_files["mine"], f"""
        import json, os
        def attempt(action):
            try:
                return action()
            except OSError as exc:
                return type(exc).__name__
        print(json.dumps({{
            "key": attempt(lambda: open({str(data / "secret.key")!r}).read()),
            "database": attempt(lambda: open({str(data / "executor.sqlite3")!r}).read()),
            "other_model": attempt(lambda: open({str(other / "model" / "weights.bin")!r}).read()),
            "write_other": attempt(lambda: open({str(other / "model" / "planted.py")!r}, "w").write("x")),
            "storage": attempt(lambda: os.listdir({str(data / "storage")!r})),
            "jobs": attempt(lambda: os.listdir({str(data / "jobs")!r})),
            "own_write": attempt(lambda: open("../model/model.pt", "w").write("weights")),
        }}))
    """)
    assert seen["key"] == seen["database"] == seen["other_model"] == "FileNotFoundError"
    assert seen["write_other"] in ("FileNotFoundError", "PermissionError", "OSError")
    assert seen["storage"] == "FileNotFoundError"
    assert seen["jobs"] == ["mine"]
    assert seen["own_write"] == 7
    assert (executor_files["mine"] / "model" / "model.pt").read_text() == "weights"
    assert not (other / "model" / "planted.py").exists()


def test_a_job_never_runs_as_root_and_cannot_read_the_executors_environment(executor_files) -> None:
    box = make_sandbox(executor_files["data"])
    seen = run_inside(box, executor_files["mine"], f"""
        import json, os
        try:
            environ = open("/proc/{os.getpid()}/environ", "rb").read().decode(errors="replace")
        except OSError as exc:
            environ = type(exc).__name__
        print(json.dumps({{"uid": os.getuid(), "gid": os.getgid(), "euid": os.geteuid(), "environ": environ,
                           "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit())}}))
    """)
    assert seen["uid"] != 0 and seen["euid"] != 0 and seen["gid"] != 0
    if os.geteuid() == 0:
        first = load_config(environ={}).job_uids.start
        assert (seen["uid"], seen["gid"]) == (first, first)
    # Its own PID namespace: the executor's pid is not there, nor any process but the job's.
    assert seen["environ"] in ("FileNotFoundError", "PermissionError") or "EXECUTOR" not in seen["environ"]
    assert max(seen["pids"]) < 10


def test_a_job_gets_the_environment_it_is_given_and_nothing_else(executor_files, monkeypatch) -> None:
    box = make_sandbox(executor_files["data"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "executor-aws-secret")
    seen = run_inside(box, executor_files["mine"], """
        import json, os
        print(json.dumps(dict(os.environ)))
    """, env={"PATH": PATH, "SM_MODEL_DIR": "/opt/ml/model"})
    assert seen.pop("SM_MODEL_DIR") == "/opt/ml/model"
    assert set(seen) <= {"PATH", "PWD", "LC_CTYPE"}, seen


def test_a_secret_file_of_the_executor_is_hidden_where_its_folder_is_visible(executor_files, tmp_path) -> None:
    # A token file next to the interpreter's packages: the folder is shown, the file is not.
    visible = tmp_path / "tools"
    visible.mkdir()
    token = visible / "api_token"
    token.write_text("executor-token")
    token.chmod(0o600)
    config = load_config(environ={"EXECUTOR_API_TOKEN_FILE": str(token)},
                         overrides={"data_dir": str(executor_files["data"])})
    assert config.api_token == "executor-token"
    box = sandbox_module.detect(config)
    if not box.isolating:
        pytest.skip(f"no sandbox here: {box.missing}")
    box = sandbox_module.Sandbox(**{**box.__dict__, "visible": (*box.visible, visible)})
    seen = run_inside(box, executor_files["mine"], f"""
        import json
        print(json.dumps({{"token": open({str(token)!r}).read()}}))
    """)
    assert seen["token"] == ""


def test_the_proxy_socket_named_through_a_link_is_hidden_where_its_real_folder_is_visible(executor_files,
                                                                                           tmp_path) -> None:
    # EXECUTOR_TRUSTED_PROXY=/run/essedum/executor.sock where /run/essedum links into a folder the
    # sandbox shows: the socket must be covered at its real path, which is the one the job sees. An
    # unprivileged executor's jobs keep its uid, so the socket's 0660 does not keep them out (0666
    # here stands for that: the job runs as another uid when the tests run as root).
    import socket
    visible = tmp_path / "tools"
    (visible / "run").mkdir(parents=True)
    (tmp_path / "etc-run").symlink_to(visible / "run")
    named = tmp_path / "etc-run" / "proxy.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(visible / "run" / "proxy.sock"))
    listener.listen()
    os.chmod(visible / "run" / "proxy.sock", 0o666)
    try:
        config = load_config(environ={}, overrides={"data_dir": str(executor_files["data"]), "trusted_proxy": str(named),
                                                    "api_token": "executor-token-0123456789abcdef"})
        box = sandbox_module.detect(config)
        if not box.isolating:
            pytest.skip(f"no sandbox here: {box.missing}")
        box = sandbox_module.Sandbox(**{**box.__dict__, "visible": (*box.visible, visible)})
        seen = run_inside(box, executor_files["mine"], f"""
            import json, socket
            client = socket.socket(socket.AF_UNIX)
            try:
                client.connect({str(visible / "run" / "proxy.sock")!r})
                print(json.dumps({{"proxy": "connected"}}))
            except OSError as exc:
                print(json.dumps({{"proxy": exc.strerror}}))
        """)
    finally:
        listener.close()
    assert seen["proxy"] != "connected"


def test_a_secret_file_others_may_read_is_refused(tmp_path) -> None:
    token = tmp_path / "api_token"
    token.write_text("executor-token")
    token.chmod(0o644)
    with pytest.raises(ConfigError, match="EXECUTOR_API_TOKEN_FILE.*chmod 600"):
        load_config(environ={"EXECUTOR_API_TOKEN_FILE": str(token)}, overrides={"data_dir": str(tmp_path)})


def test_required_refuses_to_start_naming_what_is_missing(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    config = load_config(environ={}, overrides={"data_dir": str(tmp_path), "sandbox": "required"})
    if not sys.platform.startswith("linux"):
        pytest.skip("names Linux's bubblewrap")
    with pytest.raises(ConfigError, match="EXECUTOR_SANDBOX=required: bubblewrap is not installed"):
        sandbox_module.detect(config)
    found = sandbox_module.detect(config.replace(sandbox="auto"))
    assert not found.isolating and "NOT isolated: bubblewrap is not installed" in found.describe()


def test_the_service_refuses_to_start_when_a_required_sandbox_is_missing(tmp_path) -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("names Linux's bubblewrap")
    # A PATH without bwrap: what a host without bubblewrap looks like to the executor.
    completed = subprocess.run([sys.executable, "app.py", "--port", "0", "--data-dir", str(tmp_path / "data"),
                                "--sandbox", "required"], cwd=ROOT, env={"PATH": str(tmp_path)},
                               capture_output=True, text=True, timeout=60)
    assert completed.returncode == 2
    assert "EXECUTOR_SANDBOX=required: bubblewrap is not installed" in completed.stderr
    assert "serving on" not in completed.stderr


def test_a_job_has_its_own_writable_tmp_and_shared_memory(executor_files) -> None:
    # PyTorch's data loader workers pass batches through /dev/shm; pip and tempfile need /tmp.
    box = make_sandbox(executor_files["data"])
    seen = run_inside(box, executor_files["mine"], """
        import json, tempfile
        from multiprocessing import shared_memory
        block = shared_memory.SharedMemory(create=True, size=4096)
        block.close()
        block.unlink()
        with tempfile.NamedTemporaryFile() as handle:
            print(json.dumps({"shared_memory": True, "tmp": handle.name.startswith("/tmp/")}))
    """)
    assert seen == {"shared_memory": True, "tmp": True}
