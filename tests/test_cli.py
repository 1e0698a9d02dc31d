"""The command-line client, driven as a user drives it, against the real service."""
from __future__ import annotations

import json
import os
import pty
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import ROOT, pipeline_body, wait_for, write_pipeline
from helpers_service import AUTH, METRIC_SCRIPT, TOKEN
from mlops.job_outputs import MAX_LISTED_FILES


def cli(*args: str, url: str | None = None, token: str | None = TOKEN, stdin: str | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if not key.startswith("EXECUTOR_")}
    if url:
        env["EXECUTOR_URL"] = url
    if token:
        env["EXECUTOR_API_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "executor_client", *args], cwd=ROOT, env=env, input=stdin,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def server(service, data_dir: Path):
    write_pipeline(data_dir / "storage", "demo", METRIC_SCRIPT, name="run.py")
    write_pipeline(data_dir / "storage", "broken", "print('about to fail', flush=True)\nraise SystemExit(7)\n",
                   name="run.py")
    return service(data_dir, env={"EXECUTOR_API_TOKEN": TOKEN})


def pipeline_file(tmp_path: Path, folder: str, command: str, name: str = "cli-run") -> str:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(pipeline_body(folder, command, name=name)), encoding="utf-8")
    return str(path)


def test_submit_wait_shows_progress_and_log_and_exits_0_when_completed(server, tmp_path):
    result = cli("submit", pipeline_file(tmp_path, "demo", "python run.py 3"), "--wait", "--interval", "0.2",
                 url=server.url)
    assert result.returncode == 0, result.stderr
    assert "epoch=3/3 train_loss=0.333" in result.stdout
    assert ("[########################] 100.0%  epoch 3/3  COMPLETED / Completed  train_loss=0.333  "
            "val_accuracy=0.833  val_loss=0.433") in result.stderr
    assert "COMPLETED after" in result.stderr.splitlines()[-1]


def test_a_failed_job_exits_1_with_its_reason(server, tmp_path):
    result = cli("submit", pipeline_file(tmp_path, "broken", "python run.py"), "--wait", "--interval", "0.2",
                 url=server.url)
    assert result.returncode == 1
    assert "about to fail" in result.stdout
    ending = result.stderr.split("\njob ", 1)[1]  # the reason may run over several lines: its last output
    assert " ERROR after " in ending and "exit code 7; its last lines:\nabout to fail" in ending


def test_cancel_stops_a_job_and_wait_exits_3(server, tmp_path):
    submitted = cli("submit", pipeline_file(tmp_path, "demo", "python run.py 30 1"), url=server.url)
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    wait_for(lambda: server.request("GET", f"/status/{job_id}", headers=AUTH)[1]["status"] == "RUNNING")

    cancelled = cli("cancel", job_id, url=server.url)
    assert cancelled.returncode == 0
    assert "cancel requested" in cancelled.stdout
    waited = cli("wait", job_id, "--interval", "0.2", "--no-log", url=server.url)
    assert waited.returncode == 3
    assert waited.stdout == ""
    assert "CANCELLED" in waited.stderr.splitlines()[-1]


def test_list_status_and_logs(server, tmp_path):
    finished = cli("submit", pipeline_file(tmp_path, "demo", "python run.py 2", name="listed-run"), "--wait",
                   "--interval", "0.2", "--no-log", url=server.url)
    assert finished.returncode == 0
    job_id = finished.stderr.splitlines()[0].split()[-1]

    listing = cli("list", "--status", "COMPLETED", url=server.url)
    assert listing.returncode == 0
    header, row = listing.stdout.splitlines()
    assert header.split() == ["ID", "NAME", "KIND", "STATUS", "PHASE", "PROGRESS", "SUBMITTED"]
    assert row.split()[:6] == [job_id, "listed-run", "pipeline", "COMPLETED", "Completed", "100%"]
    assert cli("list", "--status", "WAITING", url=server.url).stdout.splitlines()[1:] == []
    assert cli("list", "--name", "LISTED", url=server.url).stdout.splitlines()[1].split()[0] == job_id
    assert cli("list", "--name", "nothing-like-it", url=server.url).stdout.splitlines()[1:] == []

    status = cli("status", job_id, "--json", url=server.url)
    assert json.loads(status.stdout)["metrics"]["train_loss"] == 0.5
    assert "epoch=2/2" in cli("logs", job_id, url=server.url).stdout
    assert "epoch=2/2" in cli("logs", job_id, "--follow", url=server.url).stdout


def test_status_says_when_only_the_first_files_are_listed(server, data_dir, tmp_path):
    write_pipeline(data_dir / "storage", "many", f"""
import os
for index in range({MAX_LISTED_FILES + 5}):
    open(os.path.join(os.environ["SM_OUTPUT_DATA_DIR"], f"part-{{index:04d}}.csv"), "w").close()
""", name="run.py")
    finished = cli("submit", pipeline_file(tmp_path, "many", "python run.py"), "--wait", "--interval", "0.2",
                   "--no-log", url=server.url)
    assert finished.returncode == 0, finished.stderr
    job_id = finished.stderr.splitlines()[0].split()[-1]
    lines = [line for line in cli("status", job_id, url=server.url).stdout.splitlines() if line.startswith("file")]
    assert len(lines) == MAX_LISTED_FILES + 1
    assert lines[-1] == f"files     only the first {MAX_LISTED_FILES} are shown; the job wrote more"


def test_submit_reads_the_pipeline_from_standard_input(server):
    result = cli("submit", "-", url=server.url, stdin=json.dumps(pipeline_body("demo", "python run.py 1")))
    assert result.returncode == 0
    assert len(result.stdout.strip()) == 36


def test_usage_errors_exit_2(tmp_path):
    assert cli().returncode == 2
    assert cli("list", url="ftp://example.invalid").returncode == 2
    assert cli("submit", str(tmp_path / "missing.json"), url="http://127.0.0.1:9").returncode == 2


def test_a_refused_request_exits_4_with_the_executors_message(server):
    wrong_token = cli("list", url=server.url, token="wrong")
    assert wrong_token.returncode == 4
    assert "HTTP 401" in wrong_token.stderr and "authentication required" in wrong_token.stderr
    unknown = cli("status", "00000000-0000-0000-0000-000000000000", url=server.url)
    assert unknown.returncode == 4 and "HTTP 404" in unknown.stderr


class Redirector(BaseHTTPRequestHandler):
    """Answers every request with a redirect elsewhere and records who asked for what."""

    hits: list[tuple[int, str, str | None]] = []

    def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
        port = self.server.server_address[1]
        Redirector.hits.append((port, self.path, self.headers.get("Authorization")))
        self.send_response(302)
        self.send_header("Location", f"http://127.0.0.1:{self.server.other_port}/stolen")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_the_client_never_follows_a_redirect_to_another_server():
    first, second = ThreadingHTTPServer(("127.0.0.1", 0), Redirector), ThreadingHTTPServer(("127.0.0.1", 0), Redirector)
    first.other_port, second.other_port = second.server_address[1], first.server_address[1]
    for httpd in (first, second):
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        result = cli("list", url=f"http://127.0.0.1:{first.server_address[1]}")
    finally:
        first.shutdown()
        second.shutdown()
    assert result.returncode == 4
    assert "refusing to follow a redirect" in result.stderr
    assert [port for port, _, _ in Redirector.hits] == [first.server_address[1]]


def make_digits(folder: Path, limit: int) -> None:
    subprocess.run([sys.executable, str(ROOT / "training_scripts" / "make_digits_dataset.py"), str(folder),
                    "--limit", str(limit)], check=True, capture_output=True, timeout=120)


def test_train_wait_then_download_and_rerun_the_bundled_script_by_id_prefix(server, data_dir, tmp_path):
    make_digits(data_dir / "storage" / "datasets" / "digits", 200)
    trained = cli("train", "datasets/digits", "--hp", "epochs=2", "--hp", "image-size=16", "--wait", "--interval",
                  "0.2", "--no-log", url=server.url, timeout=180)
    assert trained.returncode == 0, trained.stderr
    job_id = trained.stderr.splitlines()[0].split()[-1]
    assert "epoch 2/2  COMPLETED / Completed" in trained.stderr
    final_metrics = next(line for line in trained.stderr.splitlines() if line.startswith("final metrics: "))
    assert "val_accuracy=" in final_metrics and "val_auc=" in final_metrics

    status = cli("status", job_id[:7], url=server.url)
    assert status.returncode == 0 and f"job       {job_id} (training on local)" in status.stdout
    assert '"epochs": "2"' in status.stdout and "file      model/model.pt" in status.stdout

    archive = tmp_path / "model.tar.gz"
    downloaded = cli("download", job_id[:7], "--output", str(archive), url=server.url)
    assert downloaded.returncode == 0, downloaded.stderr
    with tarfile.open(archive) as tar:
        assert {"model.pt", "code/inference.py"} <= set(tar.getnames())
    single = tmp_path / "metrics.json"
    assert cli("download", job_id[:7], "model/metrics.json", "-o", str(single), url=server.url).returncode == 0
    assert "val_accuracy" in json.loads(single.read_text())
    again = cli("download", job_id[:7], "model/metrics.json", "-o", str(single), url=server.url)
    assert again.returncode == 2 and "exists" in again.stderr  # never overwrites a file

    rerun = cli("rerun", job_id[:7], "--wait", "--interval", "0.2", "--no-log", url=server.url, timeout=180)
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stderr.splitlines()[0] == f"rerun of {job_id}"


def test_compare_puts_final_metrics_and_hyperparameters_side_by_side_marking_differences(server, tmp_path):
    ids = []
    for epochs in ("2", "4"):
        result = cli("submit", pipeline_file(tmp_path, "demo", f"python run.py {epochs}", name=f"run-{epochs}"),
                     "--wait", "--interval", "0.2", "--no-log", url=server.url)
        assert result.returncode == 0, result.stderr
        ids.append(result.stderr.splitlines()[0].split()[-1])
    compared = cli("compare", ids[0][:6], ids[1][:6], url=server.url)
    assert compared.returncode == 0, compared.stderr
    lines = {line[2:].split()[0]: line for line in compared.stdout.splitlines()[1:]}
    assert lines["name"].split() == ["*", "name", "run-2", "run-4"]
    assert lines["status"].split() == ["status", "COMPLETED", "COMPLETED"]  # the same: no mark
    assert lines["train_loss"].split() == ["*", "train_loss", "0.5", "0.25"]


def test_an_ambiguous_or_unknown_prefix_is_refused_with_the_executors_message(server):
    unknown = cli("status", "ffff0", url=server.url)
    assert unknown.returncode == 4 and "HTTP 404" in unknown.stderr
    too_short = cli("status", "ab", url=server.url)
    assert too_short.returncode == 4 and "first 4 characters" in too_short.stderr


def test_on_a_terminal_the_progress_line_is_cleared_before_log_text_and_redrawn_after(server, tmp_path):
    controller, terminal = pty.openpty()
    env = {key: value for key, value in os.environ.items() if not key.startswith("EXECUTOR_")}
    env.update(EXECUTOR_URL=server.url, EXECUTOR_API_TOKEN=TOKEN)
    process = subprocess.Popen([sys.executable, "-m", "executor_client", "submit",
                                pipeline_file(tmp_path, "demo", "python run.py 4 0.4"), "--wait", "--interval", "0.1"],
                               cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=terminal, stderr=terminal)
    os.close(terminal)
    screen = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the terminal closed: the client exited
            break
        if not chunk:
            break
        screen += chunk
    os.close(controller)
    assert process.wait(timeout=60) == 0
    lines = terminal_lines(screen.decode())
    bars = [line for line in lines if re.match(r"\[[#.]{24}\]", line)]
    log_lines = [line for line in lines if "epoch=" in line and line not in bars]
    assert [line.split()[0] for line in log_lines] == ["epoch=1/4", "epoch=2/4", "epoch=3/4", "epoch=4/4"]
    # What stays on the screen: each log line whole and on its own, the bar once, last, at 100%.
    assert len(bars) == 1 and bars[0].startswith("[########################] 100.0%  epoch 4/4"), lines
    assert lines.index(bars[0]) > lines.index(log_lines[-1])


def terminal_lines(text: str) -> list[str]:
    """Return the lines a terminal shows after this output: \r returns to column 0, ESC[K erases to the end."""
    lines: list[str] = []
    line: list[str] = []
    column = index = 0
    while index < len(text):
        if text.startswith("\x1b[K", index):
            del line[column:]
            index += 3
            continue
        char = text[index]
        if char == "\r":
            column = 0
        elif char == "\n":
            lines.append("".join(line))
            line, column = [], 0
        else:
            line[column:column + 1] = [char]
            column += 1
        index += 1
    return lines + ["".join(line)] if line else lines


def test_the_documented_example_pipeline_runs_as_written(service, data_dir):
    documented = (ROOT / "examples" / "pipeline" / "README.md").read_text()
    assert "cp -r examples/pipeline data/storage/examples/" in documented
    command = "python -m executor_client submit examples/pipeline/pipeline.json --wait"
    assert command in documented and command in (ROOT / "docs" / "operations.md").read_text()
    # The copy the README makes, into this service's storage root (data/storage under its data folder).
    shutil.copytree(ROOT / "examples" / "pipeline", data_dir / "storage" / "examples" / "pipeline")
    server = service(data_dir, env={"EXECUTOR_API_TOKEN": TOKEN})
    result = cli(*command.split()[3:], "--interval", "0.2", url=server.url)
    assert result.returncode == 0, result.stderr
    assert "epoch=3/3 train_loss=" in result.stdout
    assert "report.txt" in cli("status", result.stderr.splitlines()[0].split()[-1], url=server.url).stdout


def test_build_image_runs_the_container_builder_with_docker(tmp_path, monkeypatch):
    from aws_fixtures import docker_calls, fake_docker

    record = fake_docker(tmp_path, monkeypatch)  # docker cannot run here: a recording stand-in on PATH
    context = tmp_path / "scripts"
    context.mkdir()
    (context / "requirements.txt").write_text("pillow==13.0.0\n")
    done = cli("build-image", "--base", "python:3.11-slim", "--tag", "essedum/train:1", "--context", str(context))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "essedum/train:1"
    [build] = docker_calls(record)
    assert build["argv"][:3] == ["build", "--tag", "essedum/train:1"]
    assert "pip install" in build["stdin"] and "/opt/ml/code" not in build["stdin"]


def test_build_image_refuses_a_bad_tag_before_docker_runs(tmp_path, monkeypatch):
    from aws_fixtures import docker_calls, fake_docker

    record = fake_docker(tmp_path, monkeypatch)
    done = cli("build-image", "--base", "python:3.11-slim", "--tag", "bad tag; rm -rf /")
    assert done.returncode == 2 and "tag" in done.stderr
    assert docker_calls(record) == []


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def cli_env(**settings: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("EXECUTOR_")}
    return {**env, "EXECUTOR_API_TOKEN": TOKEN, **settings}


def test_the_client_reads_the_services_own_port_setting(server):
    port = server.url.rsplit(":", 1)[1]
    listed = subprocess.run([sys.executable, "-m", "executor_client", "list"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, env=cli_env(EXECUTOR_PORT=port))
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split()[:3] == ["ID", "NAME", "KIND"]


def test_cannot_reach_names_the_setting_that_chose_the_url():
    closed = str(free_port())
    refused = subprocess.run([sys.executable, "-m", "executor_client", "list"], cwd=ROOT, capture_output=True,
                             text=True, timeout=60, env=cli_env(EXECUTOR_PORT=closed))
    assert refused.returncode == 4
    assert f"cannot reach the executor at http://127.0.0.1:{closed}" in refused.stderr
    assert "from EXECUTOR_PORT" in refused.stderr and "EXECUTOR_URL" in refused.stderr


def test_wait_keeps_following_a_job_across_a_restart_of_the_service(service, data_dir, tmp_path):
    write_pipeline(data_dir / "storage", "slow", METRIC_SCRIPT, name="run.py")
    port = free_port()
    settings = {"EXECUTOR_API_TOKEN": TOKEN, "EXECUTOR_RETRY_INTERRUPTED": "true"}
    first = service(data_dir, env=settings, args=["--port", str(port)])
    submitted = cli("submit", pipeline_file(tmp_path, "slow", "python run.py 4 0.5"), url=first.url)
    job_id = submitted.stdout.strip()
    follower = subprocess.Popen([sys.executable, "-m", "executor_client", "wait", job_id, "--interval", "0.2",
                                 "--no-log"], cwd=ROOT, env=cli_env(EXECUTOR_URL=first.url), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    wait_for(lambda: first.request("GET", f"/status/{job_id}", headers=AUTH)[1]["status"] == "RUNNING")
    first.kill()  # a crash: the job is queued again at the next start
    time.sleep(2)  # long enough for the client to find the executor gone
    service(data_dir, env=settings, args=["--port", str(port)])
    out, err = follower.communicate(timeout=90)
    assert follower.returncode == 0, err
    assert f"the executor at {first.url} is unreachable" in err and f"job {job_id[:8]} is kept" in err
    assert "the executor is back" in err and err.splitlines()[-1].startswith(f"job {job_id} COMPLETED")


def test_a_reader_that_stops_early_gets_no_traceback(server, tmp_path):
    finished = cli("submit", pipeline_file(tmp_path, "demo", "python run.py 1"), "--wait", "--no-log", url=server.url)
    job_id = finished.stderr.splitlines()[0].split()[-1]
    reader, writer = os.pipe()
    os.close(reader)  # like `| head -1` after its line: every write finds the pipe closed
    try:
        shown = subprocess.run([sys.executable, "-m", "executor_client", "status", job_id[:8]], cwd=ROOT,
                               env=cli_env(EXECUTOR_URL=server.url), stdout=writer, stderr=subprocess.PIPE,
                               text=True, timeout=60)
    finally:
        os.close(writer)
    assert "Traceback" not in shown.stderr and "BrokenPipeError" not in shown.stderr
    assert shown.returncode == 141


def test_download_into_an_existing_folder_writes_the_file_inside_it(server, data_dir, tmp_path):
    write_pipeline(data_dir / "storage", "reporter", "import os\nopen(os.path.join(os.environ['SM_OUTPUT_DATA_DIR'], "
                   "'report.txt'), 'w').write('ok')\n", name="run.py")
    finished = cli("submit", pipeline_file(tmp_path, "reporter", "python run.py"), "--wait", "--no-log",
                   url=server.url)
    job_id = finished.stderr.splitlines()[0].split()[-1]
    folder = tmp_path / "downloads"
    folder.mkdir()
    for output in (str(folder), f"{folder}/"):
        done = cli("download", job_id[:8], "output/data/report.txt", "-o", output, url=server.url)
        assert done.returncode == 0, done.stderr
        assert (folder / "report.txt").read_text() == "ok"
        (folder / "report.txt").unlink()


def test_the_train_command_a_tuning_prints_is_the_installed_command_quoted_for_a_shell():
    from executor_client.__main__ import parse_args, train_command

    args = parse_args(["tune", "datasets/my digits", "--hp", "note=it's fine", "--hp", "epochs=3", "--name",
                       "digits run", "--range", "quality=0.2,0.9", "--objective", "val_auc", "--wait"])
    line = train_command(args, {"quality": 0.9})
    # pyproject.toml installs the client as `executor-client`; `python -m executor_client` runs only in the checkout.
    assert line == ("executor-client train 'datasets/my digits' --hp 'note=it'\"'\"'s fine' --hp epochs=3 "
                    "--hp quality=0.9 --name 'digits run'")
    # Pasted into a shell, it is the training the tuning found: the same words reach the client's own parser.
    program, *words = shlex.split(line)
    again = parse_args(words)
    assert program == "executor-client"
    assert (again.command, again.dataset, again.hp, again.name) == (
        "train", "datasets/my digits", ["note=it's fine", "epochs=3", "quality=0.9"], "digits run")


def test_build_image_push_without_aws_settings_says_what_to_set(tmp_path, monkeypatch):
    from aws_fixtures import fake_docker

    fake_docker(tmp_path, monkeypatch)
    home = tmp_path / "home"
    home.mkdir()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "EXECUTOR_"))}
    env.update(HOME=str(home), AWS_CONFIG_FILE=str(home / "none"), AWS_SHARED_CREDENTIALS_FILE=str(home / "none"),
               AWS_EC2_METADATA_DISABLED="true")
    done = subprocess.run([sys.executable, "-m", "executor_client", "build-image", "--base", "python:3.11-slim",
                           "--tag", "essedum/train:1", "--push", "123456789012.dkr.ecr.eu-west-1.amazonaws.com/train"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 4
    assert "region" not in done.stderr.lower()  # the registry's own region is in its address
    assert "no AWS credentials" in done.stderr and "AWS_PROFILE" in done.stderr


def test_the_model_lifecycle_from_the_command_line(server, data_dir, tmp_path):
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    make_digits(data_dir / "storage" / "datasets" / "digits", 300)
    trained = cli("train", "datasets/digits", "--hp", "epochs=3", "--hp", "image-size=8", "--wait", "--interval",
                  "0.2", "--no-log", url=server.url, timeout=180)
    assert trained.returncode == 0, trained.stderr
    job_id = trained.stderr.splitlines()[0].split()[-1]

    registered = cli("register-model", job_id[:6], "--name", "digits-cnn", url=server.url)
    assert registered.returncode == 0, registered.stderr
    assert registered.stdout.startswith(f"model digits-cnn registered from training job {job_id}")
    deployed = cli("deploy", "digits-cnn", "--endpoint", "digits", "--interval", "0.2", url=server.url, timeout=120)
    assert deployed.returncode == 0, deployed.stderr
    assert deployed.stdout.strip() == "endpoint digits InService"

    digits = load_digits()
    images = []
    for index in range(1500, 1503):
        path = tmp_path / f"digit-{index}.png"
        Image.fromarray(np.rint(digits.images[index] * (255 / 16)).astype(np.uint8)).save(path)
        images.append(str(path))
    inferred = cli("infer", "digits", *images, url=server.url)
    assert inferred.returncode == 0, inferred.stderr
    predictions = json.loads(inferred.stdout)["predictions"]
    assert len(predictions) == 3 and set(predictions[0]["probabilities"]) == {str(digit) for digit in range(10)}
    explained = cli("explain", "digits", images[0], url=server.url)
    assert explained.returncode == 0, explained.stderr
    explanation = json.loads(explained.stdout)
    assert explanation["method"] == "occlusion" and explanation["saliency"]

    batch = data_dir / "storage" / "batch"
    batch.mkdir()
    for path in images:
        shutil.copy(path, batch)
    transformed = cli("transform", "digits-cnn", "batch", "--name", "digits-batch", "--interval", "0.2",
                      url=server.url, timeout=120)
    assert transformed.returncode == 0, transformed.stderr
    assert transformed.stdout.splitlines()[0] == "batch inference digits-batch Completed"
    answers = Path(transformed.stdout.splitlines()[1].removeprefix("answers in "))
    assert sorted(path.name for path in answers.iterdir()) == sorted(f"{Path(path).name}.out" for path in images)

    undeployed = cli("undeploy", "digits", url=server.url)
    assert undeployed.returncode == 0 and "taken down" in undeployed.stdout
    assert cli("infer", "digits", images[0], url=server.url).returncode == 4
