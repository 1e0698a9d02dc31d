"""The seed README's training route runs the bundled script on real digits through the local backend."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import ROOT, wait_final


def make_digits(folder: Path, limit: int) -> None:
    subprocess.run([sys.executable, str(ROOT / "training_scripts" / "make_digits_dataset.py"), str(folder),
                    "--limit", str(limit)], check=True, capture_output=True, timeout=120)


def test_the_bundled_script_trains_on_digits_and_reports_progress_metrics_and_the_model(live_server):
    server = live_server()
    make_digits(server.executor.config.storage_root / "datasets" / "digits", 400)
    status, accepted = server.request("POST", "/api/service/v1/pipelines/training", {
        "name": "digits", "dataset": "datasets/digits",
        "hyperparameters": {"epochs": 3, "image-size": 16, "batch_size": 32}})
    assert status == 202 and accepted["status"] == "WAITING"
    final = wait_final(server, accepted["job_id"], timeout=180)
    assert final["task_status"] == "COMPLETED", final
    _, body = server.request("GET", accepted["status_url"])
    assert body["progress"] == {"epoch": 3, "epochs": 3, "percent": 100.0}
    assert set(body["metrics"]) >= {"train_loss", "val_loss", "val_accuracy", "val_auc"}
    assert body["metrics"]["val_accuracy"] > 0.5
    assert "model/model.pt" in body["artifacts"]["files"]
    # the per-epoch checkpoint went to the job's folder, not to /opt/ml
    assert list((Path(final["output_dir"]) / "checkpoints").iterdir())
    _, artifacts = server.request("GET", f"/execute/{accepted['job_id']}/getOutputArtifacts")
    assert artifacts["metrics"]["content"]["val_accuracy"] == body["metrics"]["val_accuracy"]


def test_a_bad_dataset_fails_with_the_scripts_own_reason(live_server):
    server = live_server()
    dataset = server.executor.config.storage_root / "datasets" / "empty"
    dataset.mkdir(parents=True)
    (dataset / "metadata.csv").write_text("filename,label\n")
    _, accepted = server.request("POST", "/api/service/v1/pipelines/training", {
        "name": "empty", "dataset": "datasets/empty", "hyperparameters": {"epochs": 1}})
    final = wait_final(server, accepted["job_id"], timeout=120)
    assert final["task_status"] == "ERROR"
    assert "(exit code 1)" in final["failure_reason"] and len(final["failure_reason"]) > len("(exit code 1)") + 5
