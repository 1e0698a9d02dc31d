"""One contract, written once, that both platforms keep: local, and SageMaker on moto.

Modelled on huey's StorageTests mixin: the tests live in PlatformContract and each platform
subclass supplies a driver with the few steps only it knows (where a pipeline's script goes, how a
launched job is moved along, what counts as something created on the platform). The queue is driven
by hand, one worker step and one monitor cycle at a time, so every outcome is deterministic.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from aws_fixtures import (BUCKET, ROLE_ARN, aws, aws_setup, clients, make_config,  # noqa: F401
                          put_log_lines, set_training_state)
from conftest import pipeline_body, wait_for, write_pipeline

from app import create_app
from job import JobStatus
from mlops.aws import ClientFactory
from mlops.recovery import Outcome, decide

API = "/api/service/v1"
OUTPUT_SCRIPT = ("import os\nprint('contract run', flush=True)\n"
                 "open(os.path.join(os.environ.get('SM_MODEL_DIR', '.'), 'weights.txt'), 'w').write('w')\n")
SLOW_SCRIPT = "import time\nprint('contract run', flush=True)\ntime.sleep(120)\n"
MODEL_IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.5-cpu-py311"


class Driver:
    """The steps of the contract that each platform takes its own way."""

    def __init__(self, app: Any):
        self.app = app
        self.http = app.test_client()
        self.threads: list[threading.Thread] = []

    @property
    def executor(self) -> Any:
        return self.app.config["EXECUTOR"]

    @property
    def storage_root(self) -> Path:
        return self.executor.config.storage_root

    def pipeline(self, script: str) -> dict[str, Any]:
        """Return a POST /execute body whose script is in the storage root."""
        write_pipeline(self.storage_root, "contract", script)
        return pipeline_body("contract", "python pipe1.py")

    def work(self) -> None:
        """Let one worker take the oldest waiting job; return once it runs (or has ended)."""
        raise NotImplementedError

    def finish(self) -> None:
        """Let the platform bring every running job to its end (a stop asked for is honoured)."""
        raise NotImplementedError

    def interrupt(self) -> str:
        """Leave the oldest waiting job RUNNING as a killed executor would; return its id."""
        raise NotImplementedError

    def created_on_platform(self) -> int:
        """Count what the platform has made so far (job folders, or AWS create and upload calls)."""
        raise NotImplementedError

    def model_body(self, name: str) -> dict[str, Any]:
        """Return a model registration this platform accepts."""
        raise NotImplementedError

    def restart(self) -> Driver:
        """Return a driver on a new app over the same data folder, recovered as at start-up."""
        raise NotImplementedError


class LocalDriver(Driver):
    def work(self) -> None:
        job = self.executor.store.claim_next(["local"])
        assert job is not None, "no job was waiting"
        thread = threading.Thread(target=self.executor.queue.run_job, args=(job,), daemon=True)
        thread.start()
        self.threads.append(thread)
        # Running means a process: wait for its pid, or for an end that came first.
        wait_for(lambda: (current := self.executor.store.get(job.id)).pid or current.status.is_final, timeout=30)

    def finish(self) -> None:
        for thread in self.threads:
            thread.join(timeout=60)
            assert not thread.is_alive()

    def interrupt(self) -> str:
        return self.executor.store.claim_next(["local"]).id

    def created_on_platform(self) -> int:
        jobs_dir = self.executor.config.data_dir / "jobs"
        return len(list(jobs_dir.iterdir())) if jobs_dir.exists() else 0

    def model_body(self, name: str) -> dict[str, Any]:
        folder = self.storage_root / "models" / name
        folder.mkdir(parents=True)
        (folder / "model.pt").write_bytes(b"a TorchScript file stands here; registration does not load it")
        return {"ModelName": name, "Containers": [{"ModelDataUrl": f"models/{name}"}]}

    def restart(self) -> Driver:
        again = create_app({"data_dir": str(self.executor.config.data_dir), "workers": "1"})
        again.config["EXECUTOR"].queue.recover()
        return LocalDriver(again)


class SageMakerDriver(Driver):
    # moto has no StopTrainingJob: the call is counted here and the job is moved to Stopped by hand,
    # as AWS would move it (https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_StopTrainingJob.html).
    stops: list[str]

    def work(self) -> None:
        job = self.executor.store.claim_next(["sagemaker"])
        assert job is not None, "no job was waiting"
        self.executor.queue.run_job(job)
        launched = self.executor.store.get(job.id)
        if launched.external_id:
            # moto completes a training job at once; AWS takes minutes, which the contract needs.
            set_training_state(launched.external_id, "InProgress", "Training")

    def finish(self) -> None:
        self.stops = []
        sagemaker = self.executor.clients.client("sagemaker")
        with mock.patch.object(sagemaker, "stop_training_job",
                               side_effect=lambda **call: self.stops.append(call["TrainingJobName"]) or {}):
            self.executor.queue.monitor_once()
        for job in self.executor.store.jobs_in_status(JobStatus.RUNNING, backend="sagemaker"):
            stopped = job.external_id in self.stops
            put_log_lines(self.executor.clients, f"{job.external_id}/algo-1-1700000000",
                          [(int(time.time() * 1000), "contract run")])
            set_training_state(job.external_id, "Stopped" if stopped else "Completed",
                               "Stopped" if stopped else "Completed")
        self.executor.queue.monitor_once()

    def interrupt(self) -> str:
        job = self.executor.store.claim_next(["sagemaker"])
        self.executor.queue.run_job(job)  # launched: a kill after CreateTrainingJob
        set_training_state(self.executor.store.get(job.id).external_id, "InProgress", "Training")
        return job.id

    def created_on_platform(self) -> int:
        counter = self.executor.clients.counter
        return counter.total("sagemaker", "CreateTrainingJob") + counter.total("s3", "PutObject")

    def model_body(self, name: str) -> dict[str, Any]:
        return {"ModelName": name, "ExecutionRoleArn": ROLE_ARN,
                "PrimaryContainer": {"Image": MODEL_IMAGE, "ModelDataUrl": f"s3://{BUCKET}/models/{name}.tar.gz"}}

    def restart(self) -> Driver:
        again = create_app(self.executor.config, clients=self.executor.clients)
        again.config["EXECUTOR"].queue.recover()
        return SageMakerDriver(again)


class PlatformContract:
    """What every platform does the same way; a subclass supplies the `driver` fixture."""

    def status(self, driver: Driver, job_id: str) -> dict[str, Any]:
        return driver.http.get(f"/execute/{job_id}/getStatus").json

    def submit(self, driver: Driver, body: dict[str, Any]) -> str:
        answer = driver.http.post("/execute", json=body)
        assert answer.status_code == 201, answer.json
        return answer.json["task_id"]

    def test_a_bad_request_is_refused_with_nothing_created(self, driver: Driver):
        body = {**driver.pipeline(OUTPUT_SCRIPT), "command": "python missing.py"}
        answer = driver.http.post("/execute", json=body)
        assert (answer.status_code, answer.json["field"]) == (422, "command"), answer.json
        assert driver.http.get("/execute").json == []
        assert driver.created_on_platform() == 0

    def test_a_job_runs_to_its_end_with_its_log_and_artifacts(self, driver: Driver):
        job_id = self.submit(driver, driver.pipeline(OUTPUT_SCRIPT))
        driver.work()
        driver.finish()
        assert self.status(driver, job_id)["task_status"] == "COMPLETED", self.status(driver, job_id)
        assert "contract run" in driver.http.get(f"/execute/{job_id}/getLog").json["logs"]["content"]
        artifacts = driver.http.get(f"/execute/{job_id}/getOutputArtifacts").json
        assert artifacts and all("content" in entry for entry in artifacts.values()), artifacts

    def test_cancel_while_waiting_ends_it_with_nothing_created(self, driver: Driver):
        job_id = self.submit(driver, driver.pipeline(OUTPUT_SCRIPT))
        assert driver.http.post(f"/execute/{job_id}/stop").json == {"Task cancelled": True}
        assert self.status(driver, job_id)["task_status"] == "CANCELLED"
        assert driver.executor.store.claim_next([driver.executor.backend.name]) is None
        assert driver.created_on_platform() == 0

    def test_cancel_while_running_stops_it_and_ends_it_cancelled(self, driver: Driver):
        job_id = self.submit(driver, driver.pipeline(SLOW_SCRIPT))
        driver.work()
        assert self.status(driver, job_id)["task_status"] == "RUNNING"
        assert driver.http.post(f"/execute/{job_id}/stop").json == {"Task cancelled": True}
        driver.finish()
        assert self.status(driver, job_id)["task_status"] == "CANCELLED", self.status(driver, job_id)

    def test_a_job_left_running_by_a_restart_becomes_what_the_recovery_rule_says(self, driver: Driver):
        job_id = self.submit(driver, driver.pipeline(OUTPUT_SCRIPT))
        driver.interrupt()
        left = driver.executor.store.get(job_id)
        decision = decide(left, driver.executor.backend, retry_interrupted=False)
        again = driver.restart()
        after = self.status(again, job_id)
        if decision.outcome is Outcome.MONITOR:
            assert after["task_status"] == "RUNNING"
            again.finish()
            assert self.status(again, job_id)["task_status"] == "COMPLETED"
        else:
            assert decision.outcome is Outcome.FAIL, decision
            assert (after["task_status"], after["failure_reason"]) == ("ERROR", decision.reason)

    def test_the_record_routes_register_list_get_and_delete_a_model(self, driver: Driver):
        body = driver.model_body("contract-model")
        created = driver.http.post(f"{API}/models/register", json=body)
        assert created.status_code == 201, created.json
        assert created.json["name"] == "contract-model"
        assert driver.http.post(f"{API}/models/register", json=body).status_code == 409
        assert [record["name"] for record in driver.http.get(f"{API}/models/list").json] == ["contract-model"]
        assert driver.http.get(f"{API}/models/contract-model").json["id"] == "contract-model"
        assert driver.http.delete(f"{API}/models/contract-model").status_code == 200
        missing = driver.http.get(f"{API}/models/contract-model")
        assert (missing.status_code, missing.json["field"]) == (404, "id")


class TestLocalPlatform(PlatformContract):
    @pytest.fixture
    def driver(self, tmp_path: Path):
        app = create_app({"data_dir": str(tmp_path / "data"), "workers": "1", "shutdown_timeout": "5"})
        driver = LocalDriver(app)
        yield driver
        driver.executor.queue.stop(timeout=5)


class TestSageMakerPlatform(PlatformContract):
    @pytest.fixture
    def driver(self, tmp_path: Path, clients: ClientFactory, aws_setup):  # noqa: F811
        app = create_app(make_config(tmp_path), clients=clients)
        yield SageMakerDriver(app)
        app.config["EXECUTOR"].store.close()
