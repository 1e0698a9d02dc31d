"""The launcher resolves a job's secret into its environment before the user's script starts.

The variable names are the executor's (mlops/sagemaker/job_secrets.py), checked against the launcher's.

Run as a real subprocess against moto's Secrets Manager in a moto server (AWS_ENDPOINT_URL), as the
training container runs it against AWS.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

LAUNCHER = Path(__file__).resolve().parents[1] / "training_scripts" / "essedum_launch.py"
SCRIPT = """\
import json, os, sys
print(json.dumps({"argv": sys.argv[1:], "token": os.environ.get("API_TOKEN"),
                  "arn_left": os.environ.get("ESSEDUM_SECRET_ARN"), "pid": os.getpid()}))
"""


@pytest.fixture
def moto_server():
    server = ThreadedMotoServer(port=0)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def _run(code: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    # As the toolkit runs a job's program: in the code folder, by its file name.
    process = subprocess.Popen([sys.executable, "essedum_launch.py", *args], cwd=code, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = process.communicate(timeout=60)
    done = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    done.pid = process.pid  # type: ignore[attr-defined]
    return done


def test_the_script_gets_the_secret_values_and_its_arguments(moto_server, tmp_path):
    env = {**os.environ, "AWS_ENDPOINT_URL": moto_server, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "eu-west-1"}
    secrets = boto3.client("secretsmanager", region_name="eu-west-1", endpoint_url=moto_server,
                           aws_access_key_id="testing", aws_secret_access_key="testing")
    arn = secrets.create_secret(Name="essedum/jobs/job-1",
                                SecretString=json.dumps({"API_TOKEN": "tok-3f9a"}))["ARN"]
    code = tmp_path / "code"
    code.mkdir()
    shutil.copy(LAUNCHER, code / "essedum_launch.py")
    (code / "train.py").write_text(SCRIPT, encoding="utf-8")
    done = _run(code, {**env, "ESSEDUM_SECRET_ARN": arn, "ESSEDUM_ENTRY_POINT": "train.py"}, "-x", "1", "--lr", "0.1")
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["token"] == "tok-3f9a"
    assert seen["argv"] == ["-x", "1", "--lr", "0.1"]
    assert seen["arn_left"] is None  # the reference is not handed on to the script
    assert seen["pid"] == done.pid  # the script runs in the launcher's process: signals reach it directly


def test_a_secret_it_cannot_read_stops_the_job_before_the_script(moto_server, tmp_path):
    env = {**os.environ, "AWS_ENDPOINT_URL": moto_server, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing"}
    code = tmp_path / "code"
    code.mkdir()
    shutil.copy(LAUNCHER, code / "essedum_launch.py")
    (code / "train.py").write_text("print('script ran')\n", encoding="utf-8")
    gone = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:essedum/jobs/gone-AbCdEf"
    done = _run(code, {**env, "ESSEDUM_SECRET_ARN": gone, "ESSEDUM_ENTRY_POINT": "train.py"})
    assert done.returncode != 0
    assert "ResourceNotFoundException" in done.stderr
    assert "script ran" not in done.stdout


def test_the_launcher_reads_the_variables_the_executor_sets():
    import importlib.util

    from mlops.sagemaker.job_secrets import ENTRY_POINT_VARIABLE, SECRET_ARN_VARIABLE

    spec = importlib.util.spec_from_file_location("essedum_launch", LAUNCHER)
    launcher = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(launcher)
    assert (launcher.SECRET_ARN, launcher.ENTRY_POINT) == (SECRET_ARN_VARIABLE, ENTRY_POINT_VARIABLE)


def test_a_secret_and_an_exact_command_line_go_together(moto_server, tmp_path):
    env = {**os.environ, "AWS_ENDPOINT_URL": moto_server, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing"}
    secrets = boto3.client("secretsmanager", region_name="eu-west-1", endpoint_url=moto_server,
                           aws_access_key_id="testing", aws_secret_access_key="testing")
    arn = secrets.create_secret(Name="essedum/jobs/job-2", SecretString=json.dumps({"API_TOKEN": "t-2"}))["ARN"]
    code = tmp_path / "code"
    code.mkdir()
    shutil.copy(LAUNCHER, code / "essedum_launch.py")
    (code / "train.py").write_text(SCRIPT, encoding="utf-8")
    argv = ["train.py", '"Last_Execution_Time":"-1"']
    done = _run(code, {**env, "ESSEDUM_SECRET_ARN": arn}, "--essedum-argv", json.dumps(argv))
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["token"] == "t-2" and seen["argv"] == ['"Last_Execution_Time":"-1"']
