"""Essedum's MLOps routes for models, endpoints, batch inference and datasets (contract §2).

Each route validates, then calls the platform's model lifecycle (`backend.model_lifecycle`, local or
SageMaker); long operations come back 202 with the job that does them. Answers are records in the
Essedum shape.
"""
from __future__ import annotations

import base64
import json
import mimetypes
import re
from typing import Any

from flask import Blueprint, jsonify, request, url_for

from api import model_schemas
from api.docs import documented
from api.schemas import json_body, validate
from api.views import essedum_origin, executor, format_time
from db import Job, Record
from mlops.base import ENDPOINT, TRANSFORM
from mlops.errors import MalformedRequest
from mlops.records import (DATASET, ENDPOINT_CONFIG, ENDPOINT_RECORD, MAX_INVOKE_BYTES, MODEL,
                                   TRANSFORM_RECORD, ModelLifecycle)

blueprint = Blueprint("mlops_models", __name__, url_prefix="/api/service/v1")

NAME = re.compile(model_schemas.RESOURCE_NAME)
ORIGIN_QUERY = {"adapter_instance": {"type": "string", "description": "Essedum adapter (picks the AWS profile)"},
                "project": {"type": "string", "description": "Essedum project"}}
# Room for the multipart envelope around a file of the largest accepted size.
FORM_OVERHEAD_BYTES = 1 << 20


def lifecycle() -> ModelLifecycle:
    """Return the model lifecycle of the executor's platform."""
    return executor().backend.model_lifecycle


def record_view(record: Record) -> dict[str, Any]:
    """Return a record in the Essedum shape; rawPayload is a JSON string."""
    payload, zone = record.payload, executor().config.timezone
    view = {
        "sourceID": payload.get("arn") or f"local:{record.type}/{record.name}",
        "container": payload.get("container"),
        "adapter": payload.get("adapter"),
        "rawPayload": json.dumps(payload.get("raw") or {}, default=str),
        "syncDate": format_time(record.updated, zone),
        "description": payload.get("description") or "",
        "project": payload.get("project"),
        "type": record.type,
        "createdOn": format_time(record.created, zone),
        "sourceOrg": payload.get("source_org"),
        "name": record.name,
        "id": record.name,
        "sourcename": record.name,
        "status": record.status,
        "artifacts": payload.get("artifacts"),
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
        return {"endpoints": lifecycle().endpoints_using("model_names", record.name)}
    return payload.get("deployment")


def queue_record_job(kind: str, request: dict[str, Any]) -> tuple[Job, Record]:
    """Check a deployment or transform once, mark its record pending and queue the job that does it."""
    queue = executor().queue
    request = queue.check(kind, request)
    with lifecycle().pending(kind, request) as record:
        job = queue.enqueue(kind, request, job_id=record.job_id)
    # The record as queued: a worker may have moved it on already, which a GET will show.
    return job, record


def _path_name(value: str) -> str:
    if not NAME.match(value):
        raise MalformedRequest("id", "must be 1-63 letters, digits and hyphens, starting with a letter or digit")
    return value


def _found(type: str, name: str) -> Record:
    return lifecycle().record(type, _path_name(name))


# -- models ------------------------------------------------------------------------------------

@blueprint.post("/models/register")
@documented(model_schemas.MODEL, status=201, summary="Register a model", query=ORIGIN_QUERY)
def register_model():
    body = json_body(model_schemas.MODEL)
    return jsonify(record_view(lifecycle().register_model(body, essedum_origin()))), 201


@blueprint.get("/models/list")
def list_models():
    return jsonify([record_view(record) for record in lifecycle().records(MODEL)])


@blueprint.get("/models/<model_id>")
def get_model(model_id: str):
    return jsonify(record_view(_found(MODEL, model_id)))


@blueprint.delete("/models/<model_id>")
def delete_model(model_id: str):
    lifecycle().delete_model(_path_name(model_id), essedum_origin()["adapter"])
    return jsonify(message=f"model {model_id} deleted", id=model_id, type=MODEL)


# -- endpoints ---------------------------------------------------------------------------------

@blueprint.post("/endpoints/register")
@documented(model_schemas.ENDPOINT_CONFIG, status=201, summary="Create an endpoint configuration",
            query=ORIGIN_QUERY)
def register_endpoint():
    body = json_body(model_schemas.ENDPOINT_CONFIG)
    return jsonify(record_view(lifecycle().register_endpoint(body, essedum_origin()))), 201


@blueprint.post("/endpoints/<endpoint_id>/deploy_model")
@documented(model_schemas.DEPLOY, status=202, summary="Create or update an endpoint (a queued job)",
            query=ORIGIN_QUERY)
def deploy_model(endpoint_id: str):
    body = json_body(model_schemas.DEPLOY)
    _path_name(endpoint_id)
    config_name = body.get("EndpointConfigName")
    if not config_name and lifecycle().find(ENDPOINT_CONFIG, endpoint_id):
        config_name = endpoint_id
    if not config_name:
        raise MalformedRequest("EndpointConfigName", "is required")
    deployment = {"EndpointName": body.get("EndpointName") or endpoint_id, "EndpointConfigName": config_name,
                  **({"Tags": body["Tags"]} if body.get("Tags") else {}), **essedum_origin()}
    job, record = queue_record_job(ENDPOINT, deployment)
    location = url_for("mlops_models.get_endpoint", endpoint_id=record.name)
    return jsonify({**record_view(record), "jobId": job.id}), 202, {"Location": location}


@blueprint.get("/endpoints/list")
def list_endpoints():
    records = lifecycle().records(ENDPOINT_RECORD) + lifecycle().records(ENDPOINT_CONFIG)
    return jsonify([record_view(record) for record in records])


@blueprint.get("/endpoints/<endpoint_id>")
def get_endpoint(endpoint_id: str):
    _path_name(endpoint_id)
    record = lifecycle().find(ENDPOINT_RECORD, endpoint_id) or lifecycle().record(ENDPOINT_CONFIG, endpoint_id)
    return jsonify(record_view(record))


@blueprint.delete("/endpoints/<endpoint_id>")
@blueprint.route("/endpoints/<endpoint_id>/delete", methods=["GET", "POST", "DELETE"])
def delete_endpoint(endpoint_id: str):
    _path_name(endpoint_id)
    adapter = essedum_origin()["adapter"]
    if lifecycle().find(ENDPOINT_RECORD, endpoint_id):
        lifecycle().delete_endpoint(endpoint_id, adapter)
        return jsonify(message=f"endpoint {endpoint_id} deleted", id=endpoint_id, type=ENDPOINT_RECORD)
    lifecycle().delete_endpoint_config(endpoint_id, adapter)
    return jsonify(message=f"endpoint configuration {endpoint_id} deleted", id=endpoint_id, type=ENDPOINT_CONFIG)


@blueprint.post("/endpoints/<endpoint_id>/infer")
@documented(summary="Predict: a JSON or CSV body, images (multipart), or {\"S3Uri\": \"s3://...\"}",
            query=ORIGIN_QUERY)
def infer(endpoint_id: str):
    _path_name(endpoint_id)
    request.max_content_length = MAX_INVOKE_BYTES + FORM_OVERHEAD_BYTES
    adapter = essedum_origin()["adapter"]
    body, content_type = _inference_payload(adapter)
    accept = request.headers.get("Accept")
    accept = None if not accept or accept.strip() == "*/*" else accept
    answer, answer_type = lifecycle().invoke(endpoint_id, body, content_type, accept, adapter)
    if answer_type.split(";", 1)[0].strip().lower().endswith("json"):
        try:
            return jsonify(json.loads(answer))
        except ValueError:
            pass
    return jsonify(predictions=answer.decode("utf-8", errors="replace"), contentType=answer_type)


def _inference_payload(adapter: str | None) -> tuple[bytes, str]:
    """Return what to send to the model: the JSON or CSV body, an uploaded image, or an S3 object."""
    if request.mimetype == "multipart/form-data":
        files = [item for item in request.files.getlist("file") if item.filename or item.mimetype]
        if not files:
            raise MalformedRequest("file", "upload one or more images in the 'file' field")
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
        try:
            payload = json.loads(raw)
        except ValueError as exc:
            raise MalformedRequest("body", f"not valid JSON: {exc}") from None
        if isinstance(payload, dict) and "S3Uri" in payload:
            if not isinstance(payload["S3Uri"], str):
                raise MalformedRequest("S3Uri", "must be a string")
            return lifecycle().read_s3_payload(payload["S3Uri"], adapter)
    return raw, content_type


def _file_type(item: Any) -> str:
    declared = (item.mimetype or "").lower()
    if declared and declared != "application/octet-stream":
        return declared
    return mimetypes.guess_type(item.filename or "")[0] or "application/octet-stream"


# -- batch inference ---------------------------------------------------------------------------

@blueprint.post("/pipelines/inference")
@documented(model_schemas.TRANSFORM, status=202, summary="Start batch inference (a queued job)",
            query=ORIGIN_QUERY)
def create_transform():
    body = json_body(model_schemas.TRANSFORM)
    job, record = queue_record_job(TRANSFORM, {**body, **essedum_origin()})
    location = url_for("mlops_models.get_transform", transform_id=record.name)
    return jsonify({**record_view(record), "jobId": job.id}), 202, {"Location": location}


@blueprint.get("/pipelines/inference/list")
def list_transforms():
    return jsonify([record_view(record) for record in lifecycle().records(TRANSFORM_RECORD)])


@blueprint.route("/pipelines/inference/<transform_id>/get", methods=["GET", "POST"])
def get_transform(transform_id: str):
    return jsonify(record_view(_found(TRANSFORM_RECORD, transform_id)))


# -- datasets ----------------------------------------------------------------------------------

@blueprint.post("/datasets")
@documented(model_schemas.DATASET_FORM, status=201, summary="Upload a dataset file (multipart: file, Bucket, Key)",
            query=ORIGIN_QUERY)
def upload_dataset():
    # Only this route takes large bodies; every other keeps the app's small JSON limit.
    request.max_content_length = executor().config.max_upload_bytes + FORM_OVERHEAD_BYTES
    if request.mimetype != "multipart/form-data":
        raise MalformedRequest("file", "send multipart/form-data with a 'file' part and Bucket, Key fields")
    form = {key: request.form[key] for key in request.form}
    validate(form, model_schemas.DATASET_FORM)
    upload = request.files.get("file")
    if upload is None:
        raise MalformedRequest("file", "is required")
    record = lifecycle().upload_dataset(form.get("Bucket"), form["Key"], upload.stream, upload.filename,
                                        essedum_origin(), form.get("Description", ""))
    return jsonify(record_view(record)), 201


@blueprint.get("/datasets/list")
def list_datasets():
    return jsonify([record_view(record) for record in lifecycle().records(DATASET)])


@blueprint.get("/datasets/<path:dataset_id>")
def get_dataset(dataset_id: str):
    return jsonify(record_view(lifecycle().record(DATASET, dataset_id)))


@blueprint.delete("/datasets/<path:dataset_id>")
def delete_dataset(dataset_id: str):
    lifecycle().delete_dataset(dataset_id, essedum_origin()["adapter"])
    return jsonify(message=f"dataset {dataset_id} deleted", id=dataset_id, type=DATASET)
