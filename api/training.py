"""The seed README's routes: POST /api/service/v1/pipelines/training and GET /status/<id>."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, url_for

from api import schemas
from api.docs import documented
from api.views import executor, find_job, job_status
from mlops.job_requests import TrainingRequest
from job import TRAINING

blueprint = Blueprint("training", __name__)


def training_request(body: dict[str, Any]) -> TrainingRequest:
    """Return the typed request of a schema-checked training body (defaults filled, paths resolved)."""
    config = executor().config
    return TrainingRequest.from_body(body, config.storage_root, config.max_runtime_seconds)


@blueprint.post("/api/service/v1/pipelines/training")
@documented(schemas.TRAINING, status=202, summary="Submit a training job", response_schema=schemas.ACCEPTED)
def submit_training():
    body = schemas.json_body(schemas.TRAINING)
    job = executor().queue.submit(TRAINING, training_request(body))
    status_url = url_for("training.status", job_id=job.id)
    return jsonify(job_id=job.id, status=job.status.value, phase=job.phase, status_url=status_url,
                   log_url=url_for("execute.get_log", task_id=job.id)), 202, {"Location": status_url}


@blueprint.get("/status/<job_id>")
def status(job_id: str):
    return jsonify(job_status(find_job(job_id), executor().store, executor().config.timezone))
