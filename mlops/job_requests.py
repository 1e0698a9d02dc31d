"""The typed requests of the job families: built once from a checked body, read by attribute below the routes.

A request is stored as JSON, in the order its keys were given; `to_stored` writes that order back, so a
request read from the store and written again is the same text, whatever release stored it.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, Mapping, TypeVar

from job import AUTOML, ENDPOINT, PIPELINE, TRAINING, TRANSFORM, TUNING
from job_secrets import split_secret_entries
from mlops.errors import InvalidRequest, MalformedRequest
from mlops.script_contract import BUNDLED_ENTRY_POINT, BUNDLED_SCRIPTS
from mlops.shapes import S3_URI, tag_map
from mlops.job_files import resolve_storage_path


@dataclass(frozen=True)
class JobRequest:
    """What a client asked of one job, typed per job family; the store keeps it as JSON (`to_stored`)."""

    #: The family in words, for errors ("a training job"), and the stored keys it cannot do without.
    FAMILY: ClassVar[str] = "this job"
    REQUIRED: ClassVar[tuple[str, ...]] = ()
    #: The stored keys in their order, and the values of stored keys the family's class does not name.
    keys: tuple[str, ...] = field(default=(), repr=False, compare=False, kw_only=True)
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False, kw_only=True)
    #: What the client called the job, in the families that name their jobs (pipelines, trainings).
    name: str | None = field(default=None, kw_only=True)
    #: Whether a run an executor restart interrupted is run again (mlops/recovery.py).
    retry_on_restart: bool = field(default=False, kw_only=True)

    @classmethod
    def fields(cls) -> frozenset[str]:
        """Return the stored keys this class names."""
        return frozenset(item.name for item in dataclasses.fields(cls)) - {"keys", "extra"}

    @classmethod
    def from_stored(cls: type[R], stored: Mapping[str, Any]) -> R:
        """Read a request as the store keeps it (any release's); keys this class does not name are kept aside."""
        missing = [name for name in cls.REQUIRED if name not in stored]
        if missing:
            raise InvalidRequest(missing[0], f"is required for {cls.FAMILY}")
        names = cls.fields()
        known = {key: value for key, value in stored.items() if key in names}
        extra = {key: value for key, value in stored.items() if key not in names}
        return cls(**known, keys=tuple(stored), extra=MappingProxyType(extra))

    def to_stored(self) -> dict[str, Any]:
        """Return the request as the store keeps it: its keys in their order, with their values."""
        names = self.fields()
        return {key: getattr(self, key) if key in names else self.extra[key] for key in self.keys}

    def with_changes(self: R, **changes: Any) -> R:
        """Return a copy with these fields changed; a field the request did not hold is stored after the others."""
        added = tuple(key for key in changes if key not in self.keys)
        return dataclasses.replace(self, **changes, keys=self.keys + added)

    def without(self: R, *names: str) -> R:
        """Return a copy that no longer stores these keys; a field the class names goes back to its default."""
        defaults = {}
        for item in dataclasses.fields(self):
            if item.name not in names:
                continue
            if item.default is dataclasses.MISSING and item.default_factory is dataclasses.MISSING:
                raise ValueError(f"{item.name} is required for {self.FAMILY}: it cannot be left out")
            defaults[item.name] = (item.default if item.default is not dataclasses.MISSING
                                   else item.default_factory())
        extra = {key: value for key, value in self.extra.items() if key not in names}
        return dataclasses.replace(self, **defaults, keys=tuple(key for key in self.keys if key not in names),
                                   extra=MappingProxyType(extra))


R = TypeVar("R", bound=JobRequest)


@dataclass(frozen=True)
class TrainingRequest(JobRequest):
    """A training job (a tuning's trial, and a tuning, are training jobs with more fields)."""

    dataset: str
    source_dir: str
    entry_point: str = BUNDLED_ENTRY_POINT
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)
    metadata_file: str | None = None
    instance_type: str | None = None
    instance_count: int = 1
    max_runtime_seconds: int | None = None
    spot: bool = False
    tags: Mapping[str, str] = field(default_factory=dict)
    #: The dataset's folder, resolved inside the storage root; None for an s3:// dataset.
    dataset_path: str | None = None
    #: A tuning's search (its kind is tuning); a trial's tuning job id and number.
    tuning: Mapping[str, Any] | None = None
    parent: str | None = None
    trial: int | None = None
    #: A SageMaker tuning's trial: the training job SageMaker made for it, which the trial follows.
    sagemaker_training_job_name: str | None = None
    FAMILY: ClassVar[str] = "a training job"
    REQUIRED: ClassVar[tuple[str, ...]] = ("dataset", "source_dir")

    @classmethod
    def from_body(cls, body: dict[str, Any], storage_root: Path, max_runtime_seconds: int) -> TrainingRequest:
        """Fill a schema-checked training body's defaults and resolve its paths inside the storage root."""
        stored: dict[str, Any] = {
            "name": body["name"],
            "dataset": body["dataset"],
            "metadata_file": body.get("metadata_file"),
            "hyperparameters": body.get("hyperparameters", {}),
            "instance_type": body.get("instance_type"),
            "instance_count": body.get("instance_count", 1),
            "max_runtime_seconds": body.get("max_runtime_seconds", max_runtime_seconds),
            "spot": body.get("spot", False),
            "entry_point": body.get("entry_point", BUNDLED_ENTRY_POINT),
            "tags": tag_map(body.get("tags", {})),
            "retry_on_restart": body.get("retry_on_restart", False),
        }
        match = S3_URI.match(body["dataset"])
        if not match:
            stored["dataset_path"] = str(resolve_storage_path(storage_root, body["dataset"], "dataset"))
        elif not match.group(1):
            raise InvalidRequest("dataset", "s3:// URI needs a bucket")
        metadata_file = body.get("metadata_file")
        if metadata_file and (".." in Path(metadata_file).parts or Path(metadata_file).is_absolute()):
            raise InvalidRequest("metadata_file", "must be a relative path inside the dataset")
        if ".." in Path(stored["entry_point"]).parts:
            raise InvalidRequest("entry_point", "must be a path inside source_dir")
        source_dir = body.get("source_dir")
        stored["source_dir"] = (str(resolve_storage_path(storage_root, source_dir, "source_dir")) if source_dir
                                else str(BUNDLED_SCRIPTS))
        return cls.from_stored(stored)

    def search(self) -> Mapping[str, Any]:
        """Return a tuning's search, or raise InvalidRequest when the request has none."""
        if not isinstance(self.tuning, Mapping):
            raise InvalidRequest("tuning", "is required for a tuning job, as an object")
        return self.tuning


@dataclass(frozen=True)
class PipelineRequest(JobRequest):
    """An Essedum pipeline: a command run on its input artifacts; its credentials and environment are sealed apart."""

    FAMILY: ClassVar[str] = "a pipeline"
    REQUIRED: ClassVar[tuple[str, ...]] = ("command", "storage", "input_artifacts")

    command: str
    storage: str
    input_artifacts: str
    bucket: str | None = None
    project_id: str | None = None
    version: str | None = None
    configs: Mapping[str, Any] = field(default_factory=dict)
    environment_keys: tuple[str, ...] | list[str] = ()

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> tuple[PipelineRequest, dict[str, Any]]:
        """Separate a schema-checked pipeline body into the request that is stored and the secrets, which are not."""
        configs, secret_configs = split_secret_entries(body.get("configs") or {})
        environment = body.get("environment") or {}
        stored = {key: body[key] for key in ("bucket", "project_id", "name", "version", "input_artifacts",
                                             "command", "storage")}
        stored["storage"] = body["storage"].lower()
        stored["configs"] = configs
        stored["environment_keys"] = sorted(environment)
        if isinstance(configs.get("retry_on_restart"), bool):
            stored["retry_on_restart"] = configs["retry_on_restart"]
        secrets = {"credentials": body["credentials"], "environment": environment, "configs": secret_configs}
        return cls.from_stored(stored), secrets


#: An AutoML job's name as CreateAutoMLJobV2 takes it (AutoMLJobName: at most 32 characters).
AUTOML_JOB_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,31}$")
#: What a CSV is read as when a body names no content type: with its header row, as AWS needs for tabular data.
DEFAULT_AUTOML_CONTENT_TYPE = "text/csv;header=present"


@dataclass(frozen=True)
class AutoMLRequest(JobRequest):
    """An AutoML job on a CSV in S3 (SageMaker Autopilot)."""

    FAMILY: ClassVar[str] = "an AutoML job"
    REQUIRED: ClassVar[tuple[str, ...]] = ("input_s3_uri", "output_s3_path", "target_attribute_name")

    input_s3_uri: str
    output_s3_path: str
    target_attribute_name: str
    job_name: str | None = None
    content_type: str | None = None
    problem_type: str | None = None
    metric_name: str | None = None
    max_candidates: int | None = None
    max_runtime_per_training_job_in_seconds: int | None = None
    total_job_runtime_in_seconds: int | None = None
    role_arn: str | None = None
    mode: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    generate_candidate_definitions_only: bool = False
    origin: Mapping[str, Any] | None = None

    @classmethod
    def from_automl_body(cls, body: Mapping[str, Any], origin: Mapping[str, Any]) -> AutoMLRequest:
        """Build the request of a schema-checked CreateAutoMLJobV2-shaped body (POST /pipelines/training/automl)."""
        request = cls.from_stored({
            "job_name": body.get("job_name"), "input_s3_uri": body["input_data_config"]["s3_uri"],
            "content_type": body["input_data_config"].get("content_type", DEFAULT_AUTOML_CONTENT_TYPE),
            "output_s3_path": body["output_data_config"]["s3_output_path"],
            "target_attribute_name": body["target_attribute_name"], "problem_type": body.get("problem_type"),
            "metric_name": (body.get("objective") or {}).get("metric_name"),
            "max_candidates": body.get("max_candidates"),
            "max_runtime_per_training_job_in_seconds": body.get("max_runtime_per_training_job_in_seconds"),
            "total_job_runtime_in_seconds": body.get("total_job_runtime_in_seconds"),
            "role_arn": body.get("role_arn"), "mode": body.get("mode"), "tags": tag_map(body.get("tags", [])),
            "generate_candidate_definitions_only": body.get("generate_candidate_definitions_only", False),
            "origin": origin})
        if request.job_name is not None and not AUTOML_JOB_NAME.match(request.job_name):
            raise InvalidRequest("job_name", "must be 1-32 letters, digits and hyphens, starting and ending "
                                             "with a letter or digit")
        if request.metric_name and not request.problem_type:
            raise InvalidRequest("problem_type", "is required when objective.metric_name is given")
        return request._with_a_target()

    @classmethod
    def from_train_body(cls, body: Mapping[str, Any], origin: Mapping[str, Any]) -> AutoMLRequest:
        """Build the request of a schema-checked AutoML-on-a-CSV body (POST /pipelines/training/train).

        Its target is checked by the route against the CSV's columns, whose answer lists them.
        """
        prefix = "/".join(filter(None, [body.get("S3Prefix", "").strip("/"), "automl-output"]))
        return cls.from_stored({
            "job_name": None, "input_s3_uri": body["inputs"], "output_s3_path": f"s3://{body['Bucket']}/{prefix}",
            "content_type": body.get("content_type", DEFAULT_AUTOML_CONTENT_TYPE),
            "target_attribute_name": body["target_attribute_name"], "problem_type": body.get("problem_type"),
            "role_arn": body["RoleArn"], "tags": {}, "origin": origin})

    def _with_a_target(self) -> AutoMLRequest:
        # The schemas take any non-empty text; a column to predict is more than blanks.
        if not self.target_attribute_name.strip():
            raise InvalidRequest("target_attribute_name", "must name the column to predict")
        return self


@dataclass(frozen=True)
class DeployRequest(JobRequest):
    """Creating or updating an endpoint from a registered endpoint configuration."""

    FAMILY: ClassVar[str] = "a deployment"
    REQUIRED: ClassVar[tuple[str, ...]] = ("EndpointName", "EndpointConfigName")

    EndpointName: str
    EndpointConfigName: str
    Tags: Any = None
    adapter: str | None = None
    project: str | None = None

    @classmethod
    def from_body(cls, body: Mapping[str, Any], origin: Mapping[str, Any], endpoint_name: str,
                  own_config: str | None) -> DeployRequest:
        """Build a deployment from a schema-checked body, the endpoint its path names and that endpoint's own config.

        Without a configuration named, the endpoint deploys the one registered under its own name
        (`own_config`, None when there is none).
        """
        config_name = body.get("EndpointConfigName") or own_config
        if not config_name:
            raise MalformedRequest("EndpointConfigName", "is required")
        tags = {"Tags": body["Tags"]} if body.get("Tags") else {}
        return cls.from_stored({"EndpointName": body.get("EndpointName") or endpoint_name,
                                "EndpointConfigName": config_name, **tags, **origin})


@dataclass(frozen=True)
class TransformRequest(JobRequest):
    """A batch transform: a registered model run over the files of an input."""

    FAMILY: ClassVar[str] = "a batch transform"
    REQUIRED: ClassVar[tuple[str, ...]] = ("TransformJobName", "ModelName", "TransformInput")

    TransformJobName: str
    ModelName: str
    TransformInput: Mapping[str, Any]
    TransformOutput: Mapping[str, Any] | None = None
    TransformResources: Mapping[str, Any] | None = None
    Tags: Any = None
    adapter: str | None = None
    project: str | None = None

    @classmethod
    def from_body(cls, body: Mapping[str, Any], origin: Mapping[str, Any]) -> TransformRequest:
        """Build a transform from a schema-checked body, kept as SageMaker's CreateTransformJob names it."""
        return cls.from_stored({**body, **origin})

    @property
    def input_uri(self) -> str:
        """The input the transform reads: an s3:// URI on SageMaker, a path in the storage root locally."""
        return self.TransformInput["DataSource"]["S3DataSource"]["S3Uri"]


@dataclass(frozen=True)
class Checked:
    """A request as its platform checked it: the typed request, normalised, and the settings resolved for it."""

    request: JobRequest
    settings: dict[str, Any] | None = None


#: The typed request of each job kind (a tuning is a training job with a search).
REQUEST_TYPES: dict[str, type[JobRequest]] = {
    PIPELINE: PipelineRequest, TRAINING: TrainingRequest, TUNING: TrainingRequest, AUTOML: AutoMLRequest,
    ENDPOINT: DeployRequest, TRANSFORM: TransformRequest}


def request_of(kind: str, stored: Mapping[str, Any]) -> JobRequest:
    """Return the typed request of a job of this kind from its stored form."""
    return REQUEST_TYPES[kind].from_stored(stored)


def request_to_show(kind: str, stored: Mapping[str, Any]) -> JobRequest:
    """Return a job's typed request for an answer; a row holding less than its family requires reads as a bare one.

    A job's status is answered whatever its row holds: a row that could not run (a first release's
    with a name alone) still shows its name, its other keys kept aside.
    """
    try:
        return request_of(kind, stored)
    except InvalidRequest:
        return JobRequest.from_stored(stored)
