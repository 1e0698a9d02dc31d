"""The local backend runs real processes under the SageMaker container contract."""
from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import psutil

from conftest import pipeline_body, wait_final, wait_for, write_pipeline
from mlops.local import output

CONTRACT_SCRIPT = """
import json, os, sys
config = os.environ["SM_INPUT_CONFIG_DIR"]
report = {
    "argv": sys.argv[1:],
    "hps": json.loads(os.environ["SM_HPS"]),
    "hp_epochs": os.environ.get("SM_HP_EPOCHS"),
    "resource": json.load(open(os.path.join(config, "resourceconfig.json"))),
    "hyperparameters": json.load(open(os.path.join(config, "hyperparameters.json"))),
    "channels": json.loads(os.environ["SM_CHANNELS"]),
    "dataset": sorted(os.listdir(os.environ["SM_CHANNEL_TRAINING"])),
    "cwd_files": sorted(os.listdir(".")),
}
json.dump(report, open(os.path.join(os.environ["SM_MODEL_DIR"], "contract.json"), "w"))
print("epoch=1/1 train_loss=0.5")
"""


def test_training_jobs_get_the_container_layout_environment_and_flags(live_server):
    server = live_server()
    root = server.executor.config.storage_root
    dataset = root / "datasets" / "tiny"
    dataset.mkdir(parents=True)
    (dataset / "metadata.csv").write_text("filename,label\n")
    code = root / "code" / "mine"
    code.mkdir(parents=True)
    (code / "entry.py").write_text(CONTRACT_SCRIPT)
    status, accepted = server.request("POST", "/api/service/v1/pipelines/training", {
        "name": "contract", "dataset": "datasets/tiny", "source_dir": "code/mine", "entry_point": "entry.py",
        "hyperparameters": {"epochs": 3, "learning_rate": 0.01}})
    assert status == 202, accepted
    final = wait_final(server, accepted["job_id"])
    assert final["task_status"] == "COMPLETED", final
    report = json.loads((Path(final["output_dir"]) / "model" / "contract.json").read_text())
    assert report["argv"] == ["--epochs", "3", "--learning_rate", "0.01"]
    assert report["hps"] == report["hyperparameters"] == {"epochs": "3", "learning_rate": "0.01"}
    assert report["hp_epochs"] == "3"
    assert report["resource"]["current_host"] == "algo-1" and report["channels"] == ["training"]
    assert report["dataset"] == ["metadata.csv"] and "entry.py" in report["cwd_files"]


def test_max_runtime_is_enforced_and_reported(live_server):
    server = live_server()
    root = server.executor.config.storage_root
    (root / "data").mkdir(parents=True)
    code = root / "slow"
    code.mkdir()
    (code / "train.py").write_text("import time\nprint('started', flush=True)\ntime.sleep(60)\n")
    started = time.monotonic()
    _, accepted = server.request("POST", "/api/service/v1/pipelines/training", {
        "name": "slow", "dataset": "data", "source_dir": "slow", "max_runtime_seconds": 1})
    final = wait_final(server, accepted["job_id"], timeout=30)
    assert final["task_status"] == "ERROR"
    assert final["failure_reason"].startswith("MaxRuntimeExceeded")
    assert time.monotonic() - started < 20


def test_stop_kills_the_whole_process_tree(live_server):
    server = live_server()
    token = uuid.uuid4().hex
    # The child's command line carries a token: in the sandbox its pid is its namespace's, not the host's.
    script = f"""
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", {token!r}])
print("running", flush=True)
time.sleep(120)
"""
    folder = write_pipeline(server.executor.config.storage_root, "tree", script)
    _, accepted = server.request("POST", "/execute", pipeline_body(folder, "python pipe1.py"))
    wait_for(lambda: _with_token(token))
    status, body = server.request("GET", f"/execute/{accepted['task_id']}/stop")
    assert body == {"Task cancelled": True}
    final = wait_final(server, accepted["task_id"], timeout=30)
    assert final["task_status"] == "CANCELLED"
    wait_for(lambda: not _with_token(token), timeout=15)


def _with_token(token: str) -> list[psutil.Process]:
    return [process for process in psutil.process_iter(["cmdline"]) if (process.info["cmdline"] or [])[-1:] == [token]]


def test_requirements_are_installed_into_a_cached_environment(live_server):
    server = live_server()
    root = server.executor.config.storage_root
    folder = write_pipeline(root, "reqs", "import sys, flask\nprint('prefix', sys.prefix)\n")
    # flask is already importable by the executor, so pip resolves it offline through the system site packages.
    (root / folder / "requirements.txt").write_text("flask\n")
    first = server.request("POST", "/execute", pipeline_body(folder, "python pipe1.py"))[1]["task_id"]
    assert wait_final(server, first, timeout=120)["task_status"] == "COMPLETED"
    second = server.request("POST", "/execute", pipeline_body(folder, "python pipe1.py"))[1]["task_id"]
    assert wait_final(server, second, timeout=60)["task_status"] == "COMPLETED"
    logs = [server.request("GET", f"/execute/{job}/getLog")[1]["logs"]["content"] for job in (first, second)]
    assert f"prefix {server.executor.config.data_dir / 'venvs'}" in logs[0]
    assert "using the cached environment" in logs[1]


def test_an_uninstallable_requirement_fails_the_job_with_the_installers_message(live_server):
    server = live_server()
    root = server.executor.config.storage_root
    folder = write_pipeline(root, "badreqs", "print('never runs')\n")
    (root / folder / "requirements.txt").write_text("this is not a requirement line\n")
    job = server.request("POST", "/execute", pipeline_body(folder, "python pipe1.py"))[1]["task_id"]
    final = wait_final(server, job, timeout=120)
    assert final["task_status"] == "ERROR"
    assert final["failure_reason"].startswith("installing requirements.txt failed:")
    assert not list((server.executor.config.data_dir / "venvs").glob("*.tmp-*"))


FAILING_SCRIPT = """
import os, sys
print("epoch=1/3 train_loss=0.5", flush=True)
for number in range(100):
    print(f"warning {number}: noise before the cause", file=sys.stderr, flush=True)
print("", file=sys.stderr, flush=True)
print("using key", os.environ["STORAGE_KEY"], file=sys.stderr, flush=True)
print("x" * 490 + os.environ["STORAGE_KEY"], file=sys.stderr, flush=True)  # the line is cut inside the secret
raise ValueError("column 'label' has 3 classes, the model needs 2")
"""


def test_a_failing_script_is_reported_with_its_last_lines_and_no_secret(live_server):
    server = live_server()
    folder = write_pipeline(server.storage_root, "failing", FAILING_SCRIPT)
    _, accepted = server.request("POST", "/execute", pipeline_body(
        folder, "python pipe1.py", environment={"STORAGE_KEY": "k3y-Value-Never-Shown"}))
    final = wait_final(server, accepted["task_id"])
    reason = final["failure_reason"]
    assert final["task_status"] == "ERROR"
    assert reason.startswith("the script failed with exit code 1; its last lines:\n")
    assert reason.endswith("ValueError: column 'label' has 3 classes, the model needs 2")
    assert "Traceback (most recent call last):" in reason
    assert "k3y-Value" not in reason and "Never-Shown" not in reason and "using key" in reason
    assert "warning 99" in reason and "warning 80" not in reason  # a bounded tail, the end kept
    assert "epoch=1/3" not in reason  # metric lines are progress, not the cause
    _, log = server.request("GET", f"/execute/{accepted['task_id']}/getLog")
    assert "warning 0: noise" in log["logs"]["content"]


def test_jobs_running_together_share_the_cores(live_server):
    server = live_server()
    root = server.executor.config.storage_root
    report = "import os\nprint('threads', os.environ['SM_NUM_CPUS'], os.environ['OMP_NUM_THREADS'], flush=True)\n"
    # The job waits for a file in its own folder: the one place both it and the test see, sandbox or not.
    waiting = report + "import time, pathlib\nwhile not pathlib.Path('release').exists(): time.sleep(0.05)\n"
    first = server.request("POST", "/execute", pipeline_body(write_pipeline(root, "holds", waiting), "python pipe1.py"))
    first_id = first[1]["task_id"]

    def log_of(job_id: str) -> str:
        return server.request("GET", f"/execute/{job_id}/getLog")[1]["logs"]["content"]

    wait_for(lambda: "threads" in log_of(first_id))
    second = server.request("POST", "/execute", pipeline_body(write_pipeline(root, "beside", report), "python pipe1.py"))
    second_id = second[1]["task_id"]
    assert wait_final(server, second_id)["task_status"] == "COMPLETED"
    job_folder = Path(server.request("GET", f"/execute/{first_id}/getStatus")[1]["output_dir"])
    (job_folder / "code" / "release").touch()
    assert wait_final(server, first_id)["task_status"] == "COMPLETED"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert f"threads {cores} {cores}" in log_of(first_id)
    share = max(1, cores // 2)
    assert f"threads {share} {share}" in log_of(second_id)


def test_an_epochs_metrics_show_at_once_not_at_the_next_batch(live_server, monkeypatch):
    # The batch interval made longer than the test waits: only the prompt write of a metric line
    # can put the epoch in the job's status in time.
    monkeypatch.setattr(output, "FLUSH_INTERVAL_S", 60)
    server = live_server()
    script = "import time\nprint('epoch=1/2 train_loss=0.5', flush=True)\ntime.sleep(120)\n"
    folder = write_pipeline(server.executor.config.storage_root, "epoch", script)
    _, accepted = server.request("POST", "/execute", pipeline_body(folder, "python pipe1.py"))
    job_id = accepted["task_id"]
    wait_for(lambda: server.request("GET", f"/status/{job_id}")[1]["progress"]["epoch"] == 1, timeout=30)
    assert server.request("GET", f"/status/{job_id}")[1]["metrics"] == {"train_loss": 0.5}
    assert server.request("GET", f"/execute/{job_id}/stop")[1] == {"Task cancelled": True}
    assert wait_final(server, job_id, timeout=30)["task_status"] == "CANCELLED"
