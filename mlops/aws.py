"""The AWS adapter, and the seeds' SageMaker training API on top of it.

The adapter is the one place boto3 clients are made (region, credentials or profile, adaptive
retries, timeouts, call counting) and where AWS's errors become the project's own (not found,
throttled, in use, quota, access denied). Platform code decides what to call and when; this
module how. The seeds' API (SageMakerJobConfig, SageMakerTrainingService, SageMakerContainerBuilder
and their errors) is importable from here as the seeds name it; the service works on data and
never writes the job store, which the backend does.

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
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from config import Config
from db import Store
from mlops.aws_statuses import STOPPING, TRAINING_STATES
from mlops.platform import AUTOML, PIPELINE, TRAINING
from mlops.errors import (AccessDenied, BackendError, Conflict, DockerContainerError,  # noqa: F401
                          InvalidRequest, NotFound, QuotaExceeded, SageMakerConfigurationError, SageMakerError,
                          SageMakerJobError, Throttled, error_code, error_text)
from mlops.sagemaker import validation as v
from mlops.sagemaker.dataset_upload import dataset_entries, upload_dataset
from mlops.sagemaker.gpus import needs_torchrun
from mlops.sagemaker.iam import (ECR_REPOSITORY, ROLE_POLICY_NAME, SAGEMAKER_PRINCIPAL, Scope,
                                 execution_role_policy, required_permissions, sagemaker_trust_policy,
                                 trusts_sagemaker)
from mlops.shapes import tag_list

logger = logging.getLogger(__name__)

JOB_NAME_PREFIX = "essedum-"
TRAINING_CHANNEL = "training"
CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints"
NOT_FOUND_MESSAGE = re.compile(r"could not find|not found|does not exist", re.IGNORECASE)
NOT_FOUND_CODES = frozenset({"ResourceNotFound", "ResourceNotFoundException", "NoSuchEntity", "NoSuchKey",
                             "NoSuchBucket", "404", "NotFound"})
ACCESS_DENIED_CODES = frozenset({"AccessDenied", "AccessDeniedException", "403"})
IN_USE_CODES = frozenset({"ResourceInUse", "ConflictException"})
# What a failed AWS call raises: botocore's answer errors and its transport errors.
AWS_ERRORS = (ClientError, BotoCoreError)


# -- clients -------------------------------------------------------------------------------------

THROTTLING_CODES = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
    "TooManyRequestsException", "ProvisionedThroughputExceededException", "RequestLimitExceeded",
    "SlowDown", "RequestThrottled", "PriorRequestNotComplete",
})


# InvokeEndpoint is not idempotent (a retry runs the model again) and an endpoint may take up to 60 s to
# answer it (SageMaker's invocation timeout), so it is sent once and read for longer than that.
INVOKE_READ_TIMEOUT_SECONDS = 70
SERVICE_CONFIGS = {"sagemaker-runtime": BotoConfig(retries={"mode": "standard", "total_max_attempts": 1},
                                                   read_timeout=INVOKE_READ_TIMEOUT_SECONDS)}


class CallCounter:
    """Counts AWS API calls and throttling answers, by service and operation."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: Counter[tuple[str, str]] = Counter()
        self.throttles: Counter[tuple[str, str]] = Counter()

    def record_call(self, service: str, operation: str) -> None:
        with self._lock:
            self.calls[(service, operation)] += 1

    def record_throttle(self, service: str, operation: str) -> None:
        with self._lock:
            self.throttles[(service, operation)] += 1

    def snapshot(self) -> dict[str, dict[tuple[str, str], int]]:
        """Return copies of the counters."""
        with self._lock:
            return {"calls": dict(self.calls), "throttles": dict(self.throttles)}

    def total(self, service: str | None = None, operation: str | None = None) -> int:
        """Return how many calls were made, optionally of one service or operation."""
        with self._lock:
            return sum(count for (svc, op), count in self.calls.items()
                       if (service is None or svc == service) and (operation is None or op == operation))


class ClientFactory:
    """Makes and caches boto3 clients; every client counts its calls and retries adaptively.

    AWS_ENDPOINT_URL (and AWS_ENDPOINT_URL_<SERVICE>) are honoured by botocore itself, which is how
    tests point the executor at a moto server and how S3-compatible stores are reached.
    """

    def __init__(self, *, region: str | None = None, profile: str | None = None,
                 adapter_profiles: Mapping[str, str] | None = None,
                 session_factory: Callable[..., boto3.session.Session] = boto3.session.Session,
                 counter: CallCounter | None = None, max_attempts: int = 8,
                 connect_timeout: float = 10, read_timeout: float = 60):
        self.region = region
        self.profile = profile
        self.adapter_profiles = dict(adapter_profiles or {})
        self.session_factory = session_factory
        self.counter = counter or CallCounter()
        self.boto_config = BotoConfig(
            retries={"mode": "adaptive", "max_attempts": max_attempts},
            connect_timeout=connect_timeout, read_timeout=read_timeout,
            user_agent_extra="essedum-executor")
        self._clients: dict[tuple[str, str | None, str | None], Any] = {}
        self._sessions: dict[str | None, boto3.session.Session] = {}
        self._lock = threading.Lock()

    def profile_for(self, adapter_instance: str | None) -> str | None:
        """Return the profile for an Essedum adapter instance, or the default profile."""
        if adapter_instance and adapter_instance in self.adapter_profiles:
            return self.adapter_profiles[adapter_instance]
        return self.profile

    def session(self, adapter_instance: str | None = None) -> boto3.session.Session:
        """Return the (cached) boto3 session for an adapter instance."""
        profile = self.profile_for(adapter_instance)
        with self._lock:
            if profile not in self._sessions:
                kwargs: dict[str, Any] = {}
                if profile:
                    kwargs["profile_name"] = profile
                if self.region:
                    kwargs["region_name"] = self.region
                self._sessions[profile] = self.session_factory(**kwargs)
            return self._sessions[profile]

    @property
    def region_name(self) -> str | None:
        """Return the region clients use."""
        return self.region or self.session().region_name

    def client(self, service: str, adapter_instance: str | None = None, *, region: str | None = None) -> Any:
        """Return a cached client of an AWS service (in the executor's region unless one is named)."""
        key = (service, self.profile_for(adapter_instance), region)
        with self._lock:
            client = self._clients.get(key)
        if client is None:
            config = self.boto_config.merge(SERVICE_CONFIGS[service]) if service in SERVICE_CONFIGS \
                else self.boto_config
            client = self.session(adapter_instance).client(service, config=config, region_name=region)
            self._count(client, service)
            with self._lock:
                client = self._clients.setdefault(key, client)
        return client

    def storage_client(self, *, endpoint_url: str | None, access_key: str, secret_key: str,
                       region: str | None = None) -> Any:
        """Return an uncached S3 client with a request's own credentials (for Essedum storage)."""
        session = self.session_factory(aws_access_key_id=access_key, aws_secret_access_key=secret_key,
                                       region_name=region or self.region or "us-east-1")
        client = session.client("s3", endpoint_url=endpoint_url, config=self.boto_config)
        self._count(client, "s3")
        return client

    def _count(self, client: Any, service: str) -> None:
        # before-send and needs-retry fire once per attempt, so retries count as the calls AWS
        # sees and rate-limits, which is what monitoring cost and throttling depend on.
        def before_send(event_name: str, **_: Any) -> None:
            self.counter.record_call(service, event_name.rsplit(".", 1)[-1])

        def needs_retry(response: Any = None, operation: Any = None, **_: Any) -> None:
            parsed = response[1] if response else None
            code = parsed.get("Error", {}).get("Code") if isinstance(parsed, Mapping) else None
            if code in THROTTLING_CODES and operation is not None:
                self.counter.record_throttle(service, operation.name)

        client.meta.events.register("before-send", before_send)
        client.meta.events.register("needs-retry", needs_retry)


def clients_for(config: Config) -> ClientFactory:
    """Return the client factory the configuration describes (region, profile, per-adapter profiles)."""
    pairs = [item.split("=", 1) for item in (config.adapter_profiles or "").split(",") if "=" in item]
    return ClientFactory(region=config.aws_region, profile=config.aws_profile,
                         adapter_profiles={key.strip(): value.strip() for key, value in pairs})


# -- errors --------------------------------------------------------------------------------------

def is_not_found(exc: Exception) -> bool:
    """True when an AWS error says the named resource (job, object, bucket, role) does not exist."""
    code = error_code(exc)
    if code in NOT_FOUND_CODES:
        return True
    message = getattr(exc, "response", {}).get("Error", {}).get("Message", "") if code else ""
    return code == "ValidationException" and bool(NOT_FOUND_MESSAGE.search(message))


def is_throttled(exc: Exception) -> bool:
    """True when AWS asked the executor to slow down (after the client's own retries)."""
    return error_code(exc) in THROTTLING_CODES


def aws_error(exc: Exception, field: str, operation: str) -> Exception:
    """Turn an AWS error into the project's own: a refusal names the request field, anything else is a BackendError."""
    code, text = error_code(exc), error_text(exc)
    if code in ("ValidationException", "ValidationError") and "already exist" in text.lower():
        return Conflict(field, text)
    if is_not_found(exc):
        return NotFound(field, text)
    if code in ("ValidationException", "ValidationError"):
        return InvalidRequest(field, text)
    if code in IN_USE_CODES:
        return Conflict(field, text)
    if code == "ResourceLimitExceeded":
        return QuotaExceeded(field, f"{text} (an AWS quota: ask AWS for more)")
    if code in ACCESS_DENIED_CODES:
        return AccessDenied(field, f"{text} (the executor's credentials may not do {operation})")
    if is_throttled(exc):
        return Throttled(f"{operation}: AWS is throttling the executor: {text}")
    return BackendError(f"{operation} failed: {text}")


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
        except (ClientError, BotoCoreError) as exc:
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
            except ClientError as exc:
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
        except ClientError as exc:
            if is_not_found(exc):
                return None
            raise

    def submit_training_job(self, config: SageMakerJobConfig, s3_input_uri: str, s3_output_uri: str,
                            role_arn: str, image_uri: str, db: Store) -> str:
        """Submit SageMaker training job.

        Idempotent: a job of that name that exists already (a worker that died after creating it)
        is found, not created again. Returns the executor job id; recording the SageMaker job on it
        is the caller's (the backend's) part: this service reads the store, never writes it.
        """
        job_config = dataclasses.replace(config, input_data_s3_uri=s3_input_uri, output_s3_uri=s3_output_uri,
                                         role_arn=role_arn, image_uri=image_uri)
        job_config.validate()
        job_id = job_config.executor_job_id
        if not job_id or db.get(job_id) is None:
            raise SageMakerJobError(f"no executor job {job_id!r} to submit the training job for")
        try:
            existing = self.describe_training_job(job_config.job_name)
        except AWS_ERRORS as exc:
            raise SageMakerJobError(f"DescribeTrainingJob {job_config.job_name} failed: {error_text(exc)}") from exc
        if existing is None:
            self.create_training_job(job_config)
        else:
            logger.info("job %s: training job %s already exists (%s); following it", job_id, job_config.job_name,
                        existing.get("TrainingJobStatus"))
        return job_id

    def create_training_job(self, job_config: SageMakerJobConfig) -> str:
        """Create a training job and return its ARN; a name SageMaker already has (ResourceInUse) is that job."""
        request = job_config.to_sagemaker_config()
        name = job_config.job_name
        try:
            try:
                arn = self.sagemaker.create_training_job(**request)["TrainingJobArn"]
                logger.info("job %s: created training job %s", job_config.executor_job_id, name)
            except ClientError as exc:
                if error_code(exc) != "ResourceInUse":
                    raise
                arn = self.sagemaker.describe_training_job(TrainingJobName=name)["TrainingJobArn"]
                logger.info("job %s: training job %s was already submitted", job_config.executor_job_id, name)
        except AWS_ERRORS as exc:
            raise SageMakerJobError(f"CreateTrainingJob {name} failed: {_explain(exc)}") from exc
        return arn

    def get_job_status(self, job_id: str | int, db: Store) -> dict[str, Any]:
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
            except AWS_ERRORS as exc:
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
        if status not in TRAINING_STATES.stoppable_states or described.get("SecondaryStatus") == STOPPING:
            return status
        try:
            self.sagemaker.stop_training_job(TrainingJobName=name)
        except ClientError as exc:
            # A job that started stopping or ended between the two calls answers ValidationException.
            if error_code(exc) != "ValidationException":
                raise
            logger.info("training job %s could not be stopped any more: %s", name, error_text(exc))
        return status

    def cancel_training_job(self, job_id: str | int, db: Store) -> bool:
        """Cancel SageMaker training job: stop a launched one with StopTrainingJob (AWS's part only).

        False when the job had already ended. Marking the job cancelled is the queue's part: this
        service reads the store, never writes it; the monitor ends the job once AWS reports it Stopped.
        """
        job = db.get(str(job_id))
        if job is None or job.backend != "sagemaker":
            raise SageMakerJobError(f"no SageMaker job with id {job_id!r}")
        if job.status.is_final:
            return False
        if job.external_id:
            try:
                self.stop_training_job(job.external_id)
            except AWS_ERRORS as exc:
                raise SageMakerJobError(f"StopTrainingJob {job.external_id} failed: {error_text(exc)}") from exc
        return True

    def list_training_jobs(self, db: Store) -> list[dict[str, Any]]:
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
        self.context_dir = context_dir or Path(__file__).resolve().parent.parent / "training_scripts"
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
                self._login(registry.group(0).split("/", 1)[0], registry.group(1), docker_config)
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
            self._login(ecr_repository_uri.split("/", 1)[0], match.group(1), docker_config)
            self._docker(["tag", image_tag, target], docker_config)
            self._docker(["push", target], docker_config)
        return target

    def _login(self, registry: str, account: str, docker_config: str) -> None:
        try:
            data = self.clients.client("ecr").get_authorization_token(registryIds=[account])["authorizationData"][0]
        except (*AWS_ERRORS, IndexError, KeyError) as exc:
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
