"""One contract, written once, that both platforms keep: local, and SageMaker on moto.

Modelled on huey's StorageTests mixin: the tests live in PlatformContract and each platform
subclass supplies a driver with the few steps only it knows (where a pipeline's script goes, how a
launched job is moved along, what counts as something created on the platform). The queue is driven
by hand, one worker step and one monitor cycle at a time, so every outcome is deterministic.
"""
from __future__ import annotations

import io
import json
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from aws_fixtures import (ACCOUNT, BUCKET, REGION, ROLE_ARN, aws, aws_setup, clients, make_config,  # noqa: F401
                          put_log_lines, set_training_state)
from conftest import pipeline_body, wait_for, write_pipeline

from app import create_app
from job import AUTOML, ENDPOINT, TRANSFORM, JobStatus
from mlops.aws import ClientFactory
from mlops.aws_statuses import FAILED
from mlops.recovery import Outcome, decide
from mlops.records import ENDPOINT_CONFIG, ENDPOINT_RECORD, MODEL

API = "/api/service/v1"
METRIC_LINE = "epoch=1/1 train_loss=0.2500 val_loss=0.5000 val_accuracy=0.7500 val_auc=0.8000"
# What the job prints: a script here, the CloudWatch lines of the training job on SageMaker.
LINES = ["contract run", METRIC_LINE]
# How Essedum's answers write a time.
ESSEDUM_TIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{6}[+-]\d{2}:\d{2}$")
OUTPUT_SCRIPT = ("import os\nprint('contract run', flush=True)\n"
                 f"print({METRIC_LINE!r}, flush=True)\n"
                 "open(os.path.join(os.environ.get('SM_MODEL_DIR', '.'), 'weights.txt'), 'w').write('w')\n")
SLOW_SCRIPT = "import time\nprint('contract run', flush=True)\ntime.sleep(120)\n"
FAILING_SCRIPT = "import sys\nprint('contract run', flush=True)\nsys.exit(3)\n"
MODEL_IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.5-cpu-py311"
# A training script of the user's own: it writes a model folder, as the container contract asks.
TRAINING_SCRIPT = ("import os\nprint('contract training', flush=True)\n"
                   "open(os.path.join(os.environ['SM_MODEL_DIR'], 'model.pt'), 'w').write('weights')\n")
SCRIPT_FAILURE = "AlgorithmError: ExecuteUserScriptError: the script exited with code 3"
TRANSFORM_FAILURE = "ClientError: no input files"
# Training requests refused whatever the platform: by the route's schema, or by the bundled script's declaration.
TRAINING_REFUSED = [
    ({"dataset": "../etc"}, "dataset"),
    ({"dataset": "missing-folder"}, "dataset"),
    ({"dataset": None}, "dataset"),  # none given
    ({"name": ""}, "name"),
    ({"instance_count": 0}, "instance_count"),
    ({"max_runtime_seconds": -1}, "max_runtime_seconds"),
    ({"entry_point": "../x.py"}, "entry_point"),
    ({"entry_point": "missing.py"}, "entry_point"),  # not a file of the source folder
    ({"metadata_file": "labels.csv"}, "metadata_file"),  # not a file of the dataset
    ({"source_dir": "/usr/lib"}, "source_dir"),
    ({"tags": {"k": 1}}, "tags"),
    ({"hyperparameters": {"epochs": [1]}}, "hyperparameters.epochs"),
    ({"hyperparameters": {"epochs": 0}}, "hyperparameters.epochs"),
    ({"hyperparameters": {"no-such-flag": 1}}, "hyperparameters.no-such-flag"),
    ({"hyperparameters": {"device": "tpu"}}, "hyperparameters.device"),
    ({"hyperparameters": {"amp": "maybe"}}, "hyperparameters.amp"),
]
# Tunings of the bundled script refused whatever the platform, each naming its field.
TUNING_REFUSED = [
    ({"ranges": {"dropout": {"min": 0.1, "max": 0.5}}}, "tuning.ranges.dropout"),
    ({"ranges": {"learning-rate": {"min": 0.1, "max": 0.01}}}, "tuning.ranges.learning-rate.min"),
    ({"ranges": {"learning-rate": {"min": 1e-9, "max": 0.01}}}, "tuning.ranges.learning-rate.min"),
    ({"ranges": {"learning-rate": {"min": 1e-4, "max": 2.0}}}, "tuning.ranges.learning-rate.max"),
    ({"ranges": {"batch-size": {"min": 16, "max": 64, "type": "continuous"}}}, "tuning.ranges.batch-size.type"),
    ({"ranges": {"batch-size": {"values": [16, "x"]}}}, "tuning.ranges.batch-size.values[1]"),
    ({"ranges": {"epochs": {"values": [2, 3]}}, "objective": {"metric": "val_f1"}}, "tuning.objective.metric"),
    ({"ranges": {"epochs": {"values": [2, 3]}}, "max_trials": 2, "max_parallel": 3}, "tuning.max_parallel"),
    ({"ranges": {"learning-rate": {"min": 1e-4, "max": 0.1}}, "strategy": "grid"}, "tuning.ranges.learning-rate"),
    ({"ranges": {"epochs": {"min": 1, "max": 4}}, "strategy": "hyperband"}, "tuning.ranges.epochs"),
    ({"ranges": {"learning-rate": {"min": 0.0, "max": 0.1, "scaling": "log"}}},
     "tuning.ranges.learning-rate.scaling"),
]
# Model, endpoint and inference requests refused whatever the platform: (method, path, body, status, field).
BAD_RECORD_REQUESTS = [
    ("POST", "/models/register", {"ModelName": "m", "Containerz": []}, 400, "Containerz"),
    ("POST", "/models/register", {"ModelName": "m", "TrainingJobId": "0b5f5c1e-7d1c-4a0e-9c55-6f1f3b0a2d11"},
     422, "TrainingJobId"),
    ("POST", "/endpoints/register", {"ModelName": "nope", "EndpointConfigName": "c", "InstanceType": "ml.m5.large"},
     422, "ModelName"),
    ("POST", "/endpoints/e/infer", {"S3Uri": "http://169.254.169.254/latest"}, 400, "S3Uri"),
    ("GET", "/models/not_a_name", None, 400, "id"),
]
# Why SageMaker says an endpoint failed (the local platform says why itself: its model does not load).
PING_FAILURE = "The primary container for production variant AllTraffic did not pass the ping health check"


class Driver:
    """The steps of the contract that each platform takes its own way."""

    #: A bucket the platform can put a dataset in.
    bucket: str
    #: An S3Uri this platform cannot read a batch from.
    foreign_transform_input: str
    #: What a failed endpoint's reason says, given PING_FAILURE as the platform's failure.
    endpoint_failure: str
    #: What a failed endpoint creation removes besides its configuration.
    failed_endpoint_removes: list[str]
    #: Why a job of FAILING_SCRIPT failed, given SCRIPT_FAILURE as the platform's failure.
    script_failure: str
    #: What a failed transform's reason says, given TRANSFORM_FAILURE as the platform's failure.
    transform_failure: str
    #: Artifacts a finished transform of transform_input() reports.
    transform_output: dict[str, Any]

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

    def work(self, job: Any = None) -> None:
        """Let one worker take the oldest waiting job (or run `job`, claimed already); return once it runs or ended."""
        raise NotImplementedError

    def claim(self) -> Any:
        """Claim the oldest waiting job as a worker does, and return it without running it."""
        job = self.executor.store.claim_next([self.executor.platform.name])
        assert job is not None, "no job was waiting"
        return job

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

    def model_body(self, name: str, serves: bool = False) -> dict[str, Any]:
        """Return a model registration this platform accepts; with `serves`, of a model that loads and answers."""
        raise NotImplementedError

    def trained_model(self, job: Any) -> str:
        """Return where the model a finished training job made is (the ModelDataUrl it registers with)."""
        raise NotImplementedError

    def holds(self, kind: str, name: str) -> bool:
        """Say whether the platform itself keeps a MODEL, an ENDPOINT_CONFIG or an ENDPOINT_RECORD of this name."""
        raise NotImplementedError

    def transform_input(self) -> str:
        """Return the S3Uri of a batch input the platform reads: CSV rows the model answers."""
        raise NotImplementedError

    def restart(self) -> Driver:
        """Return a driver on a new app over the same data folder, recovered as at start-up."""
        raise NotImplementedError


class LocalDriver(Driver):
    bucket = "contract-bucket"
    foreign_transform_input = f"s3://{BUCKET}/batch/"
    endpoint_failure = "could not be loaded"
    failed_endpoint_removes: list[str] = []  # nothing serves until the model loads
    transform_output = {"records": 3}  # one answer a row
    script_failure = "the script failed with exit code 3; its last lines:\ncontract run"
    transform_failure = "load failed in the model's code"  # its model.pt is no TorchScript archive


    def work(self, job: Any = None) -> None:
        job = job or self.claim()
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

    def model_body(self, name: str, serves: bool = False) -> dict[str, Any]:
        folder = self.storage_root / "models" / name
        folder.mkdir(parents=True)
        if serves:
            # A TorchScript model with no inference.py: rows of 64 numbers to two scores.
            import torch

            torch.manual_seed(0)
            torch.jit.script(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))).save(
                str(folder / "model.pt"))
        else:
            (folder / "model.pt").write_bytes(b"not a TorchScript archive")
        return {"ModelName": name, "Containers": [{"ModelDataUrl": f"models/{name}"}]}

    def trained_model(self, job: Any) -> str:
        return str(Path(job.output_dir) / "model")

    def holds(self, kind: str, name: str) -> bool:
        # The local platform is its own host: a model is its folder, the rest are its records.
        if kind == MODEL:
            return (self.executor.config.data_dir / "models" / name).exists()
        record = self.executor.platform.find(kind, name)
        return record is not None and record.status != FAILED

    def transform_input(self) -> str:
        (self.storage_root / "rows.csv").write_text("\n".join(",".join(["8"] * 64) for _ in range(3)) + "\n")
        return "rows.csv"

    def restart(self) -> Driver:
        again = create_app({"data_dir": str(self.executor.config.data_dir), "workers": "1"})
        again.config["EXECUTOR"].queue.recover()
        return LocalDriver(again)


class SageMakerDriver(Driver):
    bucket = BUCKET
    foreign_transform_input = "batch"  # a folder of the storage root
    endpoint_failure = PING_FAILURE
    failed_endpoint_removes = ["endpoint contract-endpoint"]  # SageMaker made the endpoint before it failed
    transform_failure = TRANSFORM_FAILURE
    script_failure = SCRIPT_FAILURE  # SageMaker's own reason, as it said it
    transform_output = {"S3OutputPath": f"s3://{BUCKET}/essedum-executor/transform/contract-batch"}

    def __init__(self, app: Any):
        super().__init__(app)
        # moto has neither StopTrainingJob nor UpdateEndpoint: the driver takes the calls and moves the
        # job or endpoint along as AWS would (API_StopTrainingJob.html, API_UpdateEndpoint.html of
        # https://docs.aws.amazon.com/sagemaker/latest/APIReference/).
        #: The training jobs a stop was asked for, and the configuration each endpoint is being updated to.
        self.stops: list[str] = []
        self.updates: dict[str, str] = {}
        sagemaker = self.executor.clients.client("sagemaker")
        sagemaker.stop_training_job = self.stop_training_job
        sagemaker.update_endpoint = self.update_endpoint

    def work(self, job: Any = None) -> None:
        job = job or self.claim()
        self.executor.queue.run_job(job)
        launched = self.executor.store.get(job.id)
        if launched.external_id:
            # moto ends what it creates at once; AWS takes minutes, which the contract needs.
            self.move(launched, "InProgress")

    def stop_training_job(self, TrainingJobName: str) -> dict[str, Any]:  # noqa: N803
        """Take a stop as SageMaker does: the job stops (Stopped) when finish() lets it end."""
        self.stops.append(TrainingJobName)
        return {}

    def update_endpoint(self, EndpointName: str, EndpointConfigName: str) -> dict[str, str]:  # noqa: N803
        """Start an endpoint's update as SageMaker does: Updating, on its old configuration until it ends."""
        endpoint = moto_sagemaker().endpoints[EndpointName]
        endpoint.endpoint_status = "Updating"
        self.updates[EndpointName] = EndpointConfigName
        return {"EndpointArn": endpoint.arn}

    def move(self, job: Any, status: str, failure: str | None = None) -> None:
        """Move what SageMaker runs for a job to a training job's status (InProgress, Completed, ...), as AWS would."""
        if job.kind == ENDPOINT:
            endpoint = moto_sagemaker().endpoints[job.external_id]
            if status == "InProgress":
                if job.external_id not in self.updates:  # an update is Updating already
                    endpoint.endpoint_status = "Creating"
                return
            endpoint.endpoint_status = "InService" if status == "Completed" else status
            endpoint.failure_reason = failure
            if status == "Completed" and job.external_id in self.updates:
                endpoint.endpoint_config_name = self.updates.pop(job.external_id)
        elif job.kind == TRANSFORM:
            transform = moto_sagemaker().transform_jobs[job.external_id]
            transform.transform_job_status, transform.failure_reason = status, failure
        else:
            set_training_state(job.external_id, status, "Training" if status == "InProgress" else status,
                               **({"failure_reason": failure} if failure else {}))

    def finish(self, failure: str | None = None) -> None:
        self.executor.queue.monitor_once()  # asks for the stops the users asked for
        for job in self.executor.store.jobs_in_status(JobStatus.RUNNING, backend="sagemaker"):
            if job.kind not in (ENDPOINT, TRANSFORM):
                now = int(time.time() * 1000)
                put_log_lines(self.executor.clients, f"{job.external_id}/algo-1-1700000000",
                              [(now + offset, line) for offset, line in enumerate(LINES)])
            stopped = job.external_id in self.stops
            self.move(job, "Stopped" if stopped else "Failed" if failure else "Completed", failure)
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

    def model_body(self, name: str, serves: bool = False) -> dict[str, Any]:
        # SageMaker loads the model on its instances; whether it serves is what finish() reports.
        return {"ModelName": name, "ExecutionRoleArn": ROLE_ARN,
                "PrimaryContainer": {"Image": MODEL_IMAGE, "ModelDataUrl": f"s3://{BUCKET}/models/{name}.tar.gz"}}

    def trained_model(self, job: Any) -> str:
        return job.artifacts["model"]

    def holds(self, kind: str, name: str) -> bool:
        sagemaker = self.executor.clients.client("sagemaker")
        listed = {MODEL: lambda: [item["ModelName"] for item in sagemaker.list_models()["Models"]],
                  ENDPOINT_CONFIG: lambda: [item["EndpointConfigName"]
                                            for item in sagemaker.list_endpoint_configs()["EndpointConfigs"]],
                  ENDPOINT_RECORD: lambda: [item["EndpointName"] for item in sagemaker.list_endpoints()["Endpoints"]]}
        return name in listed[kind]()

    def transform_input(self) -> str:
        self.executor.clients.client("s3").put_object(Bucket=BUCKET, Key="batch/rows.csv", Body=b"8,8\n8,8\n8,8\n")
        return f"s3://{BUCKET}/batch/"

    def restart(self) -> Driver:
        again = create_app(self.executor.config, clients=self.executor.clients)
        again.config["EXECUTOR"].queue.recover()
        return SageMakerDriver(again)


def moto_sagemaker() -> Any:
    """Return moto's SageMaker backend, whose records the SageMaker driver moves along."""
    from moto.sagemaker.models import sagemaker_backends

    return sagemaker_backends[ACCOUNT][REGION]


class PlatformContract:
    """What every platform does the same way; a subclass supplies the `driver` fixture."""

    def status(self, driver: Driver, job_id: str) -> dict[str, Any]:
        return driver.http.get(f"/execute/{job_id}/getStatus").json

    def submit(self, driver: Driver, body: dict[str, Any]) -> str:
        answer = driver.http.post("/execute", json=body)
        assert answer.status_code == 201, answer.json
        return answer.json["task_id"]

    def nothing_made(self, driver: Driver) -> None:
        """Assert that no job was stored and nothing was made on the platform."""
        assert driver.executor.store.list_jobs(limit=10) == []
        assert driver.created_on_platform() == 0

    def training(self, driver: Driver, script: str = TRAINING_SCRIPT) -> str:
        """Queue a training job of the user's own script through the training route; return its id."""
        write_pipeline(driver.storage_root, "contract-data", "a,b\n1,2\n", name="rows.csv")
        write_pipeline(driver.storage_root, "contract-code", script, name="train.py")
        answer = driver.http.post(f"{API}/pipelines/training", json={
            "name": "contract", "dataset": "contract-data", "source_dir": "contract-code", "entry_point": "train.py"})
        assert answer.status_code == 202, answer.json
        return answer.json["job_id"]

    def deploy(self, driver: Driver, config: str) -> Any:
        """Register a configuration of contract-model and deploy it to contract-endpoint; return the deploy's answer."""
        registered = driver.http.post(f"{API}/endpoints/register", json={
            "ModelName": "contract-model", "EndpointConfigName": config, "InstanceType": "ml.m5.large"})
        assert registered.status_code == 201, registered.json
        return driver.http.post(f"{API}/endpoints/contract-endpoint/deploy_model",
                                json={"EndpointConfigName": config, "EndpointName": "contract-endpoint"})

    def deployed(self, driver: Driver, serves: bool = True) -> str:
        """Register a model and a configuration, deploy them to contract-endpoint, let it end; return the job id."""
        self.register(driver, serves)
        answer = self.deploy(driver, "contract-config")
        assert answer.status_code == 202 and answer.json["status"] == "Creating", answer.json
        assert driver.http.get(f"{API}/endpoints/contract-endpoint").json["status"] == "Creating"
        driver.work()
        driver.finish(failure=None if serves else PING_FAILURE)
        return answer.json["jobId"]

    def register(self, driver: Driver, serves: bool = False) -> None:
        """Register contract-model through the route (one that loads and answers, with `serves`)."""
        answer = driver.http.post(f"{API}/models/register", json=driver.model_body("contract-model", serves))
        assert answer.status_code == 201, answer.json

    def transform(self, driver: Driver, name: str = "contract-batch", uri: str | None = None) -> Any:
        """Ask for a batch transform of contract-model through the route; return the answer."""
        return driver.http.post(f"{API}/pipelines/inference", json={
            "TransformJobName": name, "ModelName": "contract-model",
            "TransformInput": {"DataSource": {"S3DataSource": {"S3Uri": uri or driver.transform_input()}},
                               "ContentType": "text/csv"},
            "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": 1}})

    def test_a_bad_request_is_refused_with_nothing_created(self, driver: Driver):
        body = {**driver.pipeline(OUTPUT_SCRIPT), "command": "python missing.py"}
        answer = driver.http.post("/execute", json=body)
        assert (answer.status_code, answer.json["field"]) == (422, "command"), answer.json
        assert driver.http.get("/execute").json == []
        assert driver.created_on_platform() == 0

    def test_a_job_runs_to_its_end_with_its_times_log_and_artifacts(self, driver: Driver):
        answer = driver.http.post("/execute", json=driver.pipeline(OUTPUT_SCRIPT))
        assert answer.status_code == 201 and answer.json["task_status"] == "Submitted", answer.json
        job_id = answer.json["task_id"]
        driver.work()
        driver.finish()
        final = self.status(driver, job_id)
        assert final["task_status"] == "COMPLETED", final
        for key in ("submitted", "started", "finished"):
            assert ESSEDUM_TIME.match(final[key]), final[key]
        assert isinstance(final["timestamp"], float) and final["timestamp"] >= 0
        listed = driver.http.get("/execute").json
        assert [(job["id"], job["status"]) for job in listed] == [(job_id, "COMPLETED")]
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
        running = self.status(driver, job_id)
        assert running["task_status"] == "RUNNING" and ESSEDUM_TIME.match(running["started"]), running
        assert running["finished"] is None
        assert driver.http.post(f"/execute/{job_id}/stop").json == {"Task cancelled": True}
        driver.finish()
        ended = self.status(driver, job_id)
        assert ended["task_status"] == "CANCELLED" and ESSEDUM_TIME.match(ended["finished"]), ended

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

    def test_a_training_request_naming_no_dataset_is_refused_with_nothing_created(self, driver: Driver):
        answer = driver.http.post(f"{API}/pipelines/training", json={"name": "contract", "dataset": "no-such-folder"})
        assert (answer.status_code, answer.json["field"]) == (422, "dataset"), answer.json
        self.nothing_made(driver)

    def test_a_training_request_the_script_or_the_route_cannot_take_is_refused_naming_the_field(self, driver: Driver):
        write_pipeline(driver.storage_root, "digits", "a,b\n1,2\n", name="rows.csv")
        for changes, field in TRAINING_REFUSED:
            body = {key: value for key, value in {"name": "x", "dataset": "digits", **changes}.items()
                    if value is not None}
            answer = driver.http.post(f"{API}/pipelines/training", json=body)
            assert 400 <= answer.status_code < 500 and answer.json["field"] == field, (changes, answer.json)
        self.nothing_made(driver)

    def test_a_tuning_the_script_cannot_run_is_refused_naming_the_field_with_nothing_created(self, driver: Driver):
        write_pipeline(driver.storage_root, "digits", "a,b\n1,2\n", name="rows.csv")
        for tuning, field in TUNING_REFUSED:
            answer = driver.http.post(f"{API}/pipelines/tuning", json={
                "name": "t", "dataset": "digits", "tuning": {"objective": {"metric": "val_auc", "goal": "maximize"},
                                                             **tuning}})
            assert (answer.status_code, answer.json.get("field")) == (422, field), (tuning, answer.json)
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
        driver.finish(failure=SCRIPT_FAILURE)
        status = self.status(driver, job_id)
        assert (status["task_status"], status["failure_reason"]) == ("ERROR", driver.script_failure), status

    def test_metric_lines_of_the_job_become_its_metrics_and_progress(self, driver: Driver):
        job_id = self.submit(driver, driver.pipeline(OUTPUT_SCRIPT))
        driver.work()
        driver.finish()
        status = driver.http.get(f"/status/{job_id}").json
        metrics = {name: status["metrics"].get(name) for name in ("train_loss", "val_loss", "val_accuracy", "val_auc")}
        assert metrics == {"train_loss": pytest.approx(0.25), "val_loss": pytest.approx(0.5),
                           "val_accuracy": pytest.approx(0.75), "val_auc": pytest.approx(0.8)}, status
        assert status["progress"] == {"epoch": 1, "epochs": 1, "percent": 100.0}, status

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

    def test_a_waiting_job_answers_queued_with_no_times_or_progress(self, driver: Driver):
        job_id = self.submit(driver, driver.pipeline(OUTPUT_SCRIPT))
        body = self.status(driver, job_id)
        assert body["task_status"] == "WAITING"
        assert [body[key] for key in ("started", "finished", "timestamp", "pid")] == [None] * 4, body
        status = driver.http.get(f"/status/{job_id}").json
        assert status["status"] == "WAITING" and status["phase"] == "Queued"
        assert status["progress"] == {"epoch": None, "epochs": None, "percent": None}
        assert ESSEDUM_TIME.match(status["submitted"]), status["submitted"]

    def test_a_job_stopped_between_its_claim_and_its_launch_ends_cancelled(self, driver: Driver):
        job_id = self.submit(driver, driver.pipeline(OUTPUT_SCRIPT))
        claimed = driver.claim()
        assert driver.http.post(f"/execute/{job_id}/stop").json == {"Task cancelled": True}
        driver.work(claimed)
        driver.finish()
        assert self.status(driver, job_id)["task_status"] == "CANCELLED", self.status(driver, job_id)

    def test_a_rerun_queues_the_same_request_as_a_new_job_that_runs_to_its_end(self, driver: Driver):
        first = self.submit(driver, driver.pipeline(OUTPUT_SCRIPT))
        driver.work()
        driver.finish()
        answer = driver.http.post(f"/api/jobs/{first[:8]}/rerun")
        assert answer.status_code == 202, answer.json
        body = answer.json
        assert body["rerun_of"] == first and body["job_id"] != first and body["status"] == "WAITING"
        driver.work()
        driver.finish()
        rerun = driver.http.get(f"/status/{body['job_id']}").json
        assert rerun["status"] == "COMPLETED" and rerun["details"]["rerun_of"] == first and rerun["name"] == "pipe1"
        assert "s3cr3t" not in str(body) + str(rerun)

    def test_the_jobs_list_filters_by_name_and_day_and_carries_latest_metrics(self, driver: Driver):
        first = self.submit(driver, {**driver.pipeline(OUTPUT_SCRIPT), "name": "Digits-small"})
        self.submit(driver, {**driver.pipeline(OUTPUT_SCRIPT), "name": "other"})
        driver.work()
        driver.work()
        driver.finish()
        jobs = driver.http.get("/api/jobs?name=digits").json["jobs"]
        assert [job["id"] for job in jobs] == [first]
        assert jobs[0]["metrics"]["val_accuracy"] == pytest.approx(0.75), jobs
        assert driver.http.get("/api/jobs?from=2000-01-01&to=2000-01-02").json["jobs"] == []
        assert len(driver.http.get("/api/jobs?from=2000-01-01").json["jobs"]) == 2
        assert len(driver.http.get("/api/jobs?from=1").json["jobs"]) == 2  # within the last day
        assert driver.http.get("/api/jobs?to=1").json["jobs"] == []  # submitted a day ago or earlier
        assert driver.http.get("/api/jobs?from=yesterday").status_code == 400
        refused = driver.http.get("/api/jobs?from=-1")
        assert refused.status_code == 400 and refused.json["field"] == "from" and "days" in refused.json["error"]

    def test_a_running_training_job_stopped_through_its_route_answers_stopping_then_ends_cancelled(
            self, driver: Driver):
        job_id = self.training(driver, SLOW_SCRIPT)
        driver.work()
        answer = driver.http.get(f"{API}/pipelines/training/{job_id}/cancel").json
        name = driver.executor.store.get(job_id).external_id or "contract"
        assert answer == {"message": "the job is being stopped", "job_name": name, "job_id": job_id,
                          "status": "Stopping"}
        driver.finish()
        assert self.status(driver, job_id)["task_status"] == "CANCELLED"
        assert driver.http.get(f"{API}/pipelines/training/{job_id}/get").json["jobStatus"] == "Stopped"

    def test_unknown_and_malformed_training_ids_are_named(self, driver: Driver):
        for job_id, status in (("no-such-job", 404), ("bad_id!", 400), ("00000000-0000-0000-0000-000000000000", 404)):
            assert driver.http.get(f"{API}/pipelines/training/{job_id}/get").status_code == status
            assert driver.http.get(f"{API}/pipelines/training/{job_id}/cancel").status_code == status

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

    def test_a_dataset_key_that_leaves_its_bucket_is_refused_and_a_file_name_is_made_safe(self, driver: Driver):
        for key in ("../escape.csv", "a/../../b.csv", "/etc/passwd", "a\\b.csv"):
            answer = driver.http.post(f"{API}/datasets", content_type="multipart/form-data", data={
                "Bucket": driver.bucket, "Key": key, "file": (io.BytesIO(b"x"), "x.csv")})
            assert (answer.status_code, answer.json["field"]) == (400, "Key"), (key, answer.json)
        assert driver.http.get(f"{API}/datasets/list").json == []
        answer = driver.http.post(f"{API}/datasets", content_type="multipart/form-data", data={
            "Bucket": driver.bucket, "Key": "folder/", "file": (io.BytesIO(b"x"), "../../My Data.csv")})
        assert answer.status_code == 201 and answer.json["name"] == f"{driver.bucket}/folder/My_Data.csv", answer.json

    def test_an_endpoint_configuration_is_registered_listed_and_deleted(self, driver: Driver):
        self.register(driver)
        answer = driver.http.post(f"{API}/endpoints/register", json={
            "ModelName": "contract-model", "EndpointConfigName": "contract-config", "InstanceType": "ml.m5.large"})
        assert answer.status_code == 201, answer.json
        assert "contract-config" in [record["name"] for record in driver.http.get(f"{API}/endpoints/list").json]
        assert driver.http.delete(f"{API}/endpoints/contract-config").status_code == 200
        assert driver.http.get(f"{API}/endpoints/contract-config").status_code == 404
        assert driver.http.delete(f"{API}/models/contract-model").status_code == 200

    def test_a_model_record_has_the_essedum_shape_with_a_json_raw_payload(self, driver: Driver):
        body = {**driver.model_body("contract-model"), "Description": "<b>two & classes</b>"}
        answer = driver.http.post(f"{API}/models/register?adapter_instance=aws1&project=Demo", json=body)
        assert answer.status_code == 201, answer.json
        record = answer.json
        assert set(record) >= {"sourceID", "container", "adapter", "rawPayload", "syncDate", "description", "project",
                               "type", "createdOn", "sourceOrg", "name", "id", "sourcename", "status", "artifacts",
                               "deployment"}
        assert (record["adapter"], record["project"], record["type"], record["status"]) == (
            "aws1", "Demo", "model", "Created")
        assert record["description"] == "<b>two & classes</b>"
        assert json.loads(record["rawPayload"])["ModelName"] == "contract-model"
        assert record["deployment"] == {"endpoints": []}

    def test_a_bad_record_request_gets_a_4xx_naming_the_field(self, driver: Driver):
        badly_named = {**driver.model_body("contract-model"), "ModelName": "bad_name"}
        for method, path, body, status, field in [*BAD_RECORD_REQUESTS, ("POST", "/models/register", badly_named,
                                                                         422, "ModelName")]:
            answer = driver.http.open(API + path, method=method, json=body)
            assert (answer.status_code, answer.json["field"]) == (status, field), (path, body, answer.json)
        assert driver.http.get(f"{API}/models/list").json == []
        self.nothing_made(driver)

    def test_a_model_is_registered_from_a_finished_training_job_once(self, driver: Driver):
        job_id = self.training(driver)
        driver.work()
        driver.finish()
        assert self.status(driver, job_id)["task_status"] == "COMPLETED"
        body = {"ModelName": "contract-model", "TrainingJobId": job_id[:8], "InstanceType": "ml.m5.large"}
        answer = driver.http.post(f"{API}/models/register", json=body)
        assert answer.status_code == 201, answer.json
        assert answer.json["container"]["ModelDataUrl"] == driver.trained_model(driver.executor.store.get(job_id))
        assert driver.holds(MODEL, "contract-model")
        assert driver.http.post(f"{API}/models/register", json=body).status_code == 409

    def test_a_model_of_a_training_job_that_did_not_complete_is_refused_naming_it(self, driver: Driver):
        job_id = self.training(driver)
        answer = driver.http.get(f"{API}/pipelines/training/{job_id}/cancel").json
        assert (answer["message"], answer["status"]) == ("the job was cancelled before it started", "Stopped")
        refused = driver.http.post(f"{API}/models/register",
                                   json={"ModelName": "contract-model", "TrainingJobId": job_id})
        assert (refused.status_code, refused.json["field"]) == (409, "TrainingJobId"), refused.json
        assert "CANCELLED" in refused.json["error"] and not driver.holds(MODEL, "contract-model")

    # -- endpoints and batch transforms -----------------------------------------------------------

    def test_an_endpoint_is_deployed_updated_and_deleted_and_keeps_what_it_uses_until_then(self, driver: Driver):
        job_id = self.deployed(driver)
        assert self.status(driver, job_id)["task_status"] == "COMPLETED", self.status(driver, job_id)
        record = driver.http.get(f"{API}/endpoints/contract-endpoint").json
        assert record["status"] == "InService" and record["deployment"]["endpointConfig"] == "contract-config", record
        assert record["sourceID"] == "contract-endpoint"

        # Deploying another configuration to it updates it; the one it left can go.
        answer = self.deploy(driver, "contract-config-2")
        assert answer.status_code == 202 and answer.json["status"] == "Updating", answer.json
        assert driver.http.delete(f"{API}/endpoints/contract-endpoint").status_code == 409  # being deployed
        driver.work()
        driver.finish()
        assert self.status(driver, answer.json["jobId"])["task_status"] == "COMPLETED"
        record = driver.http.get(f"{API}/endpoints/contract-endpoint").json
        assert record["status"] == "InService" and record["deployment"]["endpointConfig"] == "contract-config-2", record
        assert driver.http.delete(f"{API}/endpoints/contract-config").status_code == 200

        model = driver.http.delete(f"{API}/models/contract-model")
        assert model.status_code == 409 and model.json["endpoints"] == ["contract-endpoint"], model.json
        assert "contract-endpoint" in model.json["error"] and driver.holds(MODEL, "contract-model")
        config = driver.http.delete(f"{API}/endpoints/contract-config-2")
        assert config.status_code == 409 and "contract-endpoint" in config.json["error"], config.json

        assert driver.holds(ENDPOINT_RECORD, "contract-endpoint")
        assert driver.http.delete(f"{API}/endpoints/contract-endpoint").status_code == 200
        assert driver.http.get(f"{API}/endpoints/contract-endpoint").status_code == 404
        assert not driver.holds(ENDPOINT_RECORD, "contract-endpoint")
        assert driver.http.get(f"{API}/endpoints/contract-config-2/delete").status_code == 200
        assert driver.http.delete(f"{API}/models/contract-model").status_code == 200
        assert not driver.holds(MODEL, "contract-model") and driver.http.get(f"{API}/models/list").json == []

    def test_a_failed_endpoint_creation_removes_what_it_made_and_keeps_the_model(self, driver: Driver):
        job_id = self.deployed(driver, serves=False)
        status = self.status(driver, job_id)
        assert status["task_status"] == "ERROR" and driver.endpoint_failure in status["failure_reason"], status
        record = driver.http.get(f"{API}/endpoints/contract-endpoint").json
        assert record["status"] == "Failed" and driver.endpoint_failure in record["failureReason"], record
        assert record["cleanup"] == {"deleted": [*driver.failed_endpoint_removes,
                                                 "endpoint configuration contract-config"],
                                     "remaining": ["model contract-model"]}
        assert driver.http.get(f"{API}/endpoints/contract-config").status_code == 404
        assert not driver.holds(ENDPOINT_RECORD, "contract-endpoint")
        assert not driver.holds(ENDPOINT_CONFIG, "contract-config")
        assert driver.holds(MODEL, "contract-model")
        refused = driver.http.post(f"{API}/endpoints/contract-endpoint/infer", json={"instances": [[0]]})
        assert (refused.status_code, refused.json.get("endpoint_status")) == (409, "Failed"), refused.json
        # Nothing is left serving the model, so it can go.
        assert driver.http.delete(f"{API}/models/contract-model").status_code == 200

    def test_a_batch_transform_runs_as_a_job_to_its_end_and_is_listed(self, driver: Driver):
        self.register(driver, serves=True)
        answer = self.transform(driver)
        assert answer.status_code == 202 and answer.json["status"] == "InProgress", answer.json
        assert self.transform(driver).status_code == 409  # one transform job of a name
        driver.work()
        driver.finish()
        assert self.status(driver, answer.json["jobId"])["task_status"] == "COMPLETED"
        done = driver.http.get(f"{API}/pipelines/inference/contract-batch/get").json
        assert done["status"] == "Completed", done
        assert done["artifacts"].items() >= driver.transform_output.items(), done["artifacts"]
        assert [item["name"] for item in driver.http.get(f"{API}/pipelines/inference/list").json] == ["contract-batch"]

    def test_a_failed_transform_ends_error_and_its_record_keeps_the_reason(self, driver: Driver):
        self.register(driver)
        job_id = self.transform(driver).json["jobId"]
        driver.work()
        driver.finish(failure=TRANSFORM_FAILURE)
        status = self.status(driver, job_id)
        assert status["task_status"] == "ERROR" and driver.transform_failure in status["failure_reason"], status
        record = driver.http.get(f"{API}/pipelines/inference/contract-batch/get").json
        assert record["status"] == "Failed" and record["failureReason"] == status["failure_reason"], record

    def test_a_transform_of_input_the_platform_cannot_read_is_refused_with_nothing_created(self, driver: Driver):
        self.register(driver)
        answer = self.transform(driver, uri=driver.foreign_transform_input)
        assert (answer.status_code, answer.json["field"]) == (422, "TransformInput.DataSource.S3DataSource.S3Uri")
        assert driver.http.get(f"{API}/pipelines/inference/list").json == []
        self.nothing_made(driver)

    def test_deleting_an_ended_transform_removes_its_job_and_log_and_keeps_its_model(self, driver: Driver):
        self.register(driver, serves=True)
        job_id = self.transform(driver).json["jobId"]
        driver.work()
        driver.finish()
        log = Path(driver.executor.store.get(job_id).log_path)
        assert log.is_file()
        answer = driver.http.delete(f"{API}/pipelines/inference/contract-batch")
        assert answer.status_code == 200 and answer.json["deleted"] is True, answer.json
        assert driver.http.get(f"{API}/pipelines/inference/contract-batch/get").status_code == 404
        assert driver.http.get(f"/execute/{job_id}/getStatus").status_code == 404
        assert not log.exists()
        assert driver.http.get(f"{API}/models/contract-model").status_code == 200


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
