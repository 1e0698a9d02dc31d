"""The seed README's routes: POST /api/service/v1/pipelines/training and GET /status/<id>."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Blueprint, jsonify, url_for

from api import schemas
from api.docs import documented
from api.execute import find_job
from api.views import executor, job_status
from mlops.platform import TRAINING
from mlops.errors import InvalidRequest
from mlops.script_contract import BUNDLED_ENTRY_POINT, BUNDLED_SCRIPTS
from mlops.shapes import tag_map
from mlops.staging import S3_URI, resolve_storage_path

blueprint = Blueprint("training", __name__)


def normalise_training(body: dict[str, Any]) -> dict[str, Any]:
    """Fill a training request's defaults and resolve its paths inside the storage root."""
    config = executor().config
    request = {
        "name": body["name"],
        "dataset": body["dataset"],
        "metadata_file": body.get("metadata_file"),
        "hyperparameters": body.get("hyperparameters", {}),
        "instance_type": body.get("instance_type"),
        "instance_count": body.get("instance_count", 1),
        "max_runtime_seconds": body.get("max_runtime_seconds", config.max_runtime_seconds),
        "spot": body.get("spot", False),
        "entry_point": body.get("entry_point", BUNDLED_ENTRY_POINT),
        "tags": tag_map(body.get("tags", {})),
        "retry_on_restart": body.get("retry_on_restart", False),
    }
    if not S3_URI.match(body["dataset"]):
        request["dataset_path"] = str(resolve_storage_path(config.storage_root, body["dataset"], "dataset"))
    elif not S3_URI.match(body["dataset"]).group(1):
        raise InvalidRequest("dataset", "s3:// URI needs a bucket")
    if body.get("metadata_file") and (".." in Path(body["metadata_file"]).parts or
                                      Path(body["metadata_file"]).is_absolute()):
        raise InvalidRequest("metadata_file", "must be a relative path inside the dataset")
    if ".." in Path(request["entry_point"]).parts:
        raise InvalidRequest("entry_point", "must be a path inside source_dir")
    if body.get("source_dir"):
        request["source_dir"] = str(resolve_storage_path(config.storage_root, body["source_dir"], "source_dir"))
    else:
        request["source_dir"] = str(BUNDLED_SCRIPTS)
    return request


@blueprint.post("/api/service/v1/pipelines/training")
@documented(schemas.TRAINING, status=202, summary="Submit a training job", response_schema=schemas.ACCEPTED)
def submit_training():
    body = schemas.json_body(schemas.TRAINING)
    job = executor().queue.submit(TRAINING, normalise_training(body))
    status_url = url_for("training.status", job_id=job.id)
    return jsonify(job_id=job.id, status=job.status.value, phase=job.phase, status_url=status_url,
                   log_url=url_for("execute.get_log", task_id=job.id)), 202, {"Location": status_url}


@blueprint.get("/status/<job_id>")
def status(job_id: str):
    return jsonify(job_status(find_job(job_id), executor().store, executor().config.timezone))
