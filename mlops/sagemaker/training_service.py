"""The seeds' SageMaker training API, on the AWS adapter: the job configuration, the service, the container builder.

Importable as the seeds name it: SageMakerJobConfig, SageMakerTrainingService,
SageMakerContainerBuilder and their errors (SageMakerError, SageMakerConfigurationError,
SageMakerJobError, DockerContainerError). The SageMaker platform (mlops/sagemaker/jobs.py) launches,
describes and stops training jobs through the service. The seeds' job methods (submit, status,
cancel, list) go through the executor's queue and store like the training routes: a submitted job is
checked by the platform, named from its job id, followed by the monitor and recovered at start-up;
the service never writes the store itself.

Every status, metric and artifact this module reports comes from AWS; nothing is simulated. A
failure is raised with AWS's own reason.
"""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from config import Config
from db import Store
from job import PIPELINE, TRAINING, Job
from mlops.aws import AWS_ERRORS, ClientFactory, is_missing_credentials, is_not_found
from mlops.aws_statuses import STOPPING, TRAINING_STATES
from mlops.errors import (DockerContainerError, InvalidRequest, SageMakerConfigurationError, SageMakerError,
                          SageMakerJobError, error_code, error_text)
from mlops.job_requests import TrainingRequest, request_to_show
from mlops.platform import Platform
from mlops.script_contract import BUNDLED_ENTRY_POINT, BUNDLED_SCRIPTS
from mlops.sagemaker import validation as v
from mlops.sagemaker.dataset_upload import dataset_entries, upload_dataset
from mlops.sagemaker.gpus import needs_torchrun
from mlops.sagemaker.iam import (ECR_REPOSITORY, ROLE_POLICY_NAME, SAGEMAKER_PRINCIPAL, Scope,
                                 execution_role_policy, required_permissions, sagemaker_trust_policy,
                                 trusts_sagemaker)
from mlops.shapes import tag_list
from mlops.staging import resolve_storage_path

logger = logging.getLogger(__name__)

PLATFORM_NAME = "sagemaker"
# The executor's job kinds that run as SageMaker training jobs: what the seeds' methods list and follow.
TRAINING_JOB_KINDS = (TRAINING, PIPELINE)
LIST_LIMIT = 1000
JOB_NAME_PREFIX = "essedum-"
# Fields of SageMakerJobConfig the executor decides itself for a queued job; a config that sets one is refused.
DECIDED_BY_EXECUTOR = {
    "environment_variables": "a training job takes no environment (it would show in AWS's job description)",
    "source_s3_uri": "the executor uploads the code of source_dir itself",
    "metric_definitions": "the executor reads them from the training script's description",
    "checkpoint_s3_uri": "the executor places a spot job's checkpoints in its job folder",
    "executor_job_id": "the queue gives the job its id",
}
TRAINING_CHANNEL = "training"
CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints"


def training_job_name(job_id: str, name: str) -> str:
    """Derive the SageMaker job name from the executor's job id: the same id always gives the same name."""
    try:
        suffix = uuid.UUID(job_id).hex[:24]
    except ValueError:
        suffix = hashlib.sha256(job_id.encode()).hexdigest()[:24]
    words = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-")[:8].strip("-") or "job"
    return v.validate_job_name(f"{JOB_NAME_PREFIX}{words}-{suffix}", "job_name")


def _json_hyperparameters(values: dict[str, Any]) -> dict[str, str]:
    # The SageMaker SDK JSON-encodes every value for framework containers and the training
    # toolkit decodes them before building the `--name value` flags; doing the same keeps
    # "10" a string flag value and true a boolean.
    return {str(name): json.dumps(value) for name, value in values.items()}


@dataclass
class SageMakerJobConfig:
    """Configuration for SageMaker training job."""

    job_name: str
    role_arn: str
    image_uri: str
    instance_type: str
    instance_count: int = 1
    volume_size_gb: int = 30
    max_runtime_seconds: int = 86400
    input_data_s3_uri: str = ""
    output_s3_uri: str = ""
    hyperparameters: dict[str, str] = field(default_factory=dict)
    environment_variables: dict[str, str] = field(default_factory=dict)
    entry_point: str | None = None
    source_s3_uri: str | None = None
    region: str | None = None
    spot: bool = False
    max_wait_seconds: int | None = None
    checkpoint_s3_uri: str | None = None
    metric_definitions: list[dict[str, str]] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    executor_job_id: str | None = None

    def validate(self) -> None:
        """Check every field against SageMaker's rules; raise InvalidSageMakerField naming the first bad one."""
        v.validate_job_name(self.job_name, "job_name")
        v.validate_role_arn(self.role_arn, "role_arn")
        v.validate_image_uri(self.image_uri, "image_uri")
        v.validate_instance_type(self.instance_type, "instance_type")
        v.validate_instance_count(self.instance_count, "instance_count")
        v.validate_volume_size(self.volume_size_gb, "volume_size_gb")
        v.validate_max_runtime(self.max_runtime_seconds, "max_runtime_seconds")
        if self.input_data_s3_uri:
            v.validate_s3_uri(self.input_data_s3_uri, "input_data_s3_uri")
        v.validate_s3_uri(self.output_s3_uri, "output_s3_uri")
        v.validate_hyperparameter_names(self.hyperparameters)
        v.validate_hyperparameter_map(self._hyperparameters(), "hyperparameters")
        v.validate_environment(self.environment_variables, "environment")
        v.validate_metric_definitions(self.metric_definitions, "metric_definitions")
        v.validate_tags(self.tags, "tags")
        if bool(self.entry_point) != bool(self.source_s3_uri):
            raise v.InvalidSageMakerField("entry_point", "entry_point and source_s3_uri go together")
        if self.source_s3_uri:
            v.validate_s3_uri(self.source_s3_uri, "source_s3_uri")
        if self.spot:
            v.validate_int(self.max_wait_seconds, "max_wait_seconds", self.max_runtime_seconds,
                           v.MAX_RUNTIME_LIMIT_SECONDS)
            v.validate_s3_uri(self.checkpoint_s3_uri, "checkpoint_s3_uri")

    def _hyperparameters(self) -> dict[str, str]:
        values: dict[str, Any] = dict(self.hyperparameters)
        if self.entry_point:
            values["sagemaker_program"] = self.entry_point
            values["sagemaker_submit_directory"] = self.source_s3_uri
            values["sagemaker_container_log_level"] = logging.INFO
            if self.region:
                values["sagemaker_region"] = self.region
            values["sagemaker_job_name"] = self.job_name
            # Without torchrun the toolkit starts one process per instance: one GPU of a multi-GPU one.
            if needs_torchrun(self.instance_type, self.instance_count):
                values["sagemaker_torch_distributed_enabled"] = True
        return _json_hyperparameters(values)

    def to_sagemaker_config(self) -> dict[str, Any]:
        """Convert to SageMaker training job configuration."""
        self.validate()
        algorithm: dict[str, Any] = {"TrainingImage": self.image_uri, "TrainingInputMode": "File",
                                     "EnableSageMakerMetricsTimeSeries": True}
        if self.metric_definitions:
            algorithm["MetricDefinitions"] = [dict(d) for d in self.metric_definitions]
        stopping: dict[str, int] = {"MaxRuntimeInSeconds": self.max_runtime_seconds}
        request: dict[str, Any] = {
            "TrainingJobName": self.job_name,
            "RoleArn": self.role_arn,
            "AlgorithmSpecification": algorithm,
            "HyperParameters": self._hyperparameters(),
            "OutputDataConfig": {"S3OutputPath": self.output_s3_uri},
            "ResourceConfig": {"InstanceType": self.instance_type, "InstanceCount": self.instance_count,
                               "VolumeSizeInGB": self.volume_size_gb},
            "StoppingCondition": stopping,
            "Tags": tag_list(self.tags),
        }
        if self.input_data_s3_uri:
            request["InputDataConfig"] = [{
                "ChannelName": TRAINING_CHANNEL,
                "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": self.input_data_s3_uri,
                                                "S3DataDistributionType": "FullyReplicated"}},
                "InputMode": "File",
            }]
        if self.environment_variables:
            request["Environment"] = dict(self.environment_variables)
        if self.spot:
            request["EnableManagedSpotTraining"] = True
            stopping["MaxWaitTimeInSeconds"] = self.max_wait_seconds  # type: ignore[assignment]
            request["CheckpointConfig"] = {"S3Uri": self.checkpoint_s3_uri, "LocalPath": CHECKPOINT_LOCAL_PATH}
        return request


@dataclass(frozen=True)
class Check:
    """One check of validate_configuration: its name, whether it passed, and why."""

    name: str
    passed: bool
    detail: str


class TrainingQueue(Protocol):
    """What the seeds' job methods need of the executor's queue (queue_worker.JobQueue)."""

    store: Store
    platform: Platform

    def submit(self, kind: str, request: dict[str, Any], secrets: dict[str, Any] | None = None) -> Job:
        """Check a request with the platform and store it as a WAITING job."""

    def cancel(self, job_id: str) -> bool | None:
        """Cancel a job; None for an unknown job, False when it had ended."""


class SageMakerTrainingService:
    """Service for managing SageMaker training jobs."""

    def __init__(self, config: Config, clients: ClientFactory, queue: TrainingQueue | None = None):
        self.config = config
        self.clients = clients
        # The executor's queue (app.Executor.queue): the seeds' submit and cancel go through it.
        self.queue = queue
        self._image_cache: dict[tuple[str, str], str] = {}

    @property
    def sagemaker(self) -> Any:
        return self.clients.client("sagemaker")

    @property
    def region(self) -> str:
        region = self.clients.region_name
        if not region:
            raise SageMakerConfigurationError("no AWS region: set EXECUTOR_AWS_REGION or AWS_DEFAULT_REGION")
        return region

    # -- configuration ---------------------------------------------------------------------------

    def validate_configuration(self) -> dict[str, Any]:
        """Validate SageMaker configuration and permissions.

        Returns {"valid": bool, "region": ..., "checks": [{"name", "passed", "detail"}]}; nothing is
        created. Each check says why it failed, with AWS's error code.
        """
        checks = [self._check_region(), self._check_credentials()]
        checks.append(self._check_bucket())
        checks.append(self._check_role())
        checks.append(self._check_instance_type())
        checks.append(self._check_permissions())
        return {"valid": all(check.passed for check in checks), "region": self.clients.region_name,
                "checks": [dataclasses.asdict(check) for check in checks]}

    def _check_region(self) -> Check:
        region = self.clients.region_name
        return Check("region", bool(region), region or "no region: set EXECUTOR_AWS_REGION or AWS_DEFAULT_REGION")

    def _check_credentials(self) -> Check:
        try:
            identity = self.clients.client("sts").get_caller_identity()
        except AWS_ERRORS as exc:
            return Check("credentials", False, f"STS GetCallerIdentity failed: {error_text(exc)}")
        return Check("credentials", True, f"account {identity['Account']}, {identity['Arn']}")

    def _check_bucket(self) -> Check:
        bucket = self.config.s3_bucket
        if not bucket:
            return Check("bucket", False, "EXECUTOR_S3_BUCKET is not set")
        try:
            v.validate_bucket_name(bucket, "EXECUTOR_S3_BUCKET")
            response = self.clients.client("s3").head_bucket(Bucket=bucket)
        except v.InvalidSageMakerField as exc:
            return Check("bucket", False, str(exc))
        except AWS_ERRORS as exc:
            return Check("bucket", False, f"HeadBucket {bucket} failed: {error_text(exc)}")
        bucket_region = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("x-amz-bucket-region")
        if bucket_region and self.clients.region_name and bucket_region != self.clients.region_name:
            return Check("bucket", False, f"bucket {bucket} is in {bucket_region}, training runs in "
                                          f"{self.clients.region_name}: SageMaker needs them in one region")
        return Check("bucket", True, f"bucket {bucket} is reachable")

    def _check_role(self) -> Check:
        arn = self.config.sagemaker_role_arn
        if not arn:
            return Check("role", False, "EXECUTOR_SAGEMAKER_ROLE_ARN is not set")
        try:
            v.validate_role_arn(arn, "EXECUTOR_SAGEMAKER_ROLE_ARN")
            role = self.clients.client("iam").get_role(RoleName=arn.rsplit("/", 1)[-1])["Role"]
        except v.InvalidSageMakerField as exc:
            return Check("role", False, str(exc))
        except AWS_ERRORS as exc:
            return Check("role", False, f"GetRole failed: {error_text(exc)}")
        if role["Arn"] != arn:
            return Check("role", False, f"the role named by {arn} has the ARN {role['Arn']}")
        if not trusts_sagemaker(role.get("AssumeRolePolicyDocument")):
            return Check("role", False, f"role {arn} does not trust {SAGEMAKER_PRINCIPAL} (sts:AssumeRole)")
        return Check("role", True, f"role {arn} exists and trusts {SAGEMAKER_PRINCIPAL}")

    def _check_instance_type(self) -> Check:
        try:
            v.validate_instance_type(self.config.instance_type, "EXECUTOR_INSTANCE_TYPE")
        except v.InvalidSageMakerField as exc:
            return Check("instance_type", False, str(exc))
        return Check("instance_type", True, f"{self.config.instance_type} is a SageMaker training instance type")

    def _check_permissions(self) -> Check:
        try:
            missing = self.missing_permissions()
        except SageMakerConfigurationError as exc:
            return Check("permissions", False, str(exc))
        except AWS_ERRORS as exc:
            # Many identities may not simulate their own policies: the check is then only not made.
            return Check("permissions", True, f"not checked (IAM policy simulator: {error_text(exc)}); compare the "
                                              "identity's policies with docs/iam/executor-policy.json")
        if missing:
            return Check("permissions", False, "the executor's identity lacks " + ", ".join(
                f"{action} on {resource}" for action, resource in missing))
        return Check("permissions", True, "IAM's policy simulator allows every call in docs/iam/executor-policy.json")

    def missing_permissions(self) -> list[tuple[str, str]]:
        """Ask IAM's policy simulator which of the executor's calls its identity may not make."""
        for setting, value in (("EXECUTOR_S3_BUCKET", self.config.s3_bucket),
                               ("EXECUTOR_SAGEMAKER_ROLE_ARN", self.config.sagemaker_role_arn)):
            if not value:
                raise SageMakerConfigurationError(f"{setting} is not set: the permissions cannot be checked")
        identity = self.clients.client("sts").get_caller_identity()
        iam = self.clients.client("iam")
        principal = identity["Arn"]
        if ":assumed-role/" in principal:
            # The simulator takes the role, not the session: arn:…:sts::…:assumed-role/<name>/<session>.
            principal = iam.get_role(RoleName=principal.split("/")[1])["Role"]["Arn"]
        scope = Scope(region=self.region, account=identity["Account"], bucket=self.config.s3_bucket,
                      prefix=v.validate_s3_prefix(self.config.s3_prefix, "EXECUTOR_S3_PREFIX"),
                      role_arn=self.config.sagemaker_role_arn)
        by_resource: dict[str, list[str]] = {}
        for action, resource in required_permissions(scope, principal):
            by_resource.setdefault(resource, []).append(action)
        missing = []
        for resource, actions in by_resource.items():
            answer = iam.simulate_principal_policy(
                PolicySourceArn=principal, ActionNames=actions, ResourceArns=[resource],
                ContextEntries=[{"ContextKeyName": "iam:PassedToService", "ContextKeyType": "string",
                                 "ContextKeyValues": [SAGEMAKER_PRINCIPAL]}])
            missing += [(result["EvalActionName"], resource) for result in answer["EvaluationResults"]
                        if result["EvalDecision"] != "allowed"]
        return missing

    def create_execution_role(self, role_name: str) -> str:
        """Create IAM execution role for SageMaker training.

        The role trusts only sagemaker.amazonaws.com and gets one inline policy with one statement
        per job family the executor runs (mlops/sagemaker/iam.py): objects under the
        executor's bucket prefix, AWS's image repositories, the families' log groups, AutoML's own
        candidates. An existing role that trusts SageMaker gets the policy again; one that does not
        is refused.
        """
        v.validate_role_name(role_name, "role_name")
        bucket = self.config.s3_bucket
        if not bucket:
            raise SageMakerConfigurationError("EXECUTOR_S3_BUCKET must be set to scope the role's S3 access")
        v.validate_bucket_name(bucket, "EXECUTOR_S3_BUCKET")
        prefix = v.validate_s3_prefix(self.config.s3_prefix, "EXECUTOR_S3_PREFIX")
        iam = self.clients.client("iam")
        try:
            account = self.clients.client("sts").get_caller_identity()["Account"]
            image = self.resolve_image(self.config.instance_type)
            try:
                role = iam.create_role(
                    RoleName=role_name, AssumeRolePolicyDocument=json.dumps(sagemaker_trust_policy()),
                    Description="SageMaker training jobs of the Essedum executor",
                    Tags=[{"Key": "essedum:executor", "Value": "training-role"}])["Role"]
            except AWS_ERRORS as exc:
                if error_code(exc) != "EntityAlreadyExists":
                    raise
                role = iam.get_role(RoleName=role_name)["Role"]
                if not trusts_sagemaker(role.get("AssumeRolePolicyDocument")):
                    raise SageMakerConfigurationError(
                        f"role {role_name} exists and does not trust {SAGEMAKER_PRINCIPAL}; choose another name")
            scope = Scope(region=self.region, account=account, bucket=bucket, prefix=prefix, role_arn=role["Arn"])
            policy = execution_role_policy(scope, [image])
            iam.put_role_policy(RoleName=role_name, PolicyName=ROLE_POLICY_NAME, PolicyDocument=json.dumps(policy))
        except AWS_ERRORS as exc:
            raise SageMakerConfigurationError(f"cannot create role {role_name}: {error_text(exc)}") from exc
        logger.info("execution role %s is ready", role["Arn"])
        return role["Arn"]

    def resolve_image(self, instance_type: str, override: str | None = None) -> str:
        """Return the training image: the request's, EXECUTOR_TRAINING_IMAGE, or AWS's PyTorch image."""
        if override:
            return v.validate_image_uri(override, "configs.container")
        if self.config.training_image:
            return v.validate_image_uri(self.config.training_image, "EXECUTOR_TRAINING_IMAGE")
        key = (self.region, instance_type)
        if key not in self._image_cache:
            # sagemaker-core takes seconds to import: only a job that needs AWS's image pays for it.
            try:
                from sagemaker.core import image_uris

                self._image_cache[key] = image_uris.retrieve(
                    framework="pytorch", region=self.region, version=self.config.framework_version,
                    py_version=self.config.py_version, instance_type=instance_type, image_scope="training")
            except (ImportError, ValueError) as exc:
                raise SageMakerConfigurationError(
                    f"no AWS PyTorch {self.config.framework_version} {self.config.py_version} training image for "
                    f"{instance_type} in {self.region}: {exc}; set EXECUTOR_TRAINING_IMAGE") from exc
        return self._image_cache[key]

    # -- data ------------------------------------------------------------------------------------

    def upload_training_data(self, dataset_folder: str, metadata_file: str | None, s3_bucket: str,
                             s3_prefix: str) -> str:
        """Upload training data to S3.

        The folder (and a metadata file from outside it, at the archive's root) goes up as one
        deterministic dataset.tar under `<prefix>/datasets/<sha256>/`; an archive already there is
        not sent again. A relative metadata_file is read inside dataset_folder. Returns the
        S3 prefix URI of the archive, which is the training channel's S3Uri.
        """
        if not isinstance(dataset_folder, str) or not dataset_folder.strip():
            raise v.InvalidSageMakerField("dataset_folder", "must name a folder")
        if metadata_file is not None and (not isinstance(metadata_file, str) or not metadata_file.strip()):
            raise v.InvalidSageMakerField("metadata_file", "must name a file, or be omitted")
        v.validate_bucket_name(s3_bucket, "s3_bucket")
        prefix = v.validate_s3_prefix(s3_prefix, "s3_prefix")
        folder = Path(dataset_folder)
        metadata = None
        if metadata_file is not None:
            metadata = Path(metadata_file)
            if not metadata.is_absolute():
                metadata = folder / metadata
        try:
            upload = upload_dataset(self.clients.client("s3"), dataset_entries(folder, metadata), s3_bucket, prefix)
        except OSError as exc:
            raise SageMakerError(f"cannot read the dataset: {exc}") from exc
        return upload.uri

    # -- jobs ------------------------------------------------------------------------------------

    def describe_training_job(self, name: str) -> dict[str, Any] | None:
        """Return DescribeTrainingJob's answer, or None when there is no such job."""
        try:
            return self.sagemaker.describe_training_job(TrainingJobName=name)
        except AWS_ERRORS as exc:
            if is_not_found(exc):
                return None
            raise

    def create_training_job(self, job_config: SageMakerJobConfig) -> str:
        """Create a training job and return its ARN; a name SageMaker already has (ResourceInUse) is that job."""
        request = job_config.to_sagemaker_config()
        name = job_config.job_name
        try:
            try:
                arn = self.sagemaker.create_training_job(**request)["TrainingJobArn"]
                logger.info("job %s: created training job %s", job_config.executor_job_id, name)
            except AWS_ERRORS as exc:
                if error_code(exc) != "ResourceInUse":
                    raise
                arn = self.sagemaker.describe_training_job(TrainingJobName=name)["TrainingJobArn"]
                logger.info("job %s: training job %s was already submitted", job_config.executor_job_id, name)
        except AWS_ERRORS as exc:
            raise SageMakerJobError(f"CreateTrainingJob {name} failed: {_explain(exc)}") from exc
        return arn

    def stop_training_job(self, name: str) -> str | None:
        """Stop a training job if it can still be stopped; return the status AWS reported first."""
        described = self.describe_training_job(name)
        if described is None:
            return None
        status = described["TrainingJobStatus"]
        if status not in TRAINING_STATES.stoppable_states or described.get("SecondaryStatus") == STOPPING:
            return status
        try:
            self.sagemaker.stop_training_job(TrainingJobName=name)
        except AWS_ERRORS as exc:
            # A job that started stopping or ended between the two calls answers ValidationException.
            if error_code(exc) != "ValidationException":
                raise
            logger.info("training job %s could not be stopped any more: %s", name, error_text(exc))
        return status

    # -- the seeds' job methods, through the executor's queue and store --------------------------

    def submit_training_job(self, config: SageMakerJobConfig, s3_input_uri: str, s3_output_uri: str,
                            role_arn: str, image_uri: str, db: Store | None = None, *,
                            source_dir: str | None = None) -> str:
        """Submit SageMaker training job.

        Queues a training job as POST /api/service/v1/pipelines/training does and returns its executor
        job id (a UUID string, where the seeds returned an integer row id). `db` is the executor's job
        store (the seeds' SQLAlchemy session), which must be the queue's; None means the queue's.
        The platform checks the request before anything is stored; the job's code is the bundled
        training script, or `source_dir`, a folder inside the storage root, with config.entry_point.
        The SageMaker job is named from the job id and config.job_name (`training_job_name`), so an
        interrupted worker never creates a second one; the monitor follows it to its end.
        """
        queue = self._queue_for(db)
        if queue.platform.name != PLATFORM_NAME:
            raise SageMakerConfigurationError(f"the executor runs jobs on the {queue.platform.name} platform, not "
                                              "on SageMaker: set EXECUTOR_BACKEND=sagemaker")
        source = (resolve_storage_path(self.config.storage_root, source_dir, "source_dir") if source_dir
                  else BUNDLED_SCRIPTS)
        request = _training_request(config, s3_input_uri, s3_output_uri, role_arn, image_uri, str(source),
                                    self.clients.region_name)
        job = queue.submit(TRAINING, TrainingRequest.from_stored(request))
        logger.info("job %s: queued training %s", job.id, config.job_name)
        return job.id

    def get_job_status(self, job_id: str | int, db: Store) -> dict[str, Any]:
        """Get status of SageMaker training job: what the store recorded of it (no AWS call)."""
        job = _training_job(job_id, db)
        return {**_job_summary(job), "progress": job.progress, "metrics": db.latest_metrics(job.id),
                "artifacts": job.artifacts, "cost_note": job.details.get("cost_note")}

    def cancel_training_job(self, job_id: str | int, db: Store | None = None) -> bool:
        """Cancel SageMaker training job through the queue.

        True: a waiting job is cancelled now, a running one is stopped by the monitor (StopTrainingJob)
        and ends CANCELLED once AWS reports it Stopped. False: it had already ended. `db` as in submit.
        """
        queue = self._queue_for(db)
        job = _training_job(job_id, queue.store)
        return bool(queue.cancel(job.id))

    def list_training_jobs(self, db: Store) -> list[dict[str, Any]]:
        """List SageMaker training jobs the executor runs, newest first, from its store (no AWS call)."""
        jobs = db.list_jobs(limit=LIST_LIMIT, kinds=list(TRAINING_JOB_KINDS))
        return [_job_summary(job) for job in jobs if job.backend == PLATFORM_NAME]

    def _queue_for(self, db: Store | None) -> TrainingQueue:
        if self.queue is None:
            raise SageMakerConfigurationError("this service has no queue: make it with the executor's "
                                              "(SageMakerTrainingService(config, clients, queue=executor.queue))")
        if db is not None and db is not self.queue.store:
            raise SageMakerConfigurationError("db must be the job store of the service's queue")
        return self.queue


def _training_request(config: SageMakerJobConfig, s3_input_uri: str, s3_output_uri: str, role_arn: str,
                      image_uri: str, source_dir: str, region: str | None) -> dict[str, Any]:
    """Return the training request (as the training route builds it) of the seeds' submit arguments."""
    v.validate_job_name(config.job_name, "job_name")
    v.validate_s3_uri(s3_input_uri, "s3_input_uri")
    v.validate_s3_uri(s3_output_uri, "s3_output_uri")
    v.validate_role_arn(role_arn, "role_arn")
    v.validate_image_uri(image_uri, "image_uri")
    for field_name, reason in DECIDED_BY_EXECUTOR.items():
        if getattr(config, field_name):
            raise InvalidRequest(field_name, f"must be left unset: {reason}")
    if config.region and config.region != region:
        raise InvalidRequest("region", f"this executor runs SageMaker jobs in {region}, not {config.region}")
    return {
        "name": config.job_name, "dataset": s3_input_uri, "metadata_file": None,
        "hyperparameters": dict(config.hyperparameters), "instance_type": config.instance_type,
        "instance_count": config.instance_count, "max_runtime_seconds": config.max_runtime_seconds,
        "volume_size_gb": config.volume_size_gb, "spot": config.spot, "max_wait_seconds": config.max_wait_seconds,
        "entry_point": config.entry_point or BUNDLED_ENTRY_POINT, "source_dir": source_dir,
        "tags": dict(config.tags), "retry_on_restart": False,
        "role_arn": role_arn, "image_uri": image_uri, "output_s3_uri": s3_output_uri,
    }


def _training_job(job_id: str | int, db: Store) -> Job:
    """Return the executor's SageMaker training job of that id, or raise SageMakerJobError."""
    if not isinstance(job_id, (str, int)) or isinstance(job_id, bool):
        raise SageMakerJobError(f"a job id is a string, not {type(job_id).__name__}")
    job = db.get(str(job_id))
    if job is None or job.backend != PLATFORM_NAME or job.kind not in TRAINING_JOB_KINDS:
        raise SageMakerJobError(f"no SageMaker training job with id {job_id!r}")
    return job


def _job_summary(job: Job) -> dict[str, Any]:
    """Return a job as the seeds' methods show it: the executor's status beside AWS's last word."""
    details = job.details
    return {"job_id": job.id, "kind": job.kind, "name": request_to_show(job.kind, job.request).name,
            "status": job.status.value,
            "phase": job.phase, "failure_reason": job.failure_reason, "sagemaker_job_name": job.external_id,
            "sagemaker_job_arn": details.get("sagemaker_job_arn"), "sagemaker_status": details.get("sagemaker_status"),
            "secondary_status": details.get("secondary_status"), "submitted": job.submitted,
            "started": job.started, "finished": job.finished,
            "estimated_cost_usd": details.get("estimated_cost_usd")}


def _explain(exc: Exception) -> str:
    code = error_code(exc)
    text = error_text(exc)
    if code == "ResourceLimitExceeded":
        return (f"{text} (the account's quota for this instance type is too low; new accounts have a "
                "GPU training quota of 0: request an increase in Service Quotas)")
    if code == "AccessDeniedException":
        return f"{text} (the executor's credentials may not create training jobs or pass the role)"
    return text


# Outside /opt/ml/code, which must stay empty for the toolkit to unpack the submitted code there.
BUILD_REQUIREMENTS = "/opt/essedum/requirements.txt"


class SageMakerContainerBuilder:
    """Builder for SageMaker training containers.

    Docker runs with argument lists, never a shell. ECR logins use a temporary Docker
    configuration folder, so the registry password is neither on a command line nor kept in
    the user's ~/.docker/config.json.
    """

    def __init__(self, clients: ClientFactory, *, context_dir: Path | None = None, docker: str = "docker",
                 timeout_seconds: float = 3600):
        self.clients = clients
        self.context_dir = context_dir or Path(__file__).resolve().parents[2] / "training_scripts"
        self.docker = docker
        self.timeout_seconds = timeout_seconds

    def build_training_container(self, base_image: str, tag: str) -> str:
        """Build Docker container for SageMaker training.

        The image is base_image with the Python packages of the context folder's requirements.txt
        installed, and nothing in /opt/ml/code: the training toolkit unpacks a job's submitted
        sourcedir.tar.gz only into an empty /opt/ml/code, so code baked there would run instead of
        the job's own. Only requirements.txt is sent to Docker. Returns the tag of the built image.
        """
        v.validate_image_uri(base_image, "base_image")
        v.validate_image_uri(tag, "tag")
        registry = ECR_REPOSITORY.match(base_image.split("@")[0].rsplit(":", 1)[0])
        with tempfile.TemporaryDirectory(prefix="essedum-build-") as context, \
                tempfile.TemporaryDirectory(prefix="docker-config-") as docker_config:
            lines = [f"FROM {base_image}"]
            requirements = self.context_dir / "requirements.txt"
            if requirements.is_file():
                shutil.copyfile(requirements, Path(context) / "requirements.txt")
                lines += [f"COPY requirements.txt {BUILD_REQUIREMENTS}",
                          f"RUN python -m pip install --no-cache-dir -r {BUILD_REQUIREMENTS}"]
            if registry is not None:
                self._login(registry.group(0).split("/", 1)[0], registry.group(1), registry.group(2), docker_config)
            self._docker(["build", "--tag", tag, "--file", "-", context], docker_config if registry else None,
                         stdin="\n".join(lines) + "\n")
        return tag

    def push_to_ecr(self, image_tag: str, ecr_repository_uri: str) -> str:
        """Push Docker image to Amazon ECR and return the full image URI (repository:tag)."""
        v.validate_image_uri(image_tag, "image_tag")
        match = ECR_REPOSITORY.match(ecr_repository_uri or "")
        if not match:
            raise v.InvalidSageMakerField("ecr_repository_uri",
                                          "must be <account>.dkr.ecr.<region>.amazonaws.com/<repository>")
        last = image_tag.rsplit("/", 1)[-1]
        tag = last.rsplit(":", 1)[1] if ":" in last else "latest"
        target = f"{ecr_repository_uri}:{tag}"
        with tempfile.TemporaryDirectory(prefix="docker-config-") as docker_config:
            self._login(ecr_repository_uri.split("/", 1)[0], match.group(1), match.group(2), docker_config)
            self._docker(["tag", image_tag, target], docker_config)
            self._docker(["push", target], docker_config)
        return target

    def _login(self, registry: str, account: str, region: str, docker_config: str) -> None:
        # A registry's login comes from its own region, which its host name carries: no region setting needed.
        try:
            data = self.clients.client("ecr", region=region).get_authorization_token(registryIds=[account])["authorizationData"][0]
        except (*AWS_ERRORS, IndexError, KeyError) as exc:
            if is_missing_credentials(exc):
                raise DockerContainerError(f"cannot get an ECR login for {registry}: no AWS credentials: set them "
                                           "as the AWS CLI reads them (AWS_PROFILE, AWS_ACCESS_KEY_ID and "
                                           "AWS_SECRET_ACCESS_KEY, or ~/.aws/credentials)") from None
            raise DockerContainerError(f"cannot get an ECR login for {registry}: {error_text(exc)}") from exc
        user, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
        self._docker(["login", "--username", user, "--password-stdin", f"https://{registry}"], docker_config,
                     stdin=password)

    def _docker(self, args: list[str], docker_config: str | None, stdin: str | None = None) -> str:
        executable = shutil.which(self.docker)
        if executable is None:
            raise DockerContainerError(f"docker is not installed or not on PATH (looked for {self.docker!r})")
        env = {**os.environ, "DOCKER_CONFIG": docker_config} if docker_config else None
        try:
            completed = subprocess.run([executable, *args], input=stdin, capture_output=True, text=True,
                                       timeout=self.timeout_seconds, env=env, check=False)
        except subprocess.TimeoutExpired as exc:
            raise DockerContainerError(f"docker {args[0]} did not finish within {self.timeout_seconds:.0f} s") from exc
        except OSError as exc:
            raise DockerContainerError(f"cannot run docker {args[0]}: {exc}") from exc
        if completed.returncode != 0:
            detail = (completed.stderr or completed.stdout).strip()[-1000:]
            raise DockerContainerError(f"docker {args[0]} failed with exit code {completed.returncode}: {detail}")
        return completed.stdout
