"""What the local and SageMaker platforms share of their records: the record book and the record rules.

A platform keeps models, endpoint configurations, endpoints, batch transforms and datasets as
records, and runs the deployments and transforms that take time as queued jobs. It reaches the
records table through a RecordBook, never the store itself.
"""
from __future__ import annotations

import json
import re
import threading
from contextlib import contextmanager
from pathlib import PurePosixPath
from typing import Any, Collection, Iterator

from config import Config
from db import Record, Store
from job import ENDPOINT, TRAINING, TRANSFORM, Job, JobStatus
from mlops.aws import AWS_ERRORS, ClientFactory, is_not_found
from mlops.aws_statuses import CREATING, FAILED, IN_PROGRESS, IN_SERVICE, UPDATING
from mlops.errors import BackendError, Conflict, InvalidRequest, MalformedRequest, NotFound, TooLarge, error_text
from mlops.job_files import open_file
from mlops.job_ids import find_job
from mlops.job_requests import DeployRequest, JobRequest, TransformRequest
from mlops.staging import S3_URI, resolve_storage_path

# Record types of the `records` table.
MODEL = "model"
ENDPOINT_CONFIG = "endpoint_config"
ENDPOINT_RECORD = "endpoint"
TRANSFORM_RECORD = "transform"
DATASET = "dataset"

# A local model whose folder is complete; while it is copied in the background it is Creating.
CREATED = "Created"
# An endpoint taken down with its configuration and models kept; Essedum's word for it.
UNDEPLOYED = "Undeployed"
ACTIVE_JOB = (JobStatus.WAITING, JobStatus.RUNNING)
# SageMaker's real-time payload limit; an S3 object sent to an endpoint may not be larger.
MAX_INVOKE_BYTES = 6 * 1024 * 1024
# A file name of common file systems, and an S3 key.
MAX_NAME_BYTES = 255
MAX_KEY_BYTES = 1024
CONTENT_TYPES = {".csv": "text/csv", ".json": "application/json", ".jsonl": "application/jsonlines",
                 ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".npy": "application/x-npy"}


class RecordBook:
    """The records table, and the job lookups the record rules need: all a platform may touch of the store."""

    def __init__(self, store: Store):
        self._store = store

    def put(self, record_id: str, *, type: str, name: str, status: str, payload: dict[str, Any],
            job_id: str | None = None) -> Record:
        """Store a record."""
        return self._store.put_record(record_id, type=type, name=name, status=status, payload=payload, job_id=job_id)

    def get(self, record_id: str) -> Record | None:
        """Return a record by id, or None."""
        return self._store.get_record(record_id)

    def list(self, type: str) -> list[Record]:
        """Return every record of a type."""
        return self._store.list_records(type)

    def delete(self, record_id: str) -> bool:
        """Delete a record; False when there was none."""
        return self._store.delete_record(record_id)

    def job(self, job_id: str) -> Job | None:
        """Return the job that made or changes a record, or None."""
        return self._store.get(job_id)

    def find_job(self, text: str, field: str, kinds: Collection[str]) -> Job:
        """Return the job of these kinds a whole id or a unique beginning of one names (NotFound naming field)."""
        return find_job(self._store, text, field, kinds)


class ModelRecords:
    """The record rules both platforms keep: records, in-use checks and the hand-off to the queue."""

    #: The job kinds that change records: a deployment cannot be stopped half-way on either platform.
    record_kinds = frozenset({ENDPOINT, TRANSFORM})
    stoppable_record_kinds = frozenset({TRANSFORM})
    source_org = ""

    def __init__(self, config: Config, book: RecordBook, clients: ClientFactory):
        self.config = config
        self.book = book
        self.clients = clients
        self._submit_lock = threading.Lock()

    # -- records ---------------------------------------------------------------------------------

    @staticmethod
    def record_id(type: str, name: str) -> str:
        return f"{type}:{name}"

    def put(self, type: str, name: str, status: str, payload: dict[str, Any], job_id: str | None = None) -> Record:
        """Store a record; AWS answers in the payload are made JSON-safe first."""
        payload = json.loads(json.dumps({"source_org": self.source_org, **payload}, default=str))
        return self.book.put(self.record_id(type, name), type=type, name=name, status=status,
                                     payload=payload, job_id=job_id)

    def update(self, record: Record, status: str | None = None, **changes: Any) -> Record:
        """Store a record again with a new status and payload keys changed."""
        return self.put(record.type, record.name, status or record.status, {**record.payload, **changes},
                        job_id=record.job_id)

    def find(self, type: str, name: str) -> Record | None:
        return self.book.get(self.record_id(type, name))

    def record(self, type: str, name: str, field: str = "id",
               missing: type[InvalidRequest] = NotFound) -> Record:
        """Return a record or raise `missing` (NotFound for a path id; a body field names its own error)."""
        found = self.find(type, name)
        if found is None:
            raise missing(field, f"no {type.replace('_', ' ')} named {name!r}")
        return found

    def records(self, type: str) -> list[Record]:
        return self.book.list(type)

    def endpoints_using(self, key: str, value: str) -> list[str]:
        """Names of endpoints that exist and whose payload lists value under key (model_names, ...)."""
        return [record.name for record in self.records(ENDPOINT_RECORD)
                if record.payload.get("exists", True) and value in as_list(record.payload.get(key))]

    def active_job(self, record: Record | None) -> Job | None:
        """The waiting or running job that is changing a record, if any."""
        if record is None or not record.job_id:
            return None
        job = self.book.job(record.job_id)
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

    @contextmanager
    def reserve(self, kind: str, request: JobRequest, job_id: str) -> Iterator[Record | None]:
        """Mark the record a checked deployment or transform changes pending, for the job the caller queues inside.

        The record is written before the job exists (with the job's id, record.job_id), so a worker
        that picks the job up at once cannot have its result overwritten by this pending state. If
        queueing fails, the record is put back as it was.
        """
        if not isinstance(request, (DeployRequest, TransformRequest)):
            yield None
            return
        type, name = (ENDPOINT_RECORD, request.EndpointName) if isinstance(request, DeployRequest) else (
            TRANSFORM_RECORD, request.TransformJobName)
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
            pending = self.mark_pending(kind, request, previous, job_id)
            try:
                yield pending
            except BaseException:
                if previous is None:
                    self.book.delete(self.record_id(type, name))
                else:
                    self.put(previous.type, previous.name, previous.status, previous.payload, previous.job_id)
                raise

    def mark_pending(self, kind: str, request: DeployRequest | TransformRequest, previous: Record | None,
                     job_id: str) -> Record:
        """Write the record of a deployment or transform that is queued."""
        origin = {"adapter": request.adapter, "project": request.project}
        if isinstance(request, TransformRequest):
            return self.put(TRANSFORM_RECORD, request.TransformJobName, IN_PROGRESS,
                            {**origin, "model_name": request.ModelName, "raw": public_request(request.to_stored())},
                            job_id)
        config = self.record(ENDPOINT_CONFIG, request.EndpointConfigName, "EndpointConfigName", InvalidRequest)
        updating = previous is not None and previous.payload.get("exists", True) and previous.status != FAILED
        payload = {**(previous.payload if updating else {}), **origin,
                   "endpoint_config": config.name if not updating else previous.payload.get("endpoint_config"),
                   "target_config": config.name,
                   "model_names": sorted(set(as_list(config.payload.get("model_names"))) |
                                         set(as_list(previous.payload.get("model_names")) if updating else [])),
                   "container": config.payload.get("container"), "exists": True, "failure_reason": None}
        return self.put(ENDPOINT_RECORD, request.EndpointName, UPDATING if updating else CREATING,
                        payload, job_id)

    def job_finished_endpoint(self, record: Record, config: Record, raw: dict[str, Any]) -> Record:
        """Record an endpoint that now serves a configuration."""
        return self.update(record, IN_SERVICE, endpoint_config=config.name, target_config=None,
                           model_names=as_list(config.payload.get("model_names")),
                           container=config.payload.get("container"), deployment=config.payload.get("deployment"),
                           raw=raw, failure_reason=None)

    # -- endpoints and datasets: the shared steps -------------------------------------------------

    def undeploy_endpoint(self, name: str, adapter: str | None = None) -> Record:
        """Take an endpoint down and keep its configuration and models; deploy_model brings it back."""
        record = self.record(ENDPOINT_RECORD, name)
        self.check_endpoint_deletable(record)
        if record.payload.get("exists", True):
            self.take_down(record, adapter)
        return self.update(record, UNDEPLOYED, exists=False, target_config=None)

    def import_dataset(self, bucket: str | None, key: str | None, local_path: str, origin: dict[str, Any],
                       description: str = "") -> Record:
        """Add a file of the storage root as a dataset, as if it had been uploaded."""
        path = resolve_storage_path(self.config.storage_root, local_path, "local_dataset_path")
        try:
            handle, _size = open_file(path.parent, path.name)
        except FileNotFoundError:
            raise NotFound("local_dataset_path", f"no file {local_path!r} in the storage root") from None
        except OSError:
            raise InvalidRequest("local_dataset_path", f"{local_path!r} is not a plain file") from None
        with handle:
            return self.upload_dataset(bucket, key or "", handle, path.name, origin, description)

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
        except AWS_ERRORS as exc:
            if is_not_found(exc):
                raise NotFound("S3Uri", f"no object {uri}") from None
            raise BackendError(f"cannot read {uri}: {error_text(exc)}") from exc
        suffix = PurePosixPath(key).suffix.lower()
        return body, CONTENT_TYPES.get(suffix) or head.get("ContentType") or "application/octet-stream"

    def dataset_key(self, bucket: str | None, key: str, filename: str | None) -> tuple[str, str, str]:
        """Return a safe (bucket, key, key as given) for an upload: each part of the key passes secure_filename.

        Distinct names can make one safe key ('données.csv' and 'donnees.csv'): the second is a
        Conflict, never a silent overwrite of the first; the same name again replaces its file.
        """
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
        if any(len(part.encode()) > MAX_NAME_BYTES for part in safe) or len("/".join(safe).encode()) > MAX_KEY_BYTES:
            raise MalformedRequest("Key", f"has a part longer than {MAX_NAME_BYTES} bytes, or is longer than "
                                          f"{MAX_KEY_BYTES} bytes")
        original, safe_key = "/".join(parts), "/".join(safe)
        existing = self.find(DATASET, f"{bucket}/{safe_key}")
        if existing is not None and existing.payload.get("original_key", existing.payload.get("key")) != original:
            raise Conflict("Key", f"{original!r} is stored as {safe_key!r}, which already holds the upload named "
                                  f"{existing.payload.get('original_key', existing.payload.get('key'))!r}")
        return bucket, safe_key, original


# -- shared small helpers ----------------------------------------------------------------------

def finished_training_job(book: RecordBook, job_id: str) -> Job:
    """Return a COMPLETED training job of this executor by its id or a unique beginning of it."""
    try:
        job = book.find_job(job_id, "TrainingJobId", kinds=(TRAINING,))
    except NotFound as exc:
        raise InvalidRequest("TrainingJobId", str(exc)) from None
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
