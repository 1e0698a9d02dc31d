"""The model lifecycle on this machine: model folders, endpoints loaded for inference, batch inference,
datasets under the storage root.

A local model is a folder with `model.pt` and, usually, `code/inference.py` (the SageMaker PyTorch
handlers model_fn, input_fn, predict_fn, output_fn); the same folder tarred is what SageMaker serves.
"""
from __future__ import annotations

import hashlib
import importlib.util
import itertools
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, BinaryIO, Callable, Iterator

from config import Config
from db import Job, JobStatus, JobStore, Record
from mlops.base import ENDPOINT, TRANSFORM, JobContext
from mlops.clients import ClientFactory
from mlops.errors import BackendError, Conflict, InvalidRequest, MalformedRequest, NotAcceptable, TooLarge
from mlops.records import (CONTENT_TYPES, DATASET, ENDPOINT_CONFIG, ENDPOINT_RECORD, FAILED, IN_SERVICE, MODEL,
                                   TRANSFORM_RECORD, ModelLifecycle, as_list, finished_training_job, model_body,
                                   production_variant, public_request)
from mlops.staging import S3_URI, resolve_storage_path

logger = logging.getLogger(__name__)

_COPY_CHUNK = 1024 * 1024


class LocalModelLifecycle(ModelLifecycle):
    """Models as folders, endpoints as models loaded in the executor, batch inference as a local job."""

    source_org = "Local"

    def __init__(self, config: Config, store: JobStore, clients: ClientFactory):
        super().__init__(config, store, clients)
        self.models_root = config.data_dir / "models"
        self.datasets_root = config.storage_root / "datasets"
        # Endpoints are served from the executor's own process: an 8x8-digit CNN loads in
        # milliseconds and answers in microseconds, so a child process per endpoint would cost more
        # (a second torch import, IPC) than it protects. Loading imports the model's inference.py,
        # which touches sys.path and sys.modules, so loads are serialised by one lock.
        self._served: dict[str, ServedModel] = {}
        self._load_lock = threading.Lock()

    # -- models ----------------------------------------------------------------------------------

    def register_model(self, body: dict[str, Any], origin: dict[str, Any]) -> Record:
        """Register a model folder (a finished training job's, or one in the storage root)."""
        name = body["ModelName"]
        if self.find(MODEL, name):
            raise Conflict("ModelName", f"a model named {name!r} is registered")
        source, container = self._model_source(body)
        _check_model_folder(source, "TrainingJobId" if body.get("TrainingJobId") else "ModelDataUrl")
        target = self.models_root / name
        shutil.rmtree(target, ignore_errors=True)
        # A copy: the model then stays as registered, whatever happens to the training job's folder.
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        files = sorted(str(path.relative_to(target)) for path in target.rglob("*") if path.is_file())
        return self.put(MODEL, name, "Created", {
            **origin, "description": body.get("Description", ""), "model_dir": str(target),
            "container": container, "artifacts": {"model_dir": str(target), "files": files},
            "training_job": body.get("TrainingJobId"), "raw": public_request(body)})

    def _model_source(self, body: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
        if body.get("TrainingJobId"):
            if body.get("Containers") or body.get("PrimaryContainer"):
                raise MalformedRequest("TrainingJobId", "give a training job or containers, not both")
            job = finished_training_job(self.store, body["TrainingJobId"])
            if job.backend != "local" or not job.artifacts.get("model_dir"):
                raise InvalidRequest("TrainingJobId", "is not a local training job with a model folder")
            folder = Path(job.artifacts["model_dir"])
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
        self.check_model_deletable(name)
        self.store.delete_record(record.id)
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
        self.store.delete_record(record.id)

    def delete_endpoint(self, name: str, adapter: str | None = None) -> None:
        record = self.record(ENDPOINT_RECORD, name)
        self.check_endpoint_deletable(record)
        with self._load_lock:
            self._served.pop(name, None)
        self.store.delete_record(record.id)

    def invoke(self, name: str, body: bytes, content_type: str, accept: str | None,
               adapter: str | None = None) -> tuple[bytes, str]:
        """Run the endpoint's model on one request and return (answer, content type)."""
        record = self.record(ENDPOINT_RECORD, name)
        if record.status != IN_SERVICE:
            raise Conflict("id", f"endpoint {name!r} is {record.status}, not InService",
                                 endpoint_status=record.status)
        served = self._served_model(record)
        try:
            data = served.handlers.input_fn(body, content_type)
        except ValueError as exc:
            raise MalformedRequest("body", str(exc)) from None
        prediction = served.handlers.predict_fn(data, served.model)
        try:
            answer = served.handlers.output_fn(prediction, accept or "application/json")
        except ValueError as exc:
            raise NotAcceptable("Accept", str(exc)) from None
        return (answer.encode() if isinstance(answer, str) else bytes(answer)), "application/json"

    def _served_model(self, record: Record) -> "ServedModel":
        with self._load_lock:
            served = self._served.get(record.name)
        if served is not None and served.config_name == record.payload.get("endpoint_config"):
            return served
        # After a restart the endpoint is still InService in the store: load its model again.
        config = self.record(ENDPOINT_CONFIG, record.payload["endpoint_config"], "EndpointConfigName", Conflict)
        return self._load(record.name, config)

    def _load(self, endpoint: str, config: Record) -> "ServedModel":
        model = self.record(MODEL, config.payload["model_names"][0], "ModelName", Conflict)
        with self._load_lock:
            handlers = load_handlers(Path(model.payload["model_dir"]))
            served = ServedModel(config.name, handlers, handlers.model_fn(model.payload["model_dir"]))
            self._served[endpoint] = served
        return served

    # -- jobs ------------------------------------------------------------------------------------

    def check(self, kind: str, request: dict[str, Any], secrets: dict[str, Any]) -> dict[str, Any]:
        if kind == ENDPOINT:
            config = self.record(ENDPOINT_CONFIG, request["EndpointConfigName"], "EndpointConfigName", InvalidRequest)
            self.record(MODEL, config.payload["model_names"][0], "EndpointConfigName", InvalidRequest)
            return request
        self.record(MODEL, request["ModelName"], "ModelName", InvalidRequest)
        uri = request["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"]
        field = "TransformInput.DataSource.S3DataSource.S3Uri"
        if S3_URI.match(uri):
            raise InvalidRequest(field, "the local backend reads inputs from the storage root: give a relative path")
        if not resolve_storage_path(self.config.storage_root, uri, field).exists():
            raise InvalidRequest(field, f"no file or folder {uri!r} in the storage root")
        return request

    def run(self, ctx: JobContext) -> None:
        if ctx.job.kind == ENDPOINT:
            self._deploy(ctx)
        else:
            self._transform(ctx)

    def _deploy(self, ctx: JobContext) -> None:
        request = ctx.job.request
        record = self.record(ENDPOINT_RECORD, request["EndpointName"])
        creating = record.status == "Creating"
        ctx.set_phase("Creating" if creating else "Updating", "loading the model")
        try:
            config = self.record(ENDPOINT_CONFIG, request["EndpointConfigName"], "EndpointConfigName", InvalidRequest)
            self._load(record.name, config)
        except Exception as exc:  # a model that cannot load fails the deployment, whatever the reason
            reason = f"the model could not be loaded: {type(exc).__name__}: {exc}"
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
            self.store.delete_record(self.record_id(ENDPOINT_CONFIG, config_name))
            deleted.append(f"endpoint configuration {config_name}")
        remaining = [f"model {name}" for name in as_list(record.payload.get("model_names"))]
        self.update(record, FAILED, exists=False, failure_reason=reason,
                    cleanup={"deleted": deleted, "remaining": remaining})
        return f"{reason}; removed: {', '.join(deleted) or 'nothing'}; remaining: {', '.join(remaining) or 'nothing'}"

    def _transform(self, ctx: JobContext) -> None:
        request = ctx.job.request
        record = self.record(TRANSFORM_RECORD, request["TransformJobName"])
        field = "TransformInput.DataSource.S3DataSource.S3Uri"
        source = resolve_storage_path(self.config.storage_root,
                                      request["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"], field)
        out_dir = ctx.job_dir / "output" / "transform"
        out_dir.mkdir(parents=True, exist_ok=True)
        ctx.set_phase("Transforming", f"reading {source.name}")
        try:
            model = self.record(MODEL, request["ModelName"], "ModelName", InvalidRequest)
            with self._load_lock:
                handlers = load_handlers(Path(model.payload["model_dir"]))
            loaded = handlers.model_fn(model.payload["model_dir"])
            counts = run_batch(handlers, loaded, source, out_dir, request, ctx.cancel_requested)
        except Exception as exc:  # any failure is the transform job's failure reason
            reason = f"{type(exc).__name__}: {exc}"
            self.update(record, FAILED, failure_reason=reason)
            ctx.finish(JobStatus.ERROR, reason)
            return
        files = sorted(str(path.relative_to(ctx.job_dir)) for path in out_dir.rglob("*") if path.is_file())
        artifacts = {"output_dir": str(out_dir), "files": files, **counts}
        ctx.set_artifacts(artifacts)
        if counts["stopped"]:
            self.update(record, "Stopped", artifacts=artifacts)
            ctx.finish(JobStatus.CANCELLED, message="stopped at the user's request")
            return
        self.update(record, "Completed", artifacts=artifacts)
        ctx.finish(JobStatus.COMPLETED)

    def cancel(self, job: Job) -> bool:
        # The batch loop checks the flag between inputs; loading an endpoint takes too little time to stop.
        return job.kind == TRANSFORM

    def close(self) -> None:
        with self._load_lock:
            self._served.clear()

    # -- datasets --------------------------------------------------------------------------------

    def upload_dataset(self, bucket: str | None, key: str, stream: BinaryIO, filename: str | None,
                       origin: dict[str, Any], description: str = "") -> Record:
        """Store an uploaded file under datasets/<bucket>/<key> of the storage root."""
        bucket, key = self.dataset_key(bucket, key, filename)
        target = resolve_storage_path(self.config.storage_root, f"datasets/{bucket}/{key}", "Key")
        target.parent.mkdir(parents=True, exist_ok=True)
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
            os.replace(handle.name, target)
        finally:
            if os.path.exists(handle.name):
                os.unlink(handle.name)
        relative = str(target.relative_to(self.config.storage_root.resolve()))
        return self.put(DATASET, f"{bucket}/{key}", "Available", {
            **origin, "description": description, "bucket": bucket, "key": key,
            "artifacts": {"path": relative, "size": size, "sha256": digest.hexdigest()},
            "raw": {"Bucket": bucket, "Key": key, "ContentLength": size}})

    def delete_dataset(self, name: str, adapter: str | None = None) -> None:
        record = self.record(DATASET, name)
        path = resolve_storage_path(self.config.storage_root, record.payload["artifacts"]["path"], "id")
        path.unlink(missing_ok=True)
        self.store.delete_record(record.id)


# -- loading a model's inference handlers ------------------------------------------------------

@dataclass
class Handlers:
    """The four SageMaker PyTorch serving functions of a model (defaults where inference.py has none)."""

    model_fn: Callable[[str], Any]
    input_fn: Callable[[Any, str], Any]
    predict_fn: Callable[[Any, Any], Any]
    output_fn: Callable[[Any, str], Any]


@dataclass
class ServedModel:
    config_name: str
    handlers: Handlers
    model: Any


_module_counter = itertools.count()


def load_handlers(model_dir: Path) -> Handlers:
    """Import model_dir/code/inference.py under a unique name; call with the load lock held.

    inference.py imports its sibling modules (preprocessing.py) by plain name, so the code folder is
    put on sys.path for the import, and the siblings are taken out of sys.modules afterwards: two
    models with different preprocessing.py must not share the first one imported.
    """
    script = model_dir / "code" / "inference.py"
    module: ModuleType | None = None
    if script.is_file():
        code_dir = str(script.parent)
        siblings = {path.stem for path in script.parent.glob("*.py")} - {"inference"}
        saved = {name: sys.modules.pop(name) for name in siblings if name in sys.modules}
        sys.path.insert(0, code_dir)
        try:
            spec = importlib.util.spec_from_file_location(f"_served_inference_{next(_module_counter)}", script)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            # Registered under its unique name, as dataclasses and pickling look modules up there.
            sys.modules[spec.name] = module
            spec.loader.exec_module(module)
        finally:
            sys.path.remove(code_dir)
            for name in siblings:
                sys.modules.pop(name, None)
            sys.modules.update(saved)

    def pick(name: str, default: Callable) -> Callable:
        return getattr(module, name, None) or default

    return Handlers(pick("model_fn", _default_model_fn), pick("input_fn", _default_input_fn),
                    pick("predict_fn", _default_predict_fn), pick("output_fn", _default_output_fn))


def _default_model_fn(model_dir: str) -> Any:
    import torch

    return torch.jit.load(str(Path(model_dir) / "model.pt"), map_location="cpu").eval()


def _default_input_fn(body: bytes | str, content_type: str) -> Any:
    import torch

    media = (content_type or "").split(";", 1)[0].strip().lower()
    text = body.decode("utf-8") if isinstance(body, bytes) else body
    if media == "application/json":
        try:
            payload = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"the request body is not valid JSON: {exc}") from None
        payload = payload.get("instances", payload) if isinstance(payload, dict) else payload
    elif media == "text/csv":
        payload = [[float(value) for value in line.split(",")] for line in text.splitlines() if line.strip()]
    else:
        raise ValueError(f"unsupported content type {content_type!r}: send application/json or text/csv")
    try:
        return torch.tensor(payload, dtype=torch.float32)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"the payload is not a numeric array: {exc}") from None


def _default_predict_fn(data: Any, model: Any) -> Any:
    import torch

    with torch.inference_mode():
        return model(data).tolist()


def _default_output_fn(prediction: Any, accept: str) -> str:
    media = (accept or "application/json").split(";", 1)[0].strip().lower()
    if media not in ("application/json", "*/*"):
        raise ValueError(f"unsupported accept type {accept!r}: only application/json is offered")
    return json.dumps({"predictions": prediction})


def _check_model_folder(folder: Path, field: str) -> None:
    if not folder.is_dir():
        raise InvalidRequest(field, "names no model folder")
    if not (folder / "model.pt").is_file():
        raise InvalidRequest(field, "the model folder has no model.pt")


# -- batch inference ---------------------------------------------------------------------------

def run_batch(handlers: Handlers, model: Any, source: Path, out_dir: Path, request: dict[str, Any],
              cancel_requested: Callable[[], bool]) -> dict[str, Any]:
    """Predict every input of a file or folder; write `<input name>.out` files as SageMaker does."""
    accept = (request.get("TransformOutput") or {}).get("Accept") or "application/json"
    declared = request["TransformInput"].get("ContentType")
    split_lines = request["TransformInput"].get("SplitType") == "Line"
    files = [source] if source.is_file() else [path for path in sorted(source.rglob("*"))
                                               if path.is_file() and not path.name.startswith(".")]
    records = failed = 0
    for path in files:
        if cancel_requested():
            return {"records": records, "failed": failed, "stopped": True}
        content_type = declared or CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream")
        target = out_dir / (str(path.relative_to(source)) + ".out" if source.is_dir() else path.name + ".out")
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "w", encoding="utf-8") as out:
            for payload, kind in _payloads(path, content_type, split_lines):
                try:
                    answer = handlers.output_fn(handlers.predict_fn(handlers.input_fn(payload, kind), model), accept)
                except ValueError as exc:
                    failed += 1
                    answer = json.dumps({"error": str(exc)})
                out.write((answer.decode() if isinstance(answer, bytes) else answer).rstrip("\n") + "\n")
                records += 1
    if records == 0:
        raise BackendError(f"no inputs found in {source.name}")
    return {"records": records, "failed": failed, "stopped": False}


def _payloads(path: Path, content_type: str, split_lines: bool) -> Iterator[tuple[bytes, str]]:
    """Yield the requests one input file holds: CSV rows become square grey images, lines become requests."""
    if content_type == "text/csv":
        for line in path.read_text(encoding="utf-8").splitlines():
            values = [float(value) for value in line.split(",") if value.strip()] if line.strip() else []
            side = int(len(values) ** 0.5)
            if values and side * side == len(values):
                rows = [values[row * side:(row + 1) * side] for row in range(side)]
                yield json.dumps({"instances": [rows]}).encode(), "application/json"
            elif values:
                yield line.encode(), "text/csv"
        return
    if split_lines or content_type == "application/jsonlines":
        for line in path.read_bytes().splitlines():
            if line.strip():
                yield line, "application/json"
        return
    yield path.read_bytes(), content_type

