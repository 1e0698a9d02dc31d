"""Essedum's MLOps routes for models, endpoints, batch inference and datasets (contract §2).

Each route validates, then makes one call: to the executor's platform (local or SageMaker) for
records, or to the queue for what takes time; long operations come back 202 with the job that does them. Answers are records in the
Essedum shape.
"""
from __future__ import annotations

import base64
import errno
import json
import mimetypes
import re
from typing import Any

from flask import Blueprint, current_app, jsonify, request, send_file, url_for

from api import model_schemas
from api.docs import documented
from api.execute import stop_job
from api.model_share import within_model_share
from api.schemas import RECORD_ACCEPTED, json_body, parse_json, validate, without_absent
from api.views import essedum_origin, executor, format_record_time
from db import Record
from job_secrets import redact_description
from job import ENDPOINT, TRANSFORM
from mlops.aws_statuses import CREATING
from mlops.errors import BackendError, MalformedRequest, NotFound, StorageFull, TooLarge
from mlops.job_files import open_file
from mlops.job_requests import DeployRequest, TransformRequest
from mlops.records import (DATASET, ENDPOINT_CONFIG, ENDPOINT_RECORD, MAX_INVOKE_BYTES, MODEL,
                           TRANSFORM_RECORD, RecordBook, finished_training_job)
from mlops.platform import Platform

blueprint = Blueprint("mlops_models", __name__, url_prefix="/api/service/v1")

NAME = re.compile(model_schemas.RESOURCE_NAME)
# What the backend puts in a path when a record's id is an ARN: it URL-encodes the path, then turns
# %2F and %3A back into / and : (ICIPDataSetServiceUtilRestAbstract), so the ARN arrives verbatim.
ARN_PATH = re.compile(r"^(?:arn:aws[a-z-]*:sagemaker:[a-z0-9-]*:\d{12}:[a-z-]+|local:[a-z_]+)/(?P<name>[^/]+)$")
RULE_ID = re.compile(r"<(?:path:)?\w+_id>")
ORIGIN_QUERY = {"adapter_instance": {"type": "string", "description": "Essedum adapter (picks the AWS profile)"},
                "project": {"type": "string", "description": "Essedum project"}}
# Room for the multipart envelope around a file of the largest accepted size.
FORM_OVERHEAD_BYTES = 1 << 20
# As many as the bundled inference.py accepts in one request: each becomes a decoded image.
MAX_IMAGES_PER_REQUEST = 256


def platform() -> Platform:
    """Return the executor's platform."""
    return executor().platform


def record_view(record: Record) -> dict[str, Any]:
    """Return a record in the Essedum shape; rawPayload is a JSON string."""
    payload = record.payload
    view = {
        # What the backend later puts in the path (DELETE /models/<sourceID>): the name, which every
        # route accepts; the ARN is in rawPayload and arn.
        "sourceID": record.name,
        "arn": payload.get("arn"),
        # The backend's parser reads description, artifacts and container with get(), which throws
        # on a missing key (ICIPModelAWSServiceSageMaker.parseMLFedModel).
        "container": payload.get("container") or {},
        "adapter": payload.get("adapter"),
        "rawPayload": json.dumps(redact_description(payload.get("raw") or {}), default=str),
        "syncDate": format_record_time(record.updated),
        "description": payload.get("description") or "",
        "project": payload.get("project"),
        "type": record.type,
        "createdOn": format_record_time(record.created),
        "sourceOrg": payload.get("source_org"),
        "name": record.name,
        "id": record.name,
        "sourcename": record.name,
        "status": record.status,
        "artifacts": payload.get("artifacts") or {},
        "deployment": _deployment(record),
    }
    if record.job_id:
        view["jobId"] = record.job_id
    if payload.get("failure_reason"):
        view["failureReason"] = payload["failure_reason"]
    if payload.get("cleanup"):
        view["cleanup"] = payload["cleanup"]
    return view


def _deployment(record: Record) -> Any:
    payload = record.payload
    if record.type == ENDPOINT_RECORD:
        return {"endpointConfig": payload.get("endpoint_config"), "targetConfig": payload.get("target_config"),
                "models": payload.get("model_names"), "variant": payload.get("deployment")}
    if record.type == MODEL:
        return {"endpoints": platform().endpoints_using("model_names", record.name)}
    return payload.get("deployment")



def path_name(path_id: str) -> str:
    """Return the name a path id gives: a name as it is, or the name part of an ARN (or local:type/name)."""
    match = ARN_PATH.match(path_id)
    name = match.group("name") if match else path_id
    if not match and "/" in path_id:
        raise NotFound("id", f"{request.method} {request.path} is not a route; {family_routes()}")
    if not NAME.match(name):
        raise MalformedRequest("id", "must be a name (1-63 letters, digits and hyphens, starting with a letter or "
                                     "digit) or its ARN")
    return name


def family_routes() -> str:
    """Name the routes of the record family the request's route belongs to (a 404 for a wrong shape says them)."""
    family = request.url_rule.rule.split("<", 1)[0] if request.url_rule else request.path
    rules = sorted({f"{method} {RULE_ID.sub('<id>', rule.rule)}" for rule in current_app.url_map.iter_rules()
                    if rule.rule.startswith(family) for method in rule.methods - {"HEAD", "OPTIONS"}})
    return "the routes here are " + ", ".join(rules)


def find_named(types: tuple[str, ...], path_id: str) -> Record | None:
    """Return the record a path id names, by name or by ARN, looking in each record type in turn."""
    name = path_name(path_id)
    for type in types:
        found = platform().find(type, name)
        if found is not None:
            return found
    if name == path_id:
        return None
    # SageMaker writes names in lower case inside ARNs: MyModel's ARN ends in model/mymodel.
    for type in types:
        for record in platform().records(type):
            if record.payload.get("arn") == path_id or record.name.lower() == name.lower():
                return record
    return None


def named(type: str, path_id: str) -> Record:
    """Return the record a path id names, or answer 404."""
    found = find_named((type,), path_id)
    if found is None:
        raise NotFound("id", f"no {type.replace('_', ' ')} named {path_id!r}")
    return found


def with_whole_training_id(body: dict[str, Any]) -> dict[str, Any]:
    """Return the body with its TrainingJobId, which may be a beginning of the id, as the whole id."""
    if body.get("TrainingJobId"):
        body = {**body, "TrainingJobId": finished_training_job(RecordBook(executor().store), body["TrainingJobId"]).id}
    return body


# -- models ------------------------------------------------------------------------------------

@blueprint.post("/models/register")
@documented(model_schemas.MODEL, status=201, summary="Register a model (202 while a large local model folder is "
                                                     "copied: its record says Creating until Created or Failed)",
            query=ORIGIN_QUERY)
def register_model():
    body = with_whole_training_id(json_body(model_schemas.MODEL))
    record = platform().register_model(body, essedum_origin())
    if record.status == CREATING:
        # A large local model folder is still being copied: the record says when it is Created or Failed.
        return jsonify(record_view(record)), 202, {"Location": url_for("mlops_models.get_model", model_id=record.name)}
    return jsonify(record_view(record)), 201


@blueprint.get("/models/list")
def list_models():
    return jsonify([record_view(record) for record in platform().records(MODEL)])


@blueprint.get("/models/<path:model_id>")
@blueprint.get("/models/<path:model_id>/get")
def get_model(model_id: str):
    return jsonify(record_view(named(MODEL, model_id)))


@blueprint.delete("/models/<path:model_id>")
def delete_model(model_id: str):
    record = named(MODEL, model_id)
    platform().delete_model(record.name, essedum_origin()["adapter"])
    return jsonify(message=f"model {record.name} deleted", id=record.name, type=MODEL)


@blueprint.post("/models/<path:model_id>/export")
@documented(model_schemas.EXPORT, summary="Export a model: a download (local) or a presigned URL or S3 copy "
                                          "(SageMaker)", query=ORIGIN_QUERY)
def export_model(model_id: str):
    return _export(named(MODEL, model_id))


@blueprint.get("/models/<path:model_id>/export")
def model_export_state(model_id: str):
    """Say where a model's export stands: Creating, Created (size, SHA-256, download), Failed or NotExported."""
    record = named(MODEL, model_id)
    return jsonify(_with_addresses(record, platform().export_state(record)))


# -- endpoints ---------------------------------------------------------------------------------

@blueprint.post("/endpoints/register")
@documented(model_schemas.ENDPOINT_CONFIG, status=201, summary="Create an endpoint configuration",
            query=ORIGIN_QUERY)
def register_endpoint():
    body = with_whole_training_id(json_body(model_schemas.ENDPOINT_CONFIG))
    return jsonify(record_view(platform().register_endpoint(body, essedum_origin()))), 201


@blueprint.post("/endpoints/<path:endpoint_id>/deploy_model")
@documented(model_schemas.DEPLOY, status=202, summary="Create or update an endpoint (a queued job)",
            query=ORIGIN_QUERY, response_schema=RECORD_ACCEPTED)
def deploy_model(endpoint_id: str):
    body = json_body(model_schemas.DEPLOY)
    endpoint_name = path_name(endpoint_id)
    own_config = endpoint_name if platform().find(ENDPOINT_CONFIG, endpoint_name) else None
    deployment = DeployRequest.from_body(body, essedum_origin(), endpoint_name, own_config)
    job, record = executor().queue.submit_change(ENDPOINT, deployment)
    location = url_for("mlops_models.get_endpoint", endpoint_id=record.name)
    return jsonify({**record_view(record), "jobId": job.id}), 202, {"Location": location}


@blueprint.get("/endpoints/list")
def list_endpoints():
    records = platform().records(ENDPOINT_RECORD) + platform().records(ENDPOINT_CONFIG)
    return jsonify([record_view(record) for record in records])


def _endpoint_or_config(endpoint_id: str) -> Record:
    found = find_named((ENDPOINT_RECORD, ENDPOINT_CONFIG), endpoint_id)
    if found is None:
        raise NotFound("id", f"no endpoint or endpoint configuration named {endpoint_id!r}")
    return found


@blueprint.get("/endpoints/<path:endpoint_id>")
@blueprint.get("/endpoints/<path:endpoint_id>/get")
def get_endpoint(endpoint_id: str):
    return jsonify(record_view(_endpoint_or_config(endpoint_id)))


@blueprint.delete("/endpoints/<path:endpoint_id>")
@blueprint.route("/endpoints/<path:endpoint_id>/delete", methods=["GET", "POST", "DELETE"])
def delete_endpoint(endpoint_id: str):
    record = _endpoint_or_config(endpoint_id)
    adapter = essedum_origin()["adapter"]
    if record.type == ENDPOINT_RECORD:
        platform().delete_endpoint(record.name, adapter)
        return jsonify(message=f"endpoint {record.name} deleted", id=record.name, type=ENDPOINT_RECORD)
    platform().delete_endpoint_config(record.name, adapter)
    return jsonify(message=f"endpoint configuration {record.name} deleted", id=record.name, type=ENDPOINT_CONFIG)


@blueprint.post("/endpoints/<path:endpoint_id>/undeploy_models")
@documented(summary="Take the endpoint down; its configuration and models stay", query=ORIGIN_QUERY)
def undeploy_models(endpoint_id: str):
    record = named(ENDPOINT_RECORD, endpoint_id)
    undeployed = platform().undeploy_endpoint(record.name, essedum_origin()["adapter"])
    return jsonify({**record_view(undeployed), "message": f"endpoint {record.name} taken down; configuration "
                                                          f"{undeployed.payload.get('endpoint_config')} and its "
                                                          "models are kept"})


@blueprint.post("/endpoints/<path:endpoint_id>/infer")
@documented(summary="Predict: a JSON or CSV body, images (multipart), or {\"S3Uri\": \"s3://...\"}",
            query=ORIGIN_QUERY, media=model_schemas.INFERENCE_BODIES)
@within_model_share
def infer(endpoint_id: str):
    name = path_name(endpoint_id)
    request.max_content_length = MAX_INVOKE_BYTES + FORM_OVERHEAD_BYTES
    adapter = essedum_origin()["adapter"]
    body, content_type = _inference_payload(adapter)
    # One media type for the model: a browser's list (the backend forwards the UI's
    # "application/json, text/plain, */*") becomes its first choice.
    best = request.accept_mimetypes.best
    accept = None if best in (None, "*/*") else best
    answer, answer_type = platform().invoke(name, body, content_type, accept, adapter)
    if answer_type.split(";", 1)[0].strip().lower().endswith("json"):
        return jsonify(_model_json(name, answer, answer_type))
    return jsonify(predictions=answer.decode("utf-8", errors="replace"), contentType=answer_type)


def _model_json(endpoint: str, answer: bytes, answer_type: str) -> Any:
    """Parse a model's JSON answer within the depth bound; 502 naming the endpoint's model when it cannot be read."""
    try:
        return parse_json(answer)
    except MalformedRequest as exc:
        record = platform().find(ENDPOINT_RECORD, endpoint)
        models = ", ".join((record.payload.get("model_names") or []) if record else []) or "unknown"
        raise BackendError(f"endpoint {endpoint!r} (model {models}) answered {answer_type} that cannot be read: "
                           f"{exc.message}") from None


@blueprint.post("/endpoints/<path:endpoint_id>/explain")
@documented(summary="Explain a prediction: per-class probabilities and an occlusion saliency map (local), or "
                    "SageMaker Clarify's explanations", query=ORIGIN_QUERY, media=model_schemas.INFERENCE_BODIES)
@within_model_share
def explain(endpoint_id: str):
    name = path_name(endpoint_id)
    request.max_content_length = MAX_INVOKE_BYTES + FORM_OVERHEAD_BYTES
    adapter = essedum_origin()["adapter"]
    body, content_type = _inference_payload(adapter)
    return jsonify(platform().explain(name, body, content_type, adapter))


def _inference_payload(adapter: str | None) -> tuple[bytes, str]:
    """Return what to send to the model: the JSON or CSV body, an uploaded image, or an S3 object."""
    if request.mimetype == "multipart/form-data":
        files = [item for item in request.files.getlist("file") if item.filename or item.mimetype]
        if not files:
            raise MalformedRequest("file", "upload one or more images in the 'file' field")
        if len(files) > MAX_IMAGES_PER_REQUEST:
            raise TooLarge("file", f"{len(files)} images in one request; at most {MAX_IMAGES_PER_REQUEST}")
        if len(files) == 1:
            return files[0].read(), _file_type(files[0])
        # Several images travel as one JSON request of base64 strings, which inference.py accepts.
        instances = [base64.b64encode(item.read()).decode("ascii") for item in files]
        return json.dumps({"instances": instances}).encode(), "application/json"
    raw = request.get_data(cache=True)
    if not raw:
        raise MalformedRequest("body", "send a JSON payload, CSV, an image, or {\"S3Uri\": \"s3://...\"}")
    content_type = request.mimetype or "application/json"
    if content_type == "application/json":
        # Parsed here once with the depth bound: a model's own json.loads would hit the recursion
        # limit on a deeply nested body and fail with a 500.
        payload = parse_json(raw)
        if isinstance(payload, dict) and "S3Uri" in payload:
            if not isinstance(payload["S3Uri"], str):
                raise MalformedRequest("S3Uri", "must be a string")
            return platform().read_s3_payload(payload["S3Uri"], adapter)
    return raw, content_type


def _file_type(item: Any) -> str:
    declared = (item.mimetype or "").lower()
    if declared and declared != "application/octet-stream":
        return declared
    return mimetypes.guess_type(item.filename or "")[0] or "application/octet-stream"


# -- batch inference ---------------------------------------------------------------------------

@blueprint.post("/pipelines/inference")
@documented(model_schemas.TRANSFORM, status=202, summary="Start batch inference (a queued job)",
            query=ORIGIN_QUERY, response_schema=RECORD_ACCEPTED)
def create_transform():
    body = json_body(model_schemas.TRANSFORM)
    job, record = executor().queue.submit_change(TRANSFORM, TransformRequest.from_body(body, essedum_origin()))
    location = url_for("mlops_models.get_transform", transform_id=record.name)
    return jsonify({**record_view(record), "jobId": job.id}), 202, {"Location": location}


@blueprint.get("/pipelines/inference/list")
def list_transforms():
    return jsonify([record_view(record) for record in platform().records(TRANSFORM_RECORD)])


@blueprint.route("/pipelines/inference/<path:transform_id>/get", methods=["GET", "POST"])
def get_transform(transform_id: str):
    return jsonify(record_view(named(TRANSFORM_RECORD, transform_id)))


@blueprint.route("/pipelines/inference/<path:transform_id>/cancel", methods=["GET", "POST"])
def cancel_transform(transform_id: str):
    record = named(TRANSFORM_RECORD, transform_id)
    outcome = stop_job(record.job_id)
    return jsonify(message=outcome.message, job_name=record.name, jobId=record.job_id, status=outcome.status)


@blueprint.delete("/pipelines/inference/<path:transform_id>")
def delete_transform(transform_id: str):
    record = named(TRANSFORM_RECORD, transform_id)
    outcome = stop_job(record.job_id)
    if not outcome.ended:
        return jsonify(message=f"transform job {record.name} is stopping; delete it again once it has stopped",
                       id=record.name, type=TRANSFORM_RECORD, status=outcome.status, deleted=False), 202
    if record.job_id:
        executor().queue.delete(record.job_id)
    executor().store.delete_record(record.id)
    return jsonify(message=f"transform job {record.name} deleted", id=record.name, type=TRANSFORM_RECORD,
                   deleted=True)


# -- datasets ----------------------------------------------------------------------------------

@blueprint.post("/datasets")
@documented(model_schemas.DATASET_JSON, status=201, media={"multipart/form-data": model_schemas.DATASET_UPLOAD},
            summary="Add a dataset: multipart (file, and optionally Bucket, Key) or JSON {Bucket, Key, "
                    "local_dataset_path} naming a file in the storage root", query=ORIGIN_QUERY)
def upload_dataset():
    if request.mimetype == "application/json":
        body = json_body(model_schemas.DATASET_JSON)
        record = platform().import_dataset(body.get("Bucket"), body.get("Key"), body["local_dataset_path"],
                                            essedum_origin(), body.get("Description", ""))
        return jsonify(record_view(record)), 201
    # Only an upload takes large bodies; everything else keeps the app's small JSON limit.
    request.max_content_length = executor().config.max_upload_bytes + FORM_OVERHEAD_BYTES
    if request.mimetype != "multipart/form-data":
        raise MalformedRequest("file", "send multipart/form-data with a 'file' part (and optionally Bucket, Key), "
                                       "or JSON {Bucket, Key, local_dataset_path}")
    try:
        form = without_absent({key: request.form[key] for key in request.form}, model_schemas.DATASET_FORM)
        upload = request.files.get("file")
    except OSError as exc:
        # The form parser spools a large file to a temporary file first: a full disk strikes there.
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise StorageFull(f"no space left to receive the upload ({exc.strerror}); nothing was kept") from None
    validate(form, model_schemas.DATASET_FORM)
    if upload is None:
        raise MalformedRequest("file", "is required")
    # The backend's file proxy sends only the file: its name is then the key.
    record = platform().upload_dataset(form.get("Bucket"), form.get("Key", ""), upload.stream, upload.filename,
                                        essedum_origin(), form.get("Description", ""))
    return jsonify(record_view(record)), 201


@blueprint.get("/datasets/list")
def list_datasets():
    return jsonify([record_view(record) for record in platform().records(DATASET)])


@blueprint.post("/datasets/<path:dataset_id>/export")
@documented(model_schemas.EXPORT, summary="Export a dataset: a download (local) or a presigned URL or S3 copy "
                                          "(SageMaker)", query=ORIGIN_QUERY)
def export_dataset(dataset_id: str):
    return _export(platform().record(DATASET, dataset_id))


@blueprint.get("/datasets/<path:dataset_id>")
@blueprint.get("/datasets/<path:dataset_id>/get")
def get_dataset(dataset_id: str):
    return jsonify(record_view(platform().record(DATASET, dataset_id)))


@blueprint.delete("/datasets/<path:dataset_id>")
def delete_dataset(dataset_id: str):
    platform().delete_dataset(dataset_id, essedum_origin()["adapter"])
    return jsonify(message=f"dataset {dataset_id} deleted", id=dataset_id, type=DATASET)


# -- exports -----------------------------------------------------------------------------------

def _export(record: Record):
    body = json_body(model_schemas.EXPORT) if request.get_data(cache=True).strip() else {}
    answer = _with_addresses(record, platform().export(record, body, essedum_origin()["adapter"]))
    # A large local model is archived in the background: 202 until its export, polled, is Created.
    return jsonify(answer), 202 if answer.get("status") == CREATING else 200


def _with_addresses(record: Record, answer: dict[str, Any]) -> dict[str, Any]:
    if answer.get("format") == "file":
        answer["download"] = url_for("mlops_models.download_export", type=record.type, name=record.name)
        if record.type == MODEL:
            answer["poll"] = url_for("mlops_models.model_export_state", model_id=record.name)
    return answer


@blueprint.get("/exports/<any(model, dataset):type>/<path:name>")
def download_export(type: str, name: str):
    """Stream an exported file, with its size and SHA-256 in the headers."""
    export = platform().export_file(platform().record(type, name))
    handle, _size = open_file(export.path.parent, export.path.name)
    response = send_file(handle, mimetype="application/octet-stream", as_attachment=True,
                         download_name=export.filename, conditional=False, etag=export.sha256)
    response.headers["Content-Length"] = str(export.size)
    response.headers["X-Content-SHA256"] = export.sha256
    return response
