"""A killed or stopped service loses no job, runs none twice and leaves none stuck."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from conftest import ROOT, http_request, pipeline_body, wait_for, write_pipeline

FINAL = {"COMPLETED", "ERROR", "CANCELLED"}


def statuses(service, ids):
    return {job_id: service.request("GET", f"/execute/{job_id}/getStatus")[1] for job_id in ids}


def test_kill_9_then_restart_fails_the_running_job_and_runs_each_waiting_job_once(service, tmp_path):
    data = tmp_path / "data"
    # Each run appends its own line to a file of its job's folder (all a sandboxed job may write), so a
    # job run twice shows two lines.
    run_file = "import os\nopen(os.path.join(os.environ['SM_OUTPUT_DATA_DIR'], 'runs'), 'a').write('run\\n')\n"
    slow = run_file + "import time\nprint('go', flush=True)\ntime.sleep(300)\n"
    write_pipeline(data / "storage", "slow", slow)
    write_pipeline(data / "storage", "quick", run_file)
    first = service(data, args=["--workers", "1"])
    slow_id = first.request("POST", "/execute", pipeline_body("slow", "python pipe1.py"))[1]["task_id"]

    def runs(job_id: str) -> Path:
        return data / "jobs" / job_id / "output" / "data" / "runs"

    wait_for(lambda: runs(slow_id).exists(), timeout=30)
    waiting = [first.request("POST", "/execute", pipeline_body("quick", f"python pipe1.py q{n}"))[1]["task_id"]
               for n in range(5)]
    assert all(body["task_status"] == "WAITING" for body in statuses(first, waiting).values())
    child_pid = int(first.request("GET", f"/execute/{slow_id}/getStatus")[1]["pid"])
    first.kill()

    second = service(data, args=["--workers", "2"])
    wait_for(lambda: all(body["task_status"] in FINAL for body in statuses(second, waiting + [slow_id]).values()),
             timeout=60)
    final = statuses(second, waiting + [slow_id])
    assert final[slow_id]["task_status"] == "ERROR"
    assert final[slow_id]["failure_reason"].startswith("executor restarted while the job was running; to run it again")
    assert all(final[job]["task_status"] == "COMPLETED" for job in waiting)
    assert [runs(job).read_text() for job in waiting] == ["run\n"] * 5
    assert runs(slow_id).read_text() == "run\n"
    # the orphaned job process was killed at recovery, not left running
    wait_for(lambda: not Path(f"/proc/{child_pid}").exists()
             or Path(f"/proc/{child_pid}/stat").read_text().split(") ")[1].startswith("Z"), timeout=10)


def test_a_job_that_asked_to_be_retried_runs_again_after_a_restart(service, tmp_path):
    data = tmp_path / "data"
    # The count lives with the checkpoints: what a retried job keeps of its last attempt.
    script = ("import os, time\npath = os.path.join(os.environ['SM_CHECKPOINT_DIR'], 'count')\n"
              "n = len(open(path).read()) if os.path.exists(path) else 0\nopen(path, 'a').write('x')\n"
              "print('attempt', n + 1, flush=True)\ntime.sleep(300 if n == 0 else 0)\n")
    write_pipeline(data / "storage", "retry", script)
    first = service(data)
    body = pipeline_body("retry", "python pipe1.py", configs={"retry_on_restart": True})
    job_id = first.request("POST", "/execute", body)[1]["task_id"]
    count = data / "jobs" / job_id / "checkpoints" / "count"
    wait_for(lambda: count.exists(), timeout=30)
    first.kill()
    second = service(data)
    final = wait_for(lambda: (b := second.request("GET", f"/execute/{job_id}/getStatus")[1])["task_status"] in FINAL
                     and b, timeout=60)
    assert final["task_status"] == "COMPLETED"
    assert count.read_text() == "xx"


def test_sigterm_stops_gracefully_within_the_bound_and_ends_running_jobs(service, tmp_path):
    data = tmp_path / "data"
    write_pipeline(data / "storage", "long", "import time\nprint('go', flush=True)\ntime.sleep(300)\n")
    proc = service(data, args=["--shutdown-timeout", "2"])
    job_id = proc.request("POST", "/execute", pipeline_body("long", "python pipe1.py"))[1]["task_id"]
    wait_for(lambda: proc.request("GET", f"/execute/{job_id}/getStatus")[1]["task_status"] == "RUNNING")
    time.sleep(0.5)
    started = time.monotonic()
    assert proc.terminate(timeout=60) == 0
    assert time.monotonic() - started < 2 + 15
    conn = sqlite3.connect(data / "executor.sqlite3")
    status, reason = conn.execute("SELECT status, failure_reason FROM jobs WHERE id = ?", (job_id,)).fetchone()
    conn.close()
    assert status == "ERROR" and reason.startswith("executor stopped while the job was running; to run it again")


def test_invalid_settings_stop_the_start_naming_the_setting(tmp_path):
    def start(*args, **env):
        return subprocess.run([sys.executable, "app.py", "--data-dir", str(tmp_path), *args], cwd=ROOT,
                              env={**os.environ, **env}, capture_output=True, text=True, timeout=60)

    result = start("--workers", "0")
    assert result.returncode == 2 and "EXECUTOR_WORKERS" in result.stderr
    result = start(EXECUTOR_BACKEND="azure")
    assert result.returncode == 2 and "EXECUTOR_BACKEND" in result.stderr
    result = start("--host", "0.0.0.0")
    assert result.returncode == 2 and "EXECUTOR_API_TOKEN" in result.stderr
    result = start("--timezone", "Mars/Olympus")
    assert result.returncode == 2 and "EXECUTOR_TIMEZONE" in result.stderr
    help_text = start("--help").stdout
    assert "--max-body-bytes" in help_text and "EXECUTOR_MAX_BODY_BYTES" in help_text


def test_a_relative_data_folder_works_for_jobs_that_run_in_their_own_folder(tmp_path):
    # The README's default is ./data: every path a job receives must still be absolute.
    write_pipeline(tmp_path / "data" / "storage", "rel", "import os\nopen(os.path.join(os.environ['SM_MODEL_DIR'],"
                                                          " 'out.txt'), 'w').write('ok')\n")
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", "0", "--data-dir", "data"],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        line = ""
        while "serving on" not in line:
            line = proc.stderr.readline()
            assert line or proc.poll() is None, "service exited"
        url = "http://" + line.split("http://", 1)[1].split()[0]
        job_id = http_request(url, "POST", "/execute", pipeline_body("rel", "python pipe1.py"))[1]["task_id"]
        final = wait_for(lambda: (b := http_request(url, "GET", f"/execute/{job_id}/getStatus")[1])["task_status"]
                         in FINAL and b)
        assert final["task_status"] == "COMPLETED", final
        assert Path(final["output_dir"]).is_absolute()
        assert (Path(final["output_dir"]) / "model" / "out.txt").read_text() == "ok"
    finally:
        proc.kill()
        proc.wait(timeout=10)
        proc.stderr.close()


def test_a_second_executor_on_the_same_data_folder_or_port_refuses_to_start(service, tmp_path):
    first = service(tmp_path / "data")
    second = subprocess.run([sys.executable, "app.py", "--port", "0", "--data-dir", str(tmp_path / "data")],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert second.returncode == 2 and "another executor is already running" in second.stderr
    port = first.url.rsplit(":", 1)[1]
    third = subprocess.run([sys.executable, "app.py", "--port", port, "--data-dir", str(tmp_path / "other")],
                           cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert third.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in third.stderr
    assert "Traceback" not in third.stderr
