"""The seeds' SageMaker training API: job configuration, the training service, the container builder.

Every status, metric and artifact this module reports comes from AWS; nothing is simulated. A
failure is raised (or stored on the job) with AWS's own reason.
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
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import unquote

from botocore.exceptions import BotoCoreError, ClientError

from config import Config
from db import JobStatus, JobStore
from mlops.base import AUTOML, PIPELINE, TRAINING
from mlops.clients import ClientFactory
from mlops.sagemaker.dataset_upload import dataset_entries, upload_dataset
from mlops.errors import (DockerContainerError, SageMakerConfigurationError, SageMakerError,  # noqa: F401
                          SageMakerJobError, error_code, error_text)
from mlops.sagemaker import validation as v

logger = logging.getLogger(__name__)

JOB_NAME_PREFIX = "essedum-"
TRAINING_CHANNEL = "training"
CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints"
SAGEMAKER_PRINCIPAL = "sagemaker.amazonaws.com"
TRAINING_LOG_GROUP = "/aws/sagemaker/TrainingJobs"
ROLE_POLICY_NAME = "essedum-executor-training"
STOPPABLE_STATUSES = frozenset({"InProgress"})
ECR_REPOSITORY = re.compile(r"^(\d{12})\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?/([a-z0-9._/-]+)$")
NOT_FOUND_MESSAGE = re.compile(r"could not find|not found|does not exist", re.IGNORECASE)


def is_not_found(exc: Exception) -> bool:
    """True when an AWS error says the named resource does not exist."""
    code = error_code(exc)
    if code in ("ResourceNotFound", "ResourceNotFoundException", "NoSuchEntity", "404", "NotFound"):
        return True
    message = getattr(exc, "response", {}).get("Error", {}).get("Message", "") if code else ""
    return code == "ValidationException" and bool(NOT_FOUND_MESSAGE.search(message))


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
        v.validate_hyperparameter_map(self._hyperparameters(), "hyperparameters")
        reserved = [name for name in self.hyperparameters if name.startswith("sagemaker_")]
        if reserved:
            raise v.InvalidSageMakerField(f"hyperparameters.{reserved[0]}", "names starting sagemaker_ are reserved")
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
            if self.instance_count > 1:
                values["sagemaker_torch_distributed_enabled"] = True
        return _json_hyperparameters(values)

    def to_sagemaker_config(self) -> dict[str, Any]:
        """Convert to SageMaker training job configuration."""
        self.validate()
        algorithm: dict[str, Any] = {"TrainingImage": self.image_uri, "TrainingInputMode": "File"}
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
            "Tags": [{"Key": key, "Value": value} for key, value in sorted(self.tags.items())],
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


class SageMakerTrainingService:
    """Service for managing SageMaker training jobs."""

    def __init__(self, config: Config, clients: ClientFactory, *, clock: Callable[[], float] = time.time):
        self.config = config
        self.clients = clients
        self.clock = clock
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
        return {"valid": all(check.passed for check in checks), "region": self.clients.region_name,
                "checks": [dataclasses.asdict(check) for check in checks]}

    def _check_region(self) -> Check:
        region = self.clients.region_name
        return Check("region", bool(region), region or "no region: set EXECUTOR_AWS_REGION or AWS_DEFAULT_REGION")

    def _check_credentials(self) -> Check:
        try:
            identity = self.clients.client("sts").get_caller_identity()
        except (ClientError, BotoCoreError) as exc:
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
        except (ClientError, BotoCoreError) as exc:
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
        except (ClientError, BotoCoreError) as exc:
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

    def create_execution_role(self, role_name: str) -> str:
        """Create IAM execution role for SageMaker training.

        The role trusts only sagemaker.amazonaws.com and gets one inline policy: objects under the
        executor's bucket prefix, the training log group, metrics in SageMaker's namespace, and
        pulls from the training image's repository. An existing role that trusts SageMaker gets
        the policy again; one that does not is refused.
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
            policy = least_privilege_policy(bucket, prefix, self.region, account,
                                            self.resolve_image(self.config.instance_type))
            try:
                role = iam.create_role(
                    RoleName=role_name, AssumeRolePolicyDocument=json.dumps(sagemaker_trust_policy()),
                    Description="SageMaker training jobs of the Essedum executor",
                    Tags=[{"Key": "essedum:executor", "Value": "training-role"}])["Role"]
            except ClientError as exc:
                if error_code(exc) != "EntityAlreadyExists":
                    raise
                role = iam.get_role(RoleName=role_name)["Role"]
                if not trusts_sagemaker(role.get("AssumeRolePolicyDocument")):
                    raise SageMakerConfigurationError(
                        f"role {role_name} exists and does not trust {SAGEMAKER_PRINCIPAL}; choose another name")
            iam.put_role_policy(RoleName=role_name, PolicyName=ROLE_POLICY_NAME, PolicyDocument=json.dumps(policy))
        except (ClientError, BotoCoreError) as exc:
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
        except ClientError as exc:
            if is_not_found(exc):
                return None
            raise

    def submit_training_job(self, config: SageMakerJobConfig, s3_input_uri: str, s3_output_uri: str,
                            role_arn: str, image_uri: str, db: JobStore) -> str:
        """Submit SageMaker training job.

        Idempotent: a job of that name that exists already (a worker that died after creating it)
        is found, not created again. Records the name as the executor job's external id and
        returns the executor job id.
        """
        job_config = dataclasses.replace(config, input_data_s3_uri=s3_input_uri, output_s3_uri=s3_output_uri,
                                         role_arn=role_arn, image_uri=image_uri)
        request = job_config.to_sagemaker_config()
        job_id = job_config.executor_job_id
        if not job_id or db.get(job_id) is None:
            raise SageMakerJobError(f"no executor job {job_id!r} to record the training job on")
        name = job_config.job_name
        try:
            existing = self.describe_training_job(name)
            if existing is None:
                try:
                    arn = self.sagemaker.create_training_job(**request)["TrainingJobArn"]
                    logger.info("job %s: created training job %s", job_id, name)
                except ClientError as exc:
                    if error_code(exc) != "ResourceInUse":
                        raise
                    arn = self.sagemaker.describe_training_job(TrainingJobName=name)["TrainingJobArn"]
                    logger.info("job %s: training job %s was already submitted", job_id, name)
            else:
                arn = existing["TrainingJobArn"]
                logger.info("job %s: training job %s already exists (%s); following it", job_id, name,
                            existing.get("TrainingJobStatus"))
        except (ClientError, BotoCoreError) as exc:
            raise SageMakerJobError(f"CreateTrainingJob {name} failed: {_explain(exc)}") from exc
        db.update(job_id, external_id=name)
        db.merge_details(job_id, sagemaker_job_name=name, sagemaker_job_arn=arn, region=job_config.region,
                         instance_type=job_config.instance_type, instance_count=job_config.instance_count,
                         image_uri=image_uri, input_s3_uri=s3_input_uri or None, output_s3_uri=s3_output_uri,
                         spot=job_config.spot)
        return job_id

    def get_job_status(self, job_id: str | int, db: JobStore) -> dict[str, Any]:
        """Get status of SageMaker training job: the executor's record and, once launched, AWS's answer."""
        job = db.get(str(job_id))
        if job is None or job.backend != "sagemaker":
            raise SageMakerJobError(f"no SageMaker job with id {job_id!r}")
        status: dict[str, Any] = {
            "job_id": job.id, "status": job.status.value, "phase": job.phase,
            "failure_reason": job.failure_reason, "progress": job.progress, "artifacts": job.artifacts,
            "metrics": db.latest_metrics(job.id), "sagemaker_job_name": job.external_id,
            "estimated_cost_usd": job.details.get("estimated_cost_usd"),
            "cost_note": job.details.get("cost_note"),
        }
        if job.external_id:
            try:
                described = self.describe_training_job(job.external_id)
            except (ClientError, BotoCoreError) as exc:
                raise SageMakerJobError(f"DescribeTrainingJob {job.external_id} failed: {error_text(exc)}") from exc
            if described is not None:
                status.update(sagemaker_status=described.get("TrainingJobStatus"),
                              secondary_status=described.get("SecondaryStatus"),
                              sagemaker_failure_reason=described.get("FailureReason"))
        return status

    def stop_training_job(self, name: str) -> str | None:
        """Stop a training job if it can still be stopped; return the status AWS reported first."""
        described = self.describe_training_job(name)
        if described is None:
            return None
        status = described["TrainingJobStatus"]
        if status not in STOPPABLE_STATUSES or described.get("SecondaryStatus") == "Stopping":
            return status
        try:
            self.sagemaker.stop_training_job(TrainingJobName=name)
        except ClientError as exc:
            # A job that started stopping or ended between the two calls answers ValidationException.
            if error_code(exc) != "ValidationException":
                raise
            logger.info("training job %s could not be stopped any more: %s", name, error_text(exc))
        return status

    def cancel_training_job(self, job_id: str | int, db: JobStore) -> bool:
        """Cancel SageMaker training job: a queued job at once, a launched one with StopTrainingJob.

        The job becomes CANCELLED when AWS reports it Stopped (the monitor sees that). False when
        the job had already ended.
        """
        job = db.get(str(job_id))
        if job is None or job.backend != "sagemaker":
            raise SageMakerJobError(f"no SageMaker job with id {job_id!r}")
        before = db.request_cancel(job.id)  # the status the job had: WAITING ones are now CANCELLED
        if before is JobStatus.WAITING:
            return True
        if before is not JobStatus.RUNNING:
            return False
        if job.external_id:
            try:
                self.stop_training_job(job.external_id)
            except (ClientError, BotoCoreError) as exc:
                raise SageMakerJobError(f"StopTrainingJob {job.external_id} failed: {error_text(exc)}") from exc
            db.merge_details(job.id, stop_requested=True)
        return True

    def list_training_jobs(self, db: JobStore) -> list[dict[str, Any]]:
        """List SageMaker training jobs the executor runs, newest first, from its store (no AWS call)."""
        jobs = db.list_jobs(limit=1000, kinds=[TRAINING, PIPELINE, AUTOML])
        return [{"job_id": job.id, "kind": job.kind, "status": job.status.value, "phase": job.phase,
                 "sagemaker_job_name": job.external_id, "submitted": job.submitted, "finished": job.finished,
                 "failure_reason": job.failure_reason, "estimated_cost_usd": job.details.get("estimated_cost_usd")}
                for job in jobs if job.backend == "sagemaker"]


def _explain(exc: Exception) -> str:
    code = error_code(exc)
    text = error_text(exc)
    if code == "ResourceLimitExceeded":
        return (f"{text} (the account's quota for this instance type is too low; new accounts have a "
                "GPU training quota of 0: request an increase in Service Quotas)")
    if code == "AccessDeniedException":
        return f"{text} (the executor's credentials may not create training jobs or pass the role)"
    return text


def sagemaker_trust_policy() -> dict[str, Any]:
    """Return a trust policy that lets only SageMaker assume the role."""
    return {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": SAGEMAKER_PRINCIPAL}, "Action": "sts:AssumeRole"}]}


def trusts_sagemaker(document: Any) -> bool:
    """True when a trust policy allows sagemaker.amazonaws.com to assume the role."""
    if isinstance(document, str):
        try:
            document = json.loads(unquote(document))
        except ValueError:
            return False
    if not isinstance(document, dict):
        return False
    statements = document.get("Statement", [])
    for statement in statements if isinstance(statements, list) else [statements]:
        services = statement.get("Principal", {}).get("Service", []) if isinstance(statement.get("Principal"), dict) else []
        actions = statement.get("Action", [])
        services = [services] if isinstance(services, str) else services
        actions = [actions] if isinstance(actions, str) else actions
        if (statement.get("Effect") == "Allow" and SAGEMAKER_PRINCIPAL in services
                and ("sts:AssumeRole" in actions or "sts:*" in actions)):
            return True
    return False


def least_privilege_policy(bucket: str, prefix: str, region: str, account: str, image_uri: str) -> dict[str, Any]:
    """Return the inline policy of a training role: one bucket prefix, its log group, its image."""
    partition = "aws-cn" if region.startswith("cn-") else "aws"
    objects = f"arn:{partition}:s3:::{bucket}/{prefix + '/' if prefix else ''}*"
    log_group = f"arn:{partition}:logs:{region}:{account}:log-group:{TRAINING_LOG_GROUP}"
    statements: list[dict[str, Any]] = [
        {"Sid": "ObjectsUnderThePrefix", "Effect": "Allow",
         "Action": ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
         "Resource": objects},
        {"Sid": "ListThePrefix", "Effect": "Allow", "Action": "s3:ListBucket",
         "Resource": f"arn:{partition}:s3:::{bucket}",
         **({"Condition": {"StringLike": {"s3:prefix": [prefix, f"{prefix}/*"]}}} if prefix else {})},
        {"Sid": "TrainingLogs", "Effect": "Allow",
         "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
         "Resource": [log_group, f"{log_group}:log-stream:*"]},
        {"Sid": "TrainingMetrics", "Effect": "Allow", "Action": "cloudwatch:PutMetricData", "Resource": "*",
         "Condition": {"StringEquals": {"cloudwatch:namespace": TRAINING_LOG_GROUP}}},
        # GetAuthorizationToken has no resource to scope to; pulls are limited to one repository.
        {"Sid": "RegistryToken", "Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
    ]
    repository = ECR_REPOSITORY.match(image_uri.split("@")[0].rsplit(":", 1)[0])
    if repository:
        repo_account, repo_region, name = repository.groups()
        statements.append({
            "Sid": "PullTheTrainingImage", "Effect": "Allow",
            "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"],
            "Resource": f"arn:{partition}:ecr:{repo_region}:{repo_account}:repository/{name}"})
    return {"Version": "2012-10-17", "Statement": statements}


class SageMakerContainerBuilder:
    """Builder for SageMaker training containers.

    Docker runs with argument lists, never a shell. ECR logins use a temporary Docker
    configuration folder, so the registry password is neither on a command line nor kept in
    the user's ~/.docker/config.json.
    """

    def __init__(self, clients: ClientFactory, *, context_dir: Path | None = None, docker: str = "docker",
                 timeout_seconds: float = 3600):
        self.clients = clients
        self.context_dir = context_dir or Path(__file__).resolve().parent.parent / "training_scripts"
        self.docker = docker
        self.timeout_seconds = timeout_seconds

    def build_training_container(self, base_image: str, tag: str) -> str:
        """Build Docker container for SageMaker training.

        The image is base_image plus the context folder in /opt/ml/code, with train.py as the
        SageMaker program. Returns the tag of the built image.
        """
        v.validate_image_uri(base_image, "base_image")
        v.validate_image_uri(tag, "tag")
        dockerfile = (f"FROM {base_image}\n"
                      "COPY . /opt/ml/code\n"
                      "ENV SAGEMAKER_SUBMIT_DIRECTORY=/opt/ml/code SAGEMAKER_PROGRAM=train.py\n")
        build = ["build", "--tag", tag, "--file", "-", str(self.context_dir)]
        registry = ECR_REPOSITORY.match(base_image.split("@")[0].rsplit(":", 1)[0])
        if registry is None:
            self._docker(build, None, stdin=dockerfile)
            return tag
        with tempfile.TemporaryDirectory(prefix="docker-config-") as docker_config:
            self._login(registry.group(0).split("/", 1)[0], registry.group(1), docker_config)
            self._docker(build, docker_config, stdin=dockerfile)
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
            self._login(ecr_repository_uri.split("/", 1)[0], match.group(1), docker_config)
            self._docker(["tag", image_tag, target], docker_config)
            self._docker(["push", target], docker_config)
        return target

    def _login(self, registry: str, account: str, docker_config: str) -> None:
        try:
            data = self.clients.client("ecr").get_authorization_token(registryIds=[account])["authorizationData"][0]
        except (ClientError, BotoCoreError, IndexError, KeyError) as exc:
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
