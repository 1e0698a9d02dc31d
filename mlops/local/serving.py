"""The model lifecycle on this machine: model folders, endpoints loaded for inference, batch inference,
datasets under the storage root.

A local model is a folder with `model.pt` and, usually, `code/inference.py` (the SageMaker PyTorch
handlers model_fn, input_fn, predict_fn, output_fn); the same folder tarred is what SageMaker serves.
"""
from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import stat
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any, BinaryIO, Callable, Iterator, cast

from config import Config
from db import Record
from job import ENDPOINT, TRANSFORM, Job, JobStatus
from mlops.aws import ClientFactory
from mlops.errors import (BackendError, Conflict, DeadlineExceeded, InvalidRequest, MalformedRequest,
                          NotAcceptable, NotFound, NotSupported, Overloaded, StorageFull, TooLarge)
from mlops.exports import Export, file_export, folder_export
from mlops.job_files import (TooManyEntries, UnsafeFile, copy_tree, copyable_tree, open_file, regular_files,
                             remove_tree)
from mlops.local.model_host import ModelFailure, ModelRequestRefused, ModelWorker
from mlops.aws_statuses import COMPLETED, CREATING, FAILED, IN_SERVICE, STOPPED, UPDATING
from mlops.local.limits import confinement_for
from mlops.platform import Ran, Stop
from mlops.records import (CONTENT_TYPES, CREATED, DATASET, ENDPOINT_CONFIG, ENDPOINT_RECORD, MAX_INVOKE_BYTES, MODEL,
                           TRANSFORM_RECORD, ModelRecords, RecordBook, as_list, finished_training_job, model_body,
                           production_variant, public_request)
from mlops.reporter import JobReporter
from mlops.sandbox import sandbox_for
from mlops.job_requests import DeployRequest, JobRequest, TransformRequest
from mlops.staging import S3_URI, resolve_storage_path

logger = logging.getLogger(__name__)

_COPY_CHUNK = 1024 * 1024
CANCEL_CHECK_S = 0.5
# A model folder up to this size is copied (registered) or archived (exported) while its request waits (a
# second or so); a larger one in the background, so that no request thread waits on a disk for minutes.
INLINE_COPY_BYTES = 64 << 20
# A batch transform reads each input file whole (its records are split in memory).
MAX_TRANSFORM_FILE_BYTES = 1 << 30


class LocalModelLifecycle(ModelRecords):
    """Models as folders, endpoints as sandboxed model workers, batch inference as a local job."""

    source_org = "Local"

    def __init__(self, config: Config, book: RecordBook, clients: ClientFactory):
        super().__init__(config, book, clients)
        self.models_root = config.data_dir / "models"
        self.datasets_root = config.storage_root / "datasets"
        self.sandbox = sandbox_for(config)
        self.confinement = confinement_for(config)
        self.python = config.python or sys.executable
        # A model's inference.py is user code: it runs in a worker process of its own, never in the
        # executor (model_host.py). Loads are serialised, so that two first requests after a restart
        # start one worker, not two.
        self._served: dict[str, ServedModel] = {}
        self._load_lock = threading.Lock()
        # Models whose folder a background thread is copying, by name.
        self._copies: dict[str, threading.Thread] = {}
        self._copies_lock = threading.Lock()
        # Models whose model.tar.gz a background thread is building, by name.
        self._exports: dict[str, threading.Thread] = {}
        self._exports_lock = threading.RLock()
        # The batch transforms this process runs now, by job id: what letting one go flags and stops.
        self._batches: dict[str, _Batch] = {}
        self._batches_lock = threading.Lock()
        self._fail_interrupted_copies()
        self._remove_unfinished_exports()

    # -- models ----------------------------------------------------------------------------------

    def register_model(self, body: dict[str, Any], origin: dict[str, Any]) -> Record:
        """Register a model folder (a finished training job's, or one in the storage root).

        The folder is copied: the model then stays as registered, whatever happens to its source. A
        small one is copied at once (Created); a larger one in the background, and its record says
        Creating until it is Created or Failed.
        """
        name = body["ModelName"]
        if self.find(MODEL, name):
            raise Conflict("ModelName", f"a model named {name!r} is registered")
        source, container = self._model_source(body)
        field = "TrainingJobId" if body.get("TrainingJobId") else "ModelDataUrl"
        _check_model_folder(source, field)
        try:
            size = copyable_tree(source.parent, source.name).size
        except TooManyEntries as exc:
            raise TooLarge(field, str(exc)) from None
        if size > self.config.max_copy_bytes:
            raise TooLarge(field, f"the model folder holds {size} bytes, more than EXECUTOR_MAX_COPY_BYTES "
                                  f"({self.config.max_copy_bytes})")
        target = self.models_root / name
        payload = {**origin, "description": body.get("Description", ""), "model_dir": str(target),
                   "container": container, "artifacts": {"model_dir": str(target), "files": []},
                   "training_job": body.get("TrainingJobId"), "raw": public_request(body)}
        if size <= INLINE_COPY_BYTES:
            return self.put(MODEL, name, CREATED, self._copy_model(source, target, field, payload))
        with self._copies_lock:
            record = self.put(MODEL, name, CREATING, payload)
            copy = threading.Thread(target=self._copy_in_background, args=(source, target, field, record),
                                    name=f"model-copy-{name}", daemon=True)
            self._copies[name] = copy
        copy.start()
        return record

    def _copy_model(self, source: Path, target: Path, field: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Copy a model folder to target and return its payload with the files copied."""
        # A folder of the model's name that no record owns is what an interrupted copy left.
        remove_tree(target)
        try:
            tree = copy_tree(source, target, self.config.max_copy_bytes)
        except TooManyEntries as exc:
            raise TooLarge(field, str(exc)) from None
        except UnsafeFile as exc:
            raise InvalidRequest(field, f"the model folder changed while it was copied: {exc}") from None
        files = [PurePath(entry.relative).relative_to(source.name).as_posix() for entry in tree.files]
        return {**payload, "artifacts": {**payload["artifacts"], "files": files}}

    def _copy_in_background(self, source: Path, target: Path, field: str, record: Record) -> None:
        try:
            payload = self._copy_model(source, target, field, record.payload)
        except Exception as exc:  # any failure is the model's failure reason
            reason = exc.message if isinstance(exc, InvalidRequest) else f"{type(exc).__name__}: {exc}"
            logger.warning("model %s: its folder could not be copied: %s", record.name, reason)
            self.put(MODEL, record.name, FAILED, {**record.payload, "failure_reason": reason})
        else:
            self.put(MODEL, record.name, CREATED, payload)
        finally:
            with self._copies_lock:
                self._copies.pop(record.name, None)

    def _fail_interrupted_copies(self) -> None:
        """Mark models whose copy an earlier run of the executor left unfinished Failed, and remove the copy."""
        for record in self.records(MODEL):
            if record.status == CREATING:
                remove_tree(self.models_root / record.name)
                self.put(MODEL, record.name, FAILED, {
                    **record.payload, "failure_reason": "the executor stopped while the model folder was copied; "
                                                        "delete the model and register it again"})

    def _model_source(self, body: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
        if body.get("TrainingJobId"):
            if body.get("Containers") or body.get("PrimaryContainer"):
                raise MalformedRequest("TrainingJobId", "give a training job or containers, not both")
            job = finished_training_job(self.book, body["TrainingJobId"])
            if job.backend != "local" or not job.artifacts.get("model_dir"):
                raise InvalidRequest("TrainingJobId", "is not a local training job with a model folder")
            folder = Path(job.output_dir) / "model"
            return folder, {"Image": "local", "ModelDataUrl": str(folder),
                            "Environment": {"SAGEMAKER_PROGRAM": "inference.py"}}
        containers = body.get("Containers") or ([body["PrimaryContainer"]] if body.get("PrimaryContainer") else [])
        if len(containers) != 1:
            raise InvalidRequest("Containers", "the local backend serves exactly one container")
        container = containers[0]
        if not container.get("ModelDataUrl"):
            raise InvalidRequest("Containers.0.ModelDataUrl", "is required: a model folder in the storage root")
        if S3_URI.match(container["ModelDataUrl"]):
            raise InvalidRequest("Containers.0.ModelDataUrl", "the local backend serves model folders of the "
                                                              "storage root, not s3:// URIs")
        folder = resolve_storage_path(self.config.storage_root, container["ModelDataUrl"],
                                      "Containers.0.ModelDataUrl")
        return folder, container

    def delete_model(self, name: str, adapter: str | None = None) -> None:
        record = self.record(MODEL, name)
        with self._copies_lock:
            if name in self._copies:
                raise Conflict("id", f"model {name!r} is being copied; delete it once it is Created or Failed")
        with self._exports_lock:
            if name in self._exports:
                raise Conflict("id", f"model.tar.gz of model {name!r} is being built; delete the model once its "
                                     f"export is Created or Failed")
            self.check_model_deletable(name)
            self.book.delete(record.id)
            self._export_target(name).unlink(missing_ok=True)
        shutil.rmtree(self.models_root / name, ignore_errors=True)

    # -- endpoint configurations and endpoints ---------------------------------------------------

    def register_endpoint(self, body: dict[str, Any], origin: dict[str, Any]) -> Record:
        """Create an endpoint configuration, and its model when the body describes one."""
        config_name = body["EndpointConfigName"]
        if self.find(ENDPOINT_CONFIG, config_name):
            raise Conflict("EndpointConfigName", f"an endpoint configuration named {config_name!r} exists")
        created = None
        if body.get("PrimaryContainer") or body.get("TrainingJobId"):
            created = self.register_model(model_body(body), origin)
        model = self.record(MODEL, body["ModelName"], "ModelName", InvalidRequest)
        try:
            return self.put(ENDPOINT_CONFIG, config_name, "Created", {
                **origin, "description": body.get("Description", ""), "model_names": [model.name],
                "container": model.payload.get("container"), "deployment": production_variant(body),
                "artifacts": model.payload.get("artifacts"), "raw": public_request(body)})
        except BaseException:
            if created is not None:
                self.delete_model(created.name)
            raise

    def delete_endpoint_config(self, name: str, adapter: str | None = None) -> None:
        record = self.record(ENDPOINT_CONFIG, name)
        self.check_endpoint_config_deletable(name)
        self.book.delete(record.id)

    def delete_endpoint(self, name: str, adapter: str | None = None) -> None:
        record = self.record(ENDPOINT_RECORD, name)
        self.check_endpoint_deletable(record)
        self.take_down(record, adapter)
        self.book.delete(record.id)

    def take_down(self, record: Record, adapter: str | None) -> None:
        with self._load_lock:
            served = self._served.pop(record.name, None)
        if served is not None:
            served.worker.close()

    def explain(self, name: str, body: bytes, content_type: str, adapter: str | None = None) -> dict[str, Any]:
        """Explain one image's prediction: probabilities and occlusion saliency, through invoke() only."""
        # Imported here: numpy and Pillow add a quarter of a second to every start, and only this needs them.
        from mlops.explanations import MAX_GRID, decode_request, occlusion, probabilities_from_predictions

        self.record(ENDPOINT_RECORD, name)  # an unknown endpoint is named before the payload is read
        deadline = time.monotonic() + self.config.explain_timeout
        image, label = decode_request(body, content_type)
        # Each call carries as many images as fit in the payload limit an endpoint takes, and at most a row
        # of the finest grid: a deadline then stops the model a few windows on and can say how far it got.
        per_call = max(1, min(MAX_GRID, MAX_INVOKE_BYTES // (image.size * 4 + 16)))
        # occlusion() asks for the image itself first, then for all its covered variants (windows).
        asked: list[int] = []
        answered: list[dict[str, float]] = []

        def predict(images: list[Any]) -> list[dict[str, float]]:
            asked.append(len(images))
            answered.clear()
            for start in range(0, len(images), per_call):
                payload = json.dumps({"instances": [item.tolist() for item in images[start:start + per_call]]})
                answer, _ = self._invoke(name, payload.encode(), "application/json", "application/json", deadline)
                answered.extend(probabilities_from_predictions(answer))
            return list(answered)

        try:
            return {"endpoint": name, **occlusion(image, predict, label)}
        except ValueError as exc:
            raise NotSupported("id", f"endpoint {name!r} cannot be explained here: {exc}") from None
        except (DeadlineExceeded, Overloaded) as exc:
            # Refused by a busy model before the time was up: that is a 503 to retry, not a deadline.
            if isinstance(exc, Overloaded) and time.monotonic() < deadline:
                raise
            got = (f"after {len(answered)} of {asked[-1]} occlusion windows" if len(asked) > 1 else
                   "before the image itself was predicted")
            raise DeadlineExceeded(f"explaining endpoint {name!r} took longer than EXECUTOR_EXPLAIN_TIMEOUT "
                                   f"({self.config.explain_timeout:g} s) and stopped {got}: {exc}") from None

    def invoke(self, name: str, body: bytes, content_type: str, accept: str | None,
               adapter: str | None = None) -> tuple[bytes, str]:
        """Run the endpoint's model on one request and return (answer, content type)."""
        return self._invoke(name, body, content_type, accept)

    def _invoke(self, name: str, body: bytes, content_type: str, accept: str | None,
                deadline: float | None = None) -> tuple[bytes, str]:
        record = self.record(ENDPOINT_RECORD, name)
        if record.status != IN_SERVICE:
            raise Conflict("id", f"endpoint {name!r} is {record.status}, not InService",
                                 endpoint_status=record.status)
        served = self._served_model(record)
        try:
            return served.worker.invoke(body, content_type, accept or "application/json", deadline)
        except ModelRequestRefused as exc:
            if exc.kind == "accept":
                raise NotAcceptable("Accept", str(exc)) from None
            if exc.kind == "too_large":
                raise TooLarge("body", str(exc)) from None
            raise MalformedRequest("body", str(exc)) from None

    def _served_model(self, record: Record) -> "ServedModel":
        # Looked up without the load lock first: a model loading for minutes elsewhere must not hold up
        # requests to endpoints already served (one dict read; a load replaces the entry whole).
        wanted = record.payload.get("endpoint_config")
        served = self._served.get(record.name)
        if served is None or served.config_name != wanted:
            with self._load_lock:
                served = self._served.get(record.name)
                if served is None or served.config_name != wanted:
                    # After a restart the endpoint is still InService in the store: load its model again.
                    config = self.record(ENDPOINT_CONFIG, wanted, "EndpointConfigName", Conflict)
                    served = self._load(record.name, config)
        return served

    def _load(self, endpoint: str, config: Record) -> "ServedModel":
        """Start a worker with the configuration's model and serve the endpoint from it; call with the load lock."""
        worker = self._worker(config.payload["model_names"][0], f"endpoint-{endpoint}", line=self.config.model_queue,
                              line_wait_s=self.config.model_queue_wait)
        worker.start()
        previous = self._served.get(endpoint)
        served = self._served[endpoint] = ServedModel(config.name, worker)
        if previous is not None:
            previous.worker.close()
        return served

    def _worker(self, model_name: str, marker: str, line: int = 0, line_wait_s: float = 0.0) -> ModelWorker:
        model = self._usable_model(model_name, "ModelName", Conflict)
        # The folder by name, not the stored path: a data folder moved since still serves its models.
        return ModelWorker(self.sandbox, self.python, self.models_root / model.name, marker, line, line_wait_s,
                           self.confinement)

    def _usable_model(self, name: str, field: str, error: type[InvalidRequest]) -> Record:
        """Return a model's record when its folder is complete (Created); raise error naming why not."""
        model = self.record(MODEL, name, field, error)
        if model.status != CREATED:
            reason = model.payload.get("failure_reason")
            raise error(field, f"model {name!r} is {model.status}{f': {reason}' if reason else ''}; it serves "
                               "once Created")
        return model

    # -- jobs ------------------------------------------------------------------------------------

    def check_record_job(self, kind: str, request: JobRequest) -> JobRequest:
        """Validate a deployment or transform and return it."""
        if isinstance(request, DeployRequest):
            config = self.record(ENDPOINT_CONFIG, request.EndpointConfigName, "EndpointConfigName", InvalidRequest)
            self._usable_model(config.payload["model_names"][0], "EndpointConfigName", InvalidRequest)
            return request
        if not isinstance(request, TransformRequest):
            raise TypeError(f"a {kind} job takes a deployment or a transform, not {type(request).__name__}")
        self._usable_model(request.ModelName, "ModelName", InvalidRequest)
        uri = request.input_uri
        field = "TransformInput.DataSource.S3DataSource.S3Uri"
        if S3_URI.match(uri):
            raise InvalidRequest(field, "the local backend reads inputs from the storage root: give a relative path")
        if not resolve_storage_path(self.config.storage_root, uri, field).exists():
            raise InvalidRequest(field, f"no file or folder {uri!r} in the storage root")
        return request

    def run_record_job(self, ctx: JobReporter) -> Ran:
        """Deploy a model or run a batch transform to its end."""
        if ctx.job.kind == ENDPOINT:
            self._deploy(ctx)
        else:
            self._transform(ctx)
        return Ran.ENDED

    def _deploy(self, ctx: JobReporter) -> None:
        request = cast(DeployRequest, ctx.request)
        record = self.record(ENDPOINT_RECORD, request.EndpointName)
        creating = record.status == CREATING
        ctx.set_phase(CREATING if creating else UPDATING, "loading the model")
        try:
            config = self.record(ENDPOINT_CONFIG, request.EndpointConfigName, "EndpointConfigName", InvalidRequest)
            with self._load_lock:
                self._load(record.name, config)
        except Exception as exc:  # a model that cannot load fails the deployment, whatever the reason
            reason = f"the model could not be loaded: {exc}" if isinstance(exc, ModelFailure) else (
                f"the model could not be loaded: {type(exc).__name__}: {exc}")
            if creating:
                reason = self._fail_create(record, reason)
            else:
                self.update(record, None, target_config=None, failure_reason=reason)
                reason += f"; the endpoint still serves {record.payload.get('endpoint_config')}"
            ctx.finish(JobStatus.ERROR, reason)
            return
        self.job_finished_endpoint(record, config, {"EndpointName": record.name, "EndpointConfigName": config.name,
                                                    "EndpointStatus": IN_SERVICE})
        ctx.finish(JobStatus.COMPLETED)

    def _fail_create(self, record: Record, reason: str) -> str:
        """Remove what a failed endpoint creation made (its configuration) and say what remains."""
        config_name = record.payload.get("target_config")
        deleted = []
        if config_name and not set(self.endpoints_using("endpoint_config", config_name)) - {record.name}:
            self.book.delete(self.record_id(ENDPOINT_CONFIG, config_name))
            deleted.append(f"endpoint configuration {config_name}")
        remaining = [f"model {name}" for name in as_list(record.payload.get("model_names"))]
        self.update(record, FAILED, exists=False, failure_reason=reason,
                    cleanup={"deleted": deleted, "remaining": remaining})
        return f"{reason}; removed: {', '.join(deleted) or 'nothing'}; remaining: {', '.join(remaining) or 'nothing'}"

    def _transform(self, ctx: JobReporter) -> None:
        # Listed before anything else: letting the job go finds it however early the lease lapses.
        batch = _Batch()
        with self._batches_lock:
            self._batches[ctx.job_id] = batch
        try:
            self._run_transform(ctx, batch)
        finally:
            with self._batches_lock:
                self._batches.pop(ctx.job_id, None)

    def _run_transform(self, ctx: JobReporter, batch: _Batch) -> None:
        request = cast(TransformRequest, ctx.request)
        record = self.record(TRANSFORM_RECORD, request.TransformJobName)
        field = "TransformInput.DataSource.S3DataSource.S3Uri"
        source = resolve_storage_path(self.config.storage_root, request.input_uri, field)
        out_dir = ctx.job_dir / "output" / "transform"
        out_dir.mkdir(parents=True, exist_ok=True)
        ctx.set_phase("Transforming", f"reading {source.name}")
        worker = None
        try:
            self.record(MODEL, request.ModelName, "ModelName", InvalidRequest)
            worker = batch.worker = self._worker(request.ModelName, ctx.job_id)
            batch.check_kept()  # before a load that may take minutes
            worker.start()
            counts = run_batch(worker, source, out_dir, request, ctx.cancel_requested, batch.let_go)
            # Listed whole (TooManyEntries past the walk's bound): the record names every answer file.
            entries, _more = regular_files(ctx.job_dir, out_dir.relative_to(ctx.job_dir), None)
        except Exception as exc:  # any failure is the transform job's failure reason
            batch.check_kept()  # a worker killed by letting go is no failure of the model's
            reason = str(exc) if isinstance(exc, ModelFailure) else f"{type(exc).__name__}: {exc}"
            self.update(record, FAILED, failure_reason=reason)
            ctx.finish(JobStatus.ERROR, reason)
            return
        finally:
            if worker is not None:
                worker.close()
        # A stop answered true after the last check still ends the job stopped, as promised.
        stopped = counts["stopped"] or ctx.cancel_requested()
        batch.check_kept()
        files = [entry.relative for entry in entries]
        artifacts = {"output_dir": str(out_dir), "files": files, **counts}
        ctx.set_artifacts(artifacts)
        if stopped:
            self.update(record, STOPPED, artifacts=artifacts)
            ctx.finish(JobStatus.CANCELLED, message="stopped at the user's request")
            return
        self.update(record, COMPLETED, artifacts=artifacts)
        ctx.finish(JobStatus.COMPLETED)

    def cancel_record_job(self, job: Job) -> Stop:
        """A transform's batch loop checks the stop flag between records; a deployment is not stoppable."""
        return Stop.REQUESTED if job.kind == TRANSFORM else Stop.NOTHING

    def let_go_record_job(self, job: Job) -> None:
        """Stop a transform at its next record and end its model worker, writing nothing of it; let a deployment end."""
        # A deployment is left to end: it only loads a model into this executor's worker and marks its endpoint in
        # service with its configuration, which the job's next owner, running it again, marks the same; its end,
        # written under the lapsed claim's token, is refused once another executor holds the job.
        with self._batches_lock:
            batch = self._batches.get(job.id)
        if batch is not None:
            batch.let_go.set()
            if batch.worker is not None:
                # Between records is not soon enough for a model whose one prediction takes a minute.
                batch.worker.kill()

    def close(self) -> None:
        with self._load_lock:
            served, self._served = list(self._served.values()), {}
        for endpoint in served:
            endpoint.worker.close()

    # -- datasets --------------------------------------------------------------------------------

    def upload_dataset(self, bucket: str | None, key: str, stream: BinaryIO, filename: str | None,
                       origin: dict[str, Any], description: str = "") -> Record:
        """Store an uploaded file under datasets/<bucket>/<key> of the storage root."""
        bucket, key, original = self.dataset_key(bucket, key, filename)
        target = resolve_storage_path(self.config.storage_root, f"datasets/{bucket}/{key}", "Key")
        created = [folder for folder in (target.parent, *target.parent.parents) if not folder.exists()]
        try:
            digest, size = self._write_upload(stream, target, key)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            # Nothing of the upload stays: its temporary file is gone, and so are the folders made for it.
            for folder in created:
                try:
                    folder.rmdir()
                except OSError:
                    break
            raise StorageFull(f"no space left for dataset {bucket}/{key} on the storage disk "
                              f"({exc.strerror}); nothing was kept") from None
        relative = str(target.relative_to(self.config.storage_root.resolve()))
        return self.put(DATASET, f"{bucket}/{key}", "Available", {
            **origin, "description": description, "bucket": bucket, "key": key, "original_key": original,
            "artifacts": {"path": relative, "size": size, "sha256": digest.hexdigest()},
            "raw": {"Bucket": bucket, "Key": key, "ContentLength": size}})

    def _write_upload(self, stream: BinaryIO, target: Path, key: str) -> tuple[Any, int]:
        """Write an upload to target through a temporary file renamed into place; return its digest and size."""
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise Conflict("Key", f"a part of {key!r} is a file already, not a folder") from None
        if target.is_dir():
            raise Conflict("Key", f"{key!r} is a folder of other uploads, not a file")
        digest, size = hashlib.sha256(), 0
        handle = tempfile.NamedTemporaryFile(dir=target.parent, prefix=".upload-", delete=False)
        try:
            with handle:
                for chunk in iter(lambda: stream.read(_COPY_CHUNK), b""):
                    size += len(chunk)
                    if size > self.config.max_upload_bytes:
                        raise TooLarge("file", f"is larger than {self.config.max_upload_bytes} bytes")
                    digest.update(chunk)
                    handle.write(chunk)
            try:
                os.replace(handle.name, target)
            except IsADirectoryError:  # a concurrent upload made it a folder
                raise Conflict("Key", f"{key!r} is a folder of other uploads, not a file") from None
        finally:
            if os.path.exists(handle.name):
                os.unlink(handle.name)
        return digest, size

    def delete_dataset(self, name: str, adapter: str | None = None) -> None:
        record = self.record(DATASET, name)
        path = resolve_storage_path(self.config.storage_root, record.payload["artifacts"]["path"], "id")
        path.unlink(missing_ok=True)
        self.book.delete(record.id)

    # -- exports ---------------------------------------------------------------------------------

    def export(self, record: Record, body: dict[str, Any], adapter: str | None = None) -> dict[str, Any]:
        """Describe the download of a dataset file or a model archive (the route adds its address).

        A model's archive is built once and kept: at once for a model up to INLINE_COPY_BYTES, in the
        background for a larger one, whose answer says Creating until a poll (export_state) says
        Created, with its size and SHA-256, or Failed with the reason. A Failed export is tried again.
        """
        if body.get("S3Uri"):
            raise NotSupported("S3Uri", "the local platform exports as a download; copying to S3 is the "
                                        "SageMaker platform's")
        if record.type == MODEL:
            return self._export_model(record.name)
        return self._export_answer(record, CREATED, self.export_file(record))

    def export_state(self, record: Record) -> dict[str, Any]:
        """Say where a model's export stands (Creating, Created, Failed, or not exported) without starting one."""
        if record.type != MODEL:
            return self._export_answer(record, CREATED, self.export_file(record))
        with self._exports_lock:
            record = self.record(MODEL, record.name)
            if record.name in self._exports:
                return self._export_answer(record, CREATING)
            finished = self._finished_export(record)
            if finished:
                return self._export_answer(record, CREATED, finished)
            state = record.payload.get("export") or {}
            if state.get("status") == FAILED:
                return {**self._export_answer(record, FAILED), "failureReason": state.get("failure_reason")}
            return self._export_answer(record, "NotExported")

    def export_file(self, record: Record) -> Export:
        """Return the file a download of the record sends: the dataset file, or the model as model.tar.gz.

        A model's archive is the one its export built; a small model not exported yet is archived now.
        """
        try:
            if record.type == DATASET:
                return file_export(resolve_storage_path(self.config.storage_root, record.payload["artifacts"]["path"],
                                                        "id"))
            if record.type == MODEL:
                return self._model_archive(record.name)
        except FileNotFoundError:
            raise NotFound("id", f"the files of {record.type} {record.name!r} are gone") from None
        except TooManyEntries as exc:
            raise TooLarge("id", f"the {record.type} {record.name!r} cannot be exported whole: {exc}") from None
        raise NotSupported("id", f"a {record.type.replace('_', ' ')} has nothing to export")

    def _export_answer(self, record: Record, status: str, export: Export | None = None) -> dict[str, Any]:
        filename = export.filename if export else self._export_target(record.name).name
        answer = {"id": record.name, "type": record.type, "format": "file", "fileName": filename, "status": status}
        if export:
            answer.update(size=export.size, sha256=export.sha256)
        return answer

    def _export_target(self, name: str) -> Path:
        return self.config.data_dir / "exports" / "models" / f"{name}.tar.gz"

    def _finished_export(self, record: Record) -> Export | None:
        """Return the archive a finished export kept, if it is still there as it was built."""
        state = record.payload.get("export") or {}
        if state.get("status") != CREATED:
            return None
        target = self._export_target(record.name)
        try:
            info = os.lstat(target)
        except FileNotFoundError:
            return None
        if not stat.S_ISREG(info.st_mode) or info.st_size != state.get("size"):
            return None
        return Export(target, target.name, info.st_size, state["sha256"])

    def _export_model(self, name: str) -> dict[str, Any]:
        with self._exports_lock:
            record = self.record(MODEL, name)
            if name in self._exports:
                return self._export_answer(record, CREATING)
            finished = self._finished_export(record)
            if finished:
                return self._export_answer(record, CREATED, finished)
            size = self._exportable_size(record)
            if size > INLINE_COPY_BYTES:
                build = threading.Thread(target=self._export_in_background, args=(name,),
                                         name=f"model-export-{name}", daemon=True)
                self._exports[name] = build
                build.start()
                return self._export_answer(record, CREATING)
        return self._export_answer(record, CREATED, self._model_archive(name))

    def _exportable_size(self, record: Record) -> int:
        """Return the bytes of a Created model's folder, or say why it cannot be exported."""
        if record.status != CREATED:
            raise Conflict("id", f"model {record.name!r} is {record.status}; export it once it is {CREATED}")
        folder = Path(record.payload["model_dir"])
        try:
            return copyable_tree(folder.parent, folder.name).size
        except TooManyEntries as exc:
            raise TooLarge("id", f"the model {record.name!r} cannot be exported whole: {exc}") from None

    def _model_archive(self, name: str) -> Export:
        """Return the model's kept archive; build it now for a small model, else say where its export stands."""
        with self._exports_lock:
            record = self.record(MODEL, name)
            finished = self._finished_export(record)
            if finished:
                return finished
            if name in self._exports:
                raise Conflict("id", f"model.tar.gz of model {name!r} is being built; poll its export until "
                                     f"it is {CREATED}")
            if self._exportable_size(record) > INLINE_COPY_BYTES:
                state = record.payload.get("export") or {}
                reason = f" (it failed: {state['failure_reason']})" if state.get("status") == FAILED else ""
                raise Conflict("id", f"model {name!r} is larger than {INLINE_COPY_BYTES} bytes: export it first "
                                     f"(POST its export) and download once it is {CREATED}{reason}")
        return self._build_export(name)

    def _build_export(self, name: str) -> Export:
        """Archive a model's folder into its kept model.tar.gz (a temporary file renamed into place)."""
        record = self.record(MODEL, name)
        export = folder_export(Path(record.payload["model_dir"]), self._export_target(name))
        with self._exports_lock:
            self.update(self.record(MODEL, name), export={"status": CREATED, "size": export.size,
                                                          "sha256": export.sha256})
        return export

    def _export_in_background(self, name: str) -> None:
        try:
            self._build_export(name)
        except Exception as exc:  # any failure is the export's failure reason
            reason = str(exc) if isinstance(exc, TooManyEntries) else f"{type(exc).__name__}: {exc}"
            logger.warning("model %s: its export could not be built: %s", name, reason)
            with self._exports_lock:
                record = self.find(MODEL, name)
                if record:
                    self.update(record, export={"status": FAILED, "failure_reason": reason})
        finally:
            with self._exports_lock:
                self._exports.pop(name, None)

    def _remove_unfinished_exports(self) -> None:
        """Remove the temporary archives an export the executor stopped during left behind."""
        folder = self.config.data_dir / "exports" / "models"
        for leftover in folder.glob(".export-*") if folder.is_dir() else ():
            leftover.unlink(missing_ok=True)


@dataclass
class _Batch:
    """A batch transform this process runs: the flag that lets it go, and the model worker it asks."""

    let_go: threading.Event = field(default_factory=threading.Event)
    worker: ModelWorker | None = None

    def check_kept(self) -> None:
        """Raise InterruptedError once the transform was let go: its end and its record are its next owner's."""
        if self.let_go.is_set():
            raise InterruptedError("this executor's lease lapsed while the transform ran: it was stopped and is "
                                   "left to the executor that takes it over")


@dataclass
class ServedModel:
    """An endpoint's configuration and the worker that serves its model."""

    config_name: str
    worker: ModelWorker


def _check_model_folder(folder: Path, field: str) -> None:
    if not folder.is_dir():
        raise InvalidRequest(field, "names no model folder")
    model = folder / "model.pt"
    if model.is_symlink():
        raise InvalidRequest(field, "the model folder's model.pt is a link; links in a model folder are not followed")
    if not model.is_file():
        raise InvalidRequest(field, "the model folder has no model.pt")


# -- batch inference ---------------------------------------------------------------------------

def run_batch(worker: ModelWorker, source: Path, out_dir: Path, request: TransformRequest,
              cancel_requested: Callable[[], bool], let_go: threading.Event) -> dict[str, Any]:
    """Predict every input of a file or folder; write `<input name>.out` files as SageMaker does."""
    accept = (request.TransformOutput or {}).get("Accept") or "application/json"
    declared = request.TransformInput.get("ContentType")
    split_lines = request.TransformInput.get("SplitType") == "Line"
    records = failed = 0
    stop = _ThrottledCheck(cancel_requested, let_go)
    for relative, answers in _input_files(source):
        if stop():
            return {"records": records, "failed": failed, "stopped": True}
        content_type = declared or CONTENT_TYPES.get(relative.suffix.lower(), "application/octet-stream")
        target = out_dir / f"{answers}.out"
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, size = open_file(source.parent, relative)
        with handle:
            if size > MAX_TRANSFORM_FILE_BYTES:
                raise BackendError(f"input {relative.as_posix()} holds {size} bytes; a batch input file is read "
                                   f"whole, up to {MAX_TRANSFORM_FILE_BYTES}: split it into smaller files")
            data = handle.read(size)
        with open(target, "w", encoding="utf-8") as out:
            for payload, kind in _payloads(data, content_type, split_lines):
                # One input file can hold many records: a stop must not wait for its end.
                if stop(throttled=True):
                    return {"records": records, "failed": failed, "stopped": True}
                try:
                    answer = worker.invoke(payload, kind, accept)[0].decode("utf-8", errors="replace")
                except ModelRequestRefused as exc:
                    failed += 1
                    answer = json.dumps({"error": str(exc)})
                out.write(answer.rstrip("\n") + "\n")
                records += 1
    if records == 0:
        raise BackendError(f"no inputs found in {source.name}")
    return {"records": records, "failed": failed, "stopped": False}


def _input_files(source: Path) -> list[tuple[PurePath, PurePath]]:
    """Return each input of a transform as (its path below the source's parent, its answers' name)."""
    # The storage root's files are its users': a link in an input folder may lead to the executor's key
    # file, and the model's answer would carry it into the output. Links are neither listed nor opened.
    if source.is_file():
        return [(PurePath(source.name), PurePath(source.name))]
    entries, _more = regular_files(source.parent, source.name, None)
    inputs = [PurePath(entry.relative) for entry in entries]
    return [(path, path.relative_to(source.name)) for path in inputs if not path.name.startswith(".")]


class _ThrottledCheck:
    """Say whether the batch stops: let go (a flag, read each time), or asked to stop (the store, read at most
    every CANCEL_CHECK_S when throttled)."""

    def __init__(self, cancel_requested: Callable[[], bool], let_go: threading.Event):
        self.cancel_requested = cancel_requested
        self.let_go = let_go
        self.checked_at = time.monotonic()

    def __call__(self, throttled: bool = False) -> bool:
        # Let go, the executor reads nothing from the store: it may be the thing lost.
        if self.let_go.is_set():
            return True
        if throttled and time.monotonic() - self.checked_at < CANCEL_CHECK_S:
            return False
        self.checked_at = time.monotonic()
        return self.cancel_requested()


def _payloads(data: bytes, content_type: str, split_lines: bool) -> Iterator[tuple[bytes, str]]:
    """Yield the requests one input file holds: CSV rows become square grey images, lines become requests."""
    if content_type == "text/csv":
        for line in data.decode("utf-8").splitlines():
            values = [float(value) for value in line.split(",") if value.strip()] if line.strip() else []
            side = int(len(values) ** 0.5)
            if values and side * side == len(values):
                rows = [values[row * side:(row + 1) * side] for row in range(side)]
                yield json.dumps({"instances": [rows]}).encode(), "application/json"
            elif values:
                yield line.encode(), "text/csv"
        return
    if split_lines or content_type == "application/jsonlines":
        for line in data.splitlines():
            if line.strip():
                yield line, "application/json"
        return
    yield data, content_type

