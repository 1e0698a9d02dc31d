"""Ctrl+C loses nothing that can be kept: the service says what it will do to each running job, a second Ctrl+C
stops them at once, and after a restart the bundled script resumes from its checkpoint and completes.
Real service processes, real digits, real SIGINT."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, pipeline_body, wait_final, wait_for, write_pipeline
from helpers_service import METRIC_SCRIPT

# Enough epochs that a quiet machine cannot finish them between two status polls (each epoch of 400
# 16-pixel images takes a fraction of a second there), few enough for a busy one to finish the rest.
EPOCHS = 20


def make_digits(folder: Path) -> None:
    subprocess.run([sys.executable, str(ROOT / "training_scripts" / "make_digits_dataset.py"), str(folder),
                    "--limit", "400"], check=True, capture_output=True, timeout=120)


@pytest.mark.skipif(os.name == "nt", reason="Ctrl+C reaches a Windows service as a console event, not SIGINT")
def test_one_ctrl_c_mid_training_stops_in_seconds_then_a_restart_resumes_from_the_checkpoint(service, data_dir):
    make_digits(data_dir / "storage" / "datasets" / "digits")
    first = service(data_dir)
    assert "dashboard http://127.0.0.1:" in "".join(first.lines) and "/execute/jobs, API docs" in "".join(first.lines)
    _, accepted = first.request("POST", "/api/service/v1/pipelines/training", {
        "name": "digits", "dataset": "datasets/digits",
        "hyperparameters": {"epochs": EPOCHS, "image-size": 16, "batch-size": 32}})
    job_id = accepted["job_id"]
    # Ctrl+C once the first epoch's checkpoint is written: during epoch 2 or later.
    interrupted_after = wait_for(lambda: first.request("GET", f"/status/{job_id}")[1]["progress"]["epoch"],
                                 timeout=180)
    assert interrupted_after < EPOCHS, "training ended before the test could interrupt it"

    pressed = time.monotonic()
    first.process.send_signal(signal.SIGINT)  # Ctrl+C, once: the job is in its own session and gets none of it
    assert first.process.wait(timeout=30) == 0
    stopped = time.monotonic()
    output = "".join(first.lines)
    announced = next(line for line in first.lines if f"job {job_id} (digits, epoch" in line)
    assert announced.rstrip().endswith("stopped now (it keeps its last checkpoint) and queued again, to resume "
                                       "from that checkpoint at the next start")
    assert "press Ctrl+C again" not in output  # nothing is left to wait for
    assert stopped - pressed < 10  # not the 30 s warm bound: a job that resumes is stopped at once

    second = service(data_dir)
    final = wait_final(second, job_id, timeout=240)
    completed = time.monotonic()
    assert final["task_status"] == "COMPLETED", final
    _, status = second.request("GET", f"/status/{job_id}")
    assert status["progress"]["epoch"] == EPOCHS and status["attempts"] == 2
    log = second.request("GET", f"/execute/{job_id}/getLog")[1]["logs"]["content"]
    resumed = [line for line in log.splitlines() if "resuming from" in line]
    assert len(resumed) == 1 and "checkpoint.pt after epoch" in resumed[0]
    assert "stopped by SIGTERM during epoch" in log.split(resumed[0], 1)[0]  # the script's own stop, not a kill
    resumed_after = int(resumed[0].rsplit("after epoch", 1)[1].split()[0])
    assert resumed_after >= interrupted_after  # nothing finished before Ctrl+C is trained again
    # Epochs after the checkpoint ran once more; those before it did not.
    second_run = log.split(resumed[0], 1)[1]
    assert f"epoch={resumed_after}/{EPOCHS} " not in second_run and f"epoch={EPOCHS}/{EPOCHS} " in second_run
    print(f"\nCtrl+C during epoch {interrupted_after + 1} of {EPOCHS} -> stopped in {stopped - pressed:.1f} s -> "
          f"COMPLETED {completed - pressed:.1f} s after Ctrl+C (restart included; resumed after epoch {resumed_after})")


@pytest.mark.skipif(os.name == "nt", reason="Ctrl+C reaches a Windows service as a console event, not SIGINT")
def test_ctrl_c_says_a_pipeline_will_end_in_error_and_how_to_rerun_it(service, data_dir):
    write_pipeline(data_dir / "storage", "slow", METRIC_SCRIPT, name="run.py")
    first = service(data_dir)
    _, accepted = first.request("POST", "/execute", pipeline_body("slow", "python run.py 30 1"))
    job_id = accepted["task_id"]
    wait_for(lambda: first.request("GET", f"/status/{job_id}")[1]["progress"]["epoch"])
    first.process.send_signal(signal.SIGINT)
    announced = wait_for(lambda: next((line for line in first.lines if f"job {job_id} (pipe1, epoch" in line), None))
    assert "then is stopped and ends ERROR" in announced
    assert announced.rstrip().endswith(f"rerun it with: executor-client rerun {job_id[:8]}")
    wait_for(lambda: any("press Ctrl+C again" in line for line in first.lines))
    first.process.send_signal(signal.SIGINT)
    assert first.process.wait(timeout=30) == 0
    status = service(data_dir).request("GET", f"/execute/{job_id}/getStatus")[1]
    assert status["task_status"] == "ERROR" and "to run it again" in status["failure_reason"]
