"""One contract, written once, that both platforms keep: local, and SageMaker on moto.

Modelled on huey's StorageTests mixin: the tests live in PlatformContract and each platform
subclass supplies a driver with the few steps only it knows (where a pipeline's script goes, how a
launched job is moved along, what counts as something created on the platform). The queue is driven
by hand, one worker step and one monitor cycle at a time, so every outcome is deterministic.
"""
from __future__ import annotations

import io
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
from mlops.platform import AUTOML
from mlops.recovery import Outcome, decide

API = "/api/service/v1"
METRIC_LINE = "epoch=1/1 train_loss=0.2500 val_loss=0.5000 val_accuracy=0.7500 val_auc=0.8000"
# What the job prints: a script here, the CloudWatch lines of the training job on SageMaker.
LINES = ["contract run", METRIC_LINE]
OUTPUT_SCRIPT = ("import os\nprint('contract run', flush=True)\n"
                 f"print({METRIC_LINE!r}, flush=True)\n"
                 "open(os.path.join(os.environ.get('SM_MODEL_DIR', '.'), 'weights.txt'), 'w').write('w')\n")
SLOW_SCRIPT = "import time\nprint('contract run', flush=True)\ntime.sleep(120)\n"
FAILING_SCRIPT = "import sys\nprint('contract run', flush=True)\nsys.exit(3)\n"
MODEL_IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.5-cpu-py311"


class Driver:
    """The steps of the contract that each platform takes its own way."""

    #: A bucket the platform can put a dataset in.
    bucket: str

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

    def finish(self, failure: str | None = None) -> None:
        """Let the platform bring every running job to its end (a stop asked for is honoured).

        `failure` is why the platform reports the job failed, where it is the platform that says so
        (a script here fails by itself).
        """
        raise NotImplementedError

    def unsupported(self) -> tuple[str, str, dict[str, Any]]:
        """Return a request (method, path, client arguments) for something this platform does not offer."""
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
    bucket = "contract-bucket"

    def work(self) -> None:
        job = self.executor.store.claim_next(["local"])
        assert job is not None, "no job was waiting"
        thread = threading.Thread(target=self.executor.queue.run_job, args=(job,), daemon=True)
        thread.start()
        self.threads.append(thread)
        # Running means a process: wait for its pid, or for an end that came first.
        wait_for(lambda: (current := self.executor.store.get(job.id)).pid or current.status.is_final, timeout=30)

    def finish(self, failure: str | None = None) -> None:
        for thread in self.threads:
            thread.join(timeout=60)
            assert not thread.is_alive()

    def unsupported(self) -> tuple[str, str, dict[str, Any]]:
        # AutoML is SageMaker Autopilot: the local platform runs no AutoML job.
        return "POST", f"{API}/pipelines/training/train", {"json": {
            "RoleArn": ROLE_ARN, "Bucket": BUCKET, "inputs": f"s3://{BUCKET}/churn.csv", "target_attribute_name": "y"}}

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
    bucket = BUCKET
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

    def finish(self, failure: str | None = None) -> None:
        self.stops = []
        sagemaker = self.executor.clients.client("sagemaker")
        with mock.patch.object(sagemaker, "stop_training_job",
                               side_effect=lambda **call: self.stops.append(call["TrainingJobName"]) or {}):
            self.executor.queue.monitor_once()
        for job in self.executor.store.jobs_in_status(JobStatus.RUNNING, backend="sagemaker"):
            stopped = job.external_id in self.stops
            now = int(time.time() * 1000)
            put_log_lines(self.executor.clients, f"{job.external_id}/algo-1-1700000000",
                          [(now + offset, line) for offset, line in enumerate(LINES)])
            status = "Stopped" if stopped else "Failed" if failure else "Completed"
            set_training_state(job.external_id, status, status, **({"failure_reason": failure} if failure else {}))
        self.executor.queue.monitor_once()

    def unsupported(self) -> tuple[str, str, dict[str, Any]]:
        # A SageMaker model lives in S3: it is exported as a presigned URL or an S3 copy, never sent whole.
        self.http.post(f"{API}/models/register", json=self.model_body("contract-export"))
        return "GET", "/api/service/v1/exports/model/contract-export", {}

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
        assert driver.http.get(f"/execute/{job_id}/stop").json == {"Task cancelled": True}
        assert self.status(driver, job_id)["task_status"] == "CANCELLED"
        assert driver.http.post(f"/execute/{job_id}/stop").json == {"Task cancelled": False}
        assert driver.executor.store.claim_next([driver.executor.platform.name]) is None
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
        decision = decide(left, driver.executor.platform, retry_interrupted=False)
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

    # -- each family's refusal: a 4xx naming the field, and nothing made --------------------------

    def nothing_made(self, driver: Driver) -> None:
        assert driver.executor.store.list_jobs(limit=10) == []
        assert driver.created_on_platform() == 0

    def test_a_training_request_naming_no_dataset_is_refused_with_nothing_created(self, driver: Driver):
        answer = driver.http.post(f"{API}/pipelines/training", json={"name": "contract", "dataset": "no-such-folder"})
        assert (answer.status_code, answer.json["field"]) == (422, "dataset"), answer.json
        self.nothing_made(driver)

    def test_an_automl_request_is_refused_with_nothing_created(self, driver: Driver):
        body = {"job_name": "-not-a-name-", "input_data_config": {"s3_uri": f"s3://{BUCKET}/churn.csv"},
                "output_data_config": {"s3_output_path": f"s3://{BUCKET}/out"}, "target_attribute_name": "y"}
        answer = driver.http.post(f"{API}/pipelines/training/automl", json=body)
        # A platform that runs no AutoML job says so (501); one that does names the field it refuses.
        expected = 422 if AUTOML in driver.executor.platform.kinds else 501
        assert answer.status_code == expected, answer.json
        self.nothing_made(driver)

    def test_a_deployment_of_an_unknown_configuration_is_refused_with_nothing_created(self, driver: Driver):
        answer = driver.http.post(f"{API}/endpoints/contract-endpoint/deploy_model",
                                  json={"EndpointConfigName": "no-such-config"})
        assert (answer.status_code, answer.json["field"]) == (422, "EndpointConfigName"), answer.json
        assert driver.http.get(f"{API}/endpoints/contract-endpoint").status_code == 404
        self.nothing_made(driver)

    def test_a_transform_of_an_unknown_model_is_refused_with_nothing_created(self, driver: Driver):
        answer = driver.http.post(f"{API}/pipelines/inference", json={
            "TransformJobName": "contract-transform", "ModelName": "no-such-model",
            "TransformInput": {"DataSource": {"S3DataSource": {"S3Uri": "inputs/"}}},
            "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": 1}})
        assert (answer.status_code, answer.json["field"]) == (422, "ModelName"), answer.json
        assert driver.http.get(f"{API}/pipelines/inference/list").json == []
        self.nothing_made(driver)

    def test_explaining_or_exporting_what_does_not_exist_answers_404_naming_the_id(self, driver: Driver):
        explained = driver.http.post(f"{API}/endpoints/no-such-endpoint/explain", json={"instances": [[0]]})
        exported = driver.http.post(f"{API}/models/no-such-model/export", json={})
        assert [(answer.status_code, answer.json["field"]) for answer in (explained, exported)] == [(404, "id")] * 2
        self.nothing_made(driver)

    def test_what_the_platform_does_not_offer_answers_501_saying_why(self, driver: Driver):
        method, path, arguments = driver.unsupported()
        answer = driver.http.open(path, method=method, **arguments)
        assert answer.status_code == 501 and answer.json["error"], answer.json
        self.nothing_made(driver)

    # -- jobs -------------------------------------------------------------------------------------

    def test_a_failing_job_ends_error_with_the_reason(self, driver: Driver):
        job_id = self.submit(driver, driver.pipeline(FAILING_SCRIPT))
        driver.work()
        driver.finish(failure="AlgorithmError: the script exited with code 3")
        status = self.status(driver, job_id)
        assert status["task_status"] == "ERROR" and "3" in status["failure_reason"], status

    def test_metric_lines_of_the_job_become_its_metrics_and_progress(self, driver: Driver):
        job_id = self.submit(driver, driver.pipeline(OUTPUT_SCRIPT))
        driver.work()
        driver.finish()
        status = driver.http.get(f"/status/{job_id}").json
        assert status["metrics"]["val_accuracy"] == pytest.approx(0.75), status
        assert (status["progress"]["epoch"], status["progress"]["epochs"]) == (1, 1), status

    def test_the_log_location_answered_at_submission_is_the_one_every_status_gives(self, driver: Driver):
        answer = driver.http.post("/execute", json=driver.pipeline(OUTPUT_SCRIPT))
        job_id = answer.json["task_id"]
        assert self.status(driver, job_id)["log_path"] == answer.json["log_path"]
        driver.work()
        driver.finish()
        assert self.status(driver, job_id)["log_path"] == answer.json["log_path"]

    def test_stopping_an_ended_job_answers_false_and_keeps_its_end(self, driver: Driver):
        job_id = self.submit(driver, driver.pipeline(OUTPUT_SCRIPT))
        driver.work()
        driver.finish()
        assert driver.http.post(f"/execute/{job_id}/stop").json == {"Task cancelled": False}
        assert self.status(driver, job_id)["task_status"] == "COMPLETED"

    def test_an_ended_job_is_deleted_with_its_log(self, driver: Driver):
        job_id = self.submit(driver, driver.pipeline(OUTPUT_SCRIPT))
        driver.work()
        driver.finish()
        log = Path(driver.executor.store.get(job_id).log_path)
        assert log.is_file()
        answer = driver.http.delete(f"{API}/projects_pipelines/{job_id}/delete")
        assert answer.json["deleted"] is True, answer.json
        assert driver.http.get(f"/execute/{job_id}/getStatus").status_code == 404
        assert not log.exists()

    # -- recovery ---------------------------------------------------------------------------------

    def test_a_job_waiting_at_a_restart_runs_after_it(self, driver: Driver):
        job_id = self.submit(driver, driver.pipeline(OUTPUT_SCRIPT))
        again = driver.restart()
        assert self.status(again, job_id)["task_status"] == "WAITING"
        again.work()
        again.finish()
        assert self.status(again, job_id)["task_status"] == "COMPLETED"

    def test_a_job_asked_to_stop_before_a_restart_ends_cancelled(self, driver: Driver):
        job_id = self.submit(driver, driver.pipeline(OUTPUT_SCRIPT))
        driver.interrupt()
        assert driver.executor.store.request_cancel(job_id) is JobStatus.RUNNING
        again = driver.restart()
        again.finish()
        assert self.status(again, job_id)["task_status"] == "CANCELLED"

    def test_a_job_another_platform_left_running_fails_naming_this_one(self, driver: Driver):
        store = driver.executor.store
        store.create_job("0b5f5c1e-7d1c-4a0e-9c55-6f1f3b0a2d11", kind="pipeline", backend="elsewhere", request={},
                         secrets=None, log_path=str(driver.executor.config.data_dir / "elsewhere.log"),
                         output_dir=str(driver.executor.config.data_dir / "elsewhere"))
        store.claim_next(["elsewhere"])
        again = driver.restart()
        status = self.status(again, "0b5f5c1e-7d1c-4a0e-9c55-6f1f3b0a2d11")
        assert status["task_status"] == "ERROR"
        assert f"now uses the {driver.executor.platform.name} backend" in status["failure_reason"], status

    # -- records ----------------------------------------------------------------------------------

    def test_the_dataset_routes_upload_list_get_and_delete_a_file(self, driver: Driver):
        answer = driver.http.post(f"{API}/datasets", content_type="multipart/form-data", data={
            "Bucket": driver.bucket, "Key": "contract.csv", "file": (io.BytesIO(b"a,b\n1,2\n"), "contract.csv")})
        assert answer.status_code == 201, answer.json
        name = f"{driver.bucket}/contract.csv"
        assert answer.json["name"] == name
        assert [record["name"] for record in driver.http.get(f"{API}/datasets/list").json] == [name]
        assert driver.http.get(f"{API}/datasets/{name}").json["artifacts"]
        assert driver.http.delete(f"{API}/datasets/{name}").status_code == 200
        assert driver.http.get(f"{API}/datasets/{name}").status_code == 404

    def test_an_endpoint_configuration_is_registered_listed_and_deleted(self, driver: Driver):
        assert driver.http.post(f"{API}/models/register", json=driver.model_body("contract-model")).status_code == 201
        answer = driver.http.post(f"{API}/endpoints/register", json={
            "ModelName": "contract-model", "EndpointConfigName": "contract-config", "InstanceType": "ml.m5.large"})
        assert answer.status_code == 201, answer.json
        assert "contract-config" in [record["name"] for record in driver.http.get(f"{API}/endpoints/list").json]
        assert driver.http.delete(f"{API}/endpoints/contract-config").status_code == 200
        assert driver.http.get(f"{API}/endpoints/contract-config").status_code == 404
        assert driver.http.delete(f"{API}/models/contract-model").status_code == 200


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
