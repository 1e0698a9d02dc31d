"""What the local and SageMaker model lifecycles share, and the backend that runs their jobs.

A model lifecycle keeps models, endpoint configurations, endpoints, batch transforms and datasets as
records, and runs the deployments and transforms that take time as queued jobs. WithModelLifecycle
puts one in front of a backend: jobs of the lifecycle's kinds go to the lifecycle, everything else to
the backend it wraps.
"""
from __future__ import annotations

import json
import re
import threading
import uuid
from pathlib import PurePosixPath
from typing import Any

from config import Config
from db import Job, JobStatus, JobStore, Record
from mlops.base import ENDPOINT, TRAINING, TRANSFORM, Backend, ContextFactory, JobContext
from mlops.clients import ClientFactory
from mlops.errors import (BackendError, Conflict, InvalidRequest, MalformedRequest, NotFound, TooLarge, error_code,
                          error_text)
from mlops.staging import S3_URI

# Record types of the `records` table.
MODEL = "model"
ENDPOINT_CONFIG = "endpoint_config"
ENDPOINT_RECORD = "endpoint"
TRANSFORM_RECORD = "transform"
DATASET = "dataset"

IN_SERVICE = "InService"
FAILED = "Failed"
ACTIVE_JOB = (JobStatus.WAITING, JobStatus.RUNNING)
# SageMaker's real-time payload limit; an S3 object sent to an endpoint may not be larger.
MAX_INVOKE_BYTES = 6 * 1024 * 1024
CONTENT_TYPES = {".csv": "text/csv", ".json": "application/json", ".jsonl": "application/jsonlines",
                 ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".npy": "application/x-npy"}


class ModelLifecycle:
    """What the local and SageMaker lifecycles share: records, in-use checks and the queue hand-off."""

    kinds = frozenset({ENDPOINT, TRANSFORM})
    source_org = ""

    def __init__(self, config: Config, store: JobStore, clients: ClientFactory):
        self.config = config
        self.store = store
        self.clients = clients
        self._submit_lock = threading.Lock()

    # -- records ---------------------------------------------------------------------------------

    @staticmethod
    def record_id(type: str, name: str) -> str:
        return f"{type}:{name}"

    def put(self, type: str, name: str, status: str, payload: dict[str, Any], job_id: str | None = None) -> Record:
        """Store a record; AWS answers in the payload are made JSON-safe first."""
        payload = json.loads(json.dumps({"source_org": self.source_org, **payload}, default=str))
        return self.store.put_record(self.record_id(type, name), type=type, name=name, status=status,
                                     payload=payload, job_id=job_id)

    def update(self, record: Record, status: str | None = None, **changes: Any) -> Record:
        """Store a record again with a new status and payload keys changed."""
        return self.put(record.type, record.name, status or record.status, {**record.payload, **changes},
                        job_id=record.job_id)

    def find(self, type: str, name: str) -> Record | None:
        return self.store.get_record(self.record_id(type, name))

    def record(self, type: str, name: str, field: str = "id",
               missing: type[InvalidRequest] = NotFound) -> Record:
        """Return a record or raise `missing` (NotFound for a path id; a body field names its own error)."""
        found = self.find(type, name)
        if found is None:
            raise missing(field, f"no {type.replace('_', ' ')} named {name!r}")
        return found

    def records(self, type: str) -> list[Record]:
        return self.store.list_records(type)

    def endpoints_using(self, key: str, value: str) -> list[str]:
        """Names of endpoints that exist and whose payload lists value under key (model_names, ...)."""
        return [record.name for record in self.records(ENDPOINT_RECORD)
                if record.payload.get("exists", True) and value in as_list(record.payload.get(key))]

    def active_job(self, record: Record | None) -> Job | None:
        """The waiting or running job that is changing a record, if any."""
        if record is None or not record.job_id:
            return None
        job = self.store.get(record.job_id)
        return job if job and job.status in ACTIVE_JOB else None

    def check_model_deletable(self, name: str) -> None:
        users = self.endpoints_using("model_names", name)
        if users:
            raise Conflict("id", f"model {name!r} is in use by endpoint(s) {', '.join(users)}: delete them "
                                       "first", endpoints=users)
        running = [record.name for record in self.records(TRANSFORM_RECORD)
                   if record.payload.get("model_name") == name and self.active_job(record)]
        if running:
            raise Conflict("id", f"model {name!r} is in use by running transform job(s) {', '.join(running)}", transform_jobs=running)

    def check_endpoint_config_deletable(self, name: str) -> None:
        users = self.endpoints_using("endpoint_config", name)
        if users:
            raise Conflict("id", f"endpoint configuration {name!r} is in use by endpoint(s) "
                                       f"{', '.join(users)}", endpoints=users)

    def check_endpoint_deletable(self, record: Record) -> None:
        job = self.active_job(record)
        if job:
            raise Conflict("id", f"endpoint {record.name!r} is being deployed (job {job.id}, "
                                       f"{record.status}); delete it once the deployment has ended", job_id=job.id)

    # -- queue hand-off --------------------------------------------------------------------------

    def submit(self, queue: Any, kind: str, request: dict[str, Any]) -> tuple[Job, Record]:
        """Validate a deployment or transform, mark its record pending and queue the job that does it.

        The record is written before the job exists (with the job's id), so a worker that picks the
        job up at once cannot have its result overwritten by this pending state.
        """
        request = self.check(kind, request, {})
        type, name = (ENDPOINT_RECORD, request["EndpointName"]) if kind == ENDPOINT else (
            TRANSFORM_RECORD, request["TransformJobName"])
        with self._submit_lock:
            previous = self.find(type, name)
            busy = self.active_job(previous)
            if busy:
                raise Conflict("EndpointName" if kind == ENDPOINT else "TransformJobName",
                                     f"{name!r} is already being changed by job {busy.id}",
                                     job_id=busy.id)
            if kind == TRANSFORM and previous is not None:
                raise Conflict("TransformJobName", f"a transform job named {name!r} exists; names are "
                                                         "unique")
            job_id = str(uuid.uuid4())
            pending = self.mark_pending(kind, request, previous, job_id)
            try:
                job = queue.submit(kind, request, job_id=job_id)
            except BaseException:
                if previous is None:
                    self.store.delete_record(self.record_id(type, name))
                else:
                    self.put(previous.type, previous.name, previous.status, previous.payload, previous.job_id)
                raise
        # The record as queued: a worker may have moved it on already, which a GET will show.
        return job, pending

    def mark_pending(self, kind: str, request: dict[str, Any], previous: Record | None, job_id: str) -> Record:
        """Write the record of a deployment or transform that is queued."""
        origin = {"adapter": request.get("adapter"), "project": request.get("project")}
        if kind == TRANSFORM:
            return self.put(TRANSFORM_RECORD, request["TransformJobName"], "InProgress",
                            {**origin, "model_name": request["ModelName"], "raw": public_request(request)}, job_id)
        config = self.record(ENDPOINT_CONFIG, request["EndpointConfigName"], "EndpointConfigName", InvalidRequest)
        updating = previous is not None and previous.payload.get("exists", True) and previous.status != FAILED
        payload = {**(previous.payload if updating else {}), **origin,
                   "endpoint_config": config.name if not updating else previous.payload.get("endpoint_config"),
                   "target_config": config.name,
                   "model_names": sorted(set(as_list(config.payload.get("model_names"))) |
                                         set(as_list(previous.payload.get("model_names")) if updating else [])),
                   "container": config.payload.get("container"), "exists": True, "failure_reason": None}
        return self.put(ENDPOINT_RECORD, request["EndpointName"], "Updating" if updating else "Creating",
                        payload, job_id)

    def job_finished_endpoint(self, record: Record, config: Record, raw: dict[str, Any]) -> Record:
        """Record an endpoint that now serves a configuration."""
        return self.update(record, IN_SERVICE, endpoint_config=config.name, target_config=None,
                           model_names=as_list(config.payload.get("model_names")),
                           container=config.payload.get("container"), deployment=config.payload.get("deployment"),
                           raw=raw, failure_reason=None)

    # -- Backend-like interface ------------------------------------------------------------------

    def check(self, kind: str, request: dict[str, Any], secrets: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def run(self, ctx: JobContext) -> None:
        raise NotImplementedError

    def monitor(self, jobs: list[Job], context_for: ContextFactory) -> None:
        """Local jobs end inside run(); nothing to follow."""

    def cancel(self, job: Job) -> bool:
        return False

    def recover(self, job: Job) -> str:
        """Deployments and transforms are idempotent: run them again after a restart."""
        return "requeue"

    def close(self) -> None:
        """Release what the lifecycle holds."""

    # -- shared helpers --------------------------------------------------------------------------

    def read_s3_payload(self, uri: str, adapter: str | None = None) -> tuple[bytes, str]:
        """Read an s3:// object to send to an endpoint, with a content type from its name."""
        match = S3_URI.match(uri or "")
        if not match or not match.group(2):
            raise MalformedRequest("S3Uri", "must be s3://bucket/key (an http URL is never fetched)")
        bucket, key = match.group(1), match.group(2)
        s3 = self.clients.client("s3", adapter)
        try:
            head = s3.head_object(Bucket=bucket, Key=key)
            if head["ContentLength"] > MAX_INVOKE_BYTES:
                raise TooLarge("S3Uri", f"the object is {head['ContentLength']} bytes; an endpoint takes at "
                                              f"most {MAX_INVOKE_BYTES}")
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read(MAX_INVOKE_BYTES + 1)
        except InvalidRequest:
            raise
        except Exception as exc:  # botocore raises many unrelated types; the code is what matters
            code = error_code(exc)
            if code in ("404", "NoSuchKey", "NoSuchBucket", "NotFound"):
                raise NotFound("S3Uri", f"no object {uri}") from None
            raise BackendError(f"cannot read {uri}: {error_text(exc)}") from exc
        suffix = PurePosixPath(key).suffix.lower()
        return body, CONTENT_TYPES.get(suffix) or head.get("ContentType") or "application/octet-stream"

    def dataset_key(self, bucket: str | None, key: str, filename: str | None) -> tuple[str, str]:
        """Return a safe (bucket, key) for an upload: each part of the key passes secure_filename."""
        from werkzeug.utils import secure_filename

        bucket = bucket or self.config.s3_bucket or "datasets"
        if "\x00" in key or "\\" in key or key.startswith("/") or re.match(r"^[A-Za-z]:", key):
            raise MalformedRequest("Key", "must be a relative key without backslashes")
        parts = [part for part in key.split("/")]
        if any(part in ("..", ".") for part in parts):
            raise MalformedRequest("Key", "must not contain '.' or '..' parts")
        if parts[-1] == "":
            parts[-1] = filename or ""
        parts = [part for part in parts[:-1] if part] + [parts[-1]]
        safe = [secure_filename(part) for part in parts]
        if not safe[-1]:
            raise MalformedRequest("Key", "names no file: end it with a file name, or upload a named file")
        if any(not part for part in safe):
            raise MalformedRequest("Key", "has a part with no safe characters")
        return bucket, "/".join(safe)


# -- shared small helpers ----------------------------------------------------------------------

def finished_training_job(store: JobStore, job_id: str) -> Job:
    """Return a COMPLETED training job of this executor, or raise InvalidRequest naming TrainingJobId."""
    job = store.get(job_id.lower())
    if job is None or job.kind != TRAINING:
        raise InvalidRequest("TrainingJobId", f"no training job {job_id}")
    if job.status is not JobStatus.COMPLETED:
        raise Conflict("TrainingJobId", f"training job {job_id} is {job.status.value}; a model can be "
                                              "registered once it is COMPLETED")
    return job


def model_body(body: dict[str, Any]) -> dict[str, Any]:
    """Return the register-model body an endpoint registration carries."""
    return {key: body[key] for key in ("ModelName", "ExecutionRoleArn", "PrimaryContainer", "TrainingJobId",
                                       "InstanceType", "Tags") if key in body}


def production_variant(body: dict[str, Any]) -> dict[str, Any]:
    """Return the one production variant an endpoint registration describes."""
    return {"VariantName": body.get("VariantName", "AllTraffic"), "ModelName": body["ModelName"],
            "InitialInstanceCount": body.get("InitialInstanceCount", 1), "InstanceType": body.get("InstanceType")}


def public_request(body: dict[str, Any]) -> dict[str, Any]:
    """Return a request without the fields the executor adds for itself."""
    return {key: value for key, value in body.items() if key not in ("adapter", "project")}


def as_list(value: Any) -> list[Any]:
    """Return a payload value as a list: a list as it is, one value in a list, None as []."""
    return list(value) if isinstance(value, (list, tuple)) else ([] if value is None else [value])



# -- wiring ------------------------------------------------------------------------------------

def make_model_lifecycle(config: Config, store: JobStore, clients: ClientFactory, backend_name: str) -> ModelLifecycle:
    """Return the lifecycle for a backend: SageMaker's for 'sagemaker', else the local one."""
    # Imported here: both modules import this one.
    if backend_name == "sagemaker":
        from mlops.sagemaker.serving import SageMakerModelLifecycle

        return SageMakerModelLifecycle(config, store, clients)
    from mlops.local.serving import LocalModelLifecycle

    return LocalModelLifecycle(config, store, clients)


class WithModelLifecycle(Backend):
    """A backend that also runs endpoint and transform jobs, through a model lifecycle.

    Jobs of the lifecycle's kinds go to the lifecycle, every other job to the inner backend. Logs
    and outputs are the inner backend's, and so is anything beyond the Backend interface that
    callers look up by name (stop_all, ready_check, service, ...). Routes reach the lifecycle as
    `model_lifecycle`.
    """

    def __init__(self, inner: Backend, lifecycle: ModelLifecycle):
        self.inner = inner
        self.model_lifecycle = lifecycle

    # Backend declares these per class; a wrapper's are its inner backend's, so read-only properties
    # stand in for them (the ignores: mypy will not let a property replace a writable ClassVar).
    @property
    def name(self) -> str:  # type: ignore[override]
        return self.inner.name

    @property
    def remote(self) -> bool:  # type: ignore[override]
        return self.inner.remote

    @property
    def kinds(self) -> frozenset[str]:  # type: ignore[override]
        return frozenset(self.inner.kinds) | self.model_lifecycle.kinds

    def _runs(self, kind: str) -> bool:
        return kind in self.model_lifecycle.kinds

    def check(self, kind: str, request: dict[str, Any], secrets: dict[str, Any]) -> dict[str, Any]:
        target = self.model_lifecycle if self._runs(kind) else self.inner
        return target.check(kind, request, secrets)

    def run(self, ctx: JobContext) -> None:
        (self.model_lifecycle if self._runs(ctx.job.kind) else self.inner).run(ctx)

    def cancel(self, job: Job) -> bool:
        return (self.model_lifecycle if self._runs(job.kind) else self.inner).cancel(job)

    def recover(self, job: Job) -> str:
        return (self.model_lifecycle if self._runs(job.kind) else self.inner).recover(job)

    def monitor(self, jobs: list[Job], context_for: ContextFactory) -> None:
        others = [job for job in jobs if not self._runs(job.kind)]
        if others:
            self.inner.monitor(others, context_for)
        ours = [job for job in jobs if self._runs(job.kind)]
        if ours:
            self.model_lifecycle.monitor(ours, context_for)

    def log_location(self, job: Job) -> str:
        return self.inner.log_location(job)

    def read_log(self, job: Job) -> str:
        return self.inner.read_log(job)

    def output_artifacts(self, job: Job) -> dict[str, Any]:
        return self.inner.output_artifacts(job)

    def close(self) -> None:
        self.model_lifecycle.close()
        self.inner.close()

    def __getattr__(self, name: str) -> Any:
        # Reached only for names this class lacks; `inner` itself is looked up in __dict__, so a
        # half-built instance (copy, pickle) raises AttributeError instead of recursing.
        inner = self.__dict__.get("inner")
        if inner is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(inner, name)


def with_model_lifecycle(backend: Backend, config: Config, store: JobStore, clients: ClientFactory) -> Backend:
    """Return the backend able to run endpoint and transform jobs too; one that can already is returned as it is."""
    if isinstance(backend, WithModelLifecycle):
        return backend
    return WithModelLifecycle(backend, make_model_lifecycle(config, store, clients, backend.name))
