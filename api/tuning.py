"""Tuning routes: POST /api/service/v1/pipelines/tuning, and a tuning's record (/<id>/get) and list."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, url_for

from api import schemas
from api.docs import documented
from api.training import training_request
from api.views import executor, find_job, job_status
from job import TUNING, Job
from mlops.errors import NotFound
from mlops.job_requests import TrainingRequest, request_to_show
from mlops.tuning import EARLY_STOPPING, GOALS, SCALINGS, STRATEGIES, WARM_START_TYPES

blueprint = Blueprint("tuning", __name__, url_prefix="/api/service/v1/pipelines/tuning")

NUMBER = {"type": "number"}
RANGE = {
    "type": "object", "additionalProperties": False,
    "description": "values to try, or min and max (with the scaling, and the type where the script's own is "
                   "not meant)",
    "properties": {
        "values": {"type": "array", "minItems": 1, "maxItems": 100,
                   "items": {"type": ["string", "number", "boolean"], "maxLength": 256}},
        "min": NUMBER, "max": NUMBER,
        "scaling": {"type": "string", "enum": list(SCALINGS)},
        "type": {"type": "string", "enum": ["continuous", "integer"]},
    },
}
TUNING_OBJECT = {
    "type": "object", "additionalProperties": False, "required": ["objective", "ranges"],
    "properties": {
        "objective": {"type": "object", "additionalProperties": False, "required": ["metric"],
                      "properties": {"metric": schemas.text(255), "goal": {"type": "string", "enum": list(GOALS)}}},
        "ranges": {"type": "object", "maxProperties": 90,
                   "propertyNames": {"minLength": 1, "maxLength": 256, "pattern": "^[A-Za-z0-9_.-]+$"},
                   "additionalProperties": RANGE},
        "strategy": {"type": "string", "enum": list(STRATEGIES)},
        "max_trials": {"type": "integer", "minimum": 1, "maximum": 500},
        "max_parallel": {"type": "integer", "minimum": 1, "maximum": 100},
        "early_stopping": {"type": "string", "enum": list(EARLY_STOPPING)},
        "warm_start": {"type": "object", "additionalProperties": False, "required": ["from"],
                       "properties": {"from": {"type": "array", "minItems": 1, "maxItems": 5,
                                               "items": schemas.text(64)},
                                      "type": {"type": "string", "enum": list(WARM_START_TYPES)}}},
        "max_runtime_seconds": {"type": "integer", "minimum": 1, "maximum": 2419200},
        "seed": {"type": "integer", "minimum": 0, "maximum": 2 ** 31 - 1},
    },
}
TUNING_REQUEST = {
    **schemas.TRAINING,
    "title": "TuningRequest",
    "description": "Search the hyperparameters of a training: its trials are training jobs with this job as parent.",
    "required": ["name", "dataset", "tuning"],
    "properties": {**schemas.TRAINING["properties"], "tuning": TUNING_OBJECT},
}
CREATED = {**schemas.ACCEPTED, "title": "TuningCreated"}


@blueprint.post("")
@documented(TUNING_REQUEST, status=201, summary="Tune a training's hyperparameters", response_schema=CREATED)
def submit_tuning():
    body = schemas.json_body(TUNING_REQUEST)
    tuning = dict(body["tuning"])
    if tuning.get("warm_start"):
        tuning["warm_start"] = {"type": "identical", **tuning["warm_start"]}
    job = executor().queue.submit(TUNING, training_request(body).with_changes(tuning=tuning))
    status_url = url_for("training.status", job_id=job.id)
    return jsonify(job_id=job.id, status=job.status.value, status_url=status_url,
                   log_url=url_for("execute.get_log", task_id=job.id)), 201, {"Location": status_url}


@blueprint.get("/list")
def list_tunings():
    store, zone = executor().store, executor().config.timezone
    return jsonify([tuning_view(job, store, zone) for job in store.list_jobs(limit=1000, kind=TUNING)])


@blueprint.get("/<job_id>/get")
def get_tuning(job_id: str):
    job = find_job(job_id)
    if job.kind != TUNING:
        raise NotFound("id", f"no tuning job {job_id}")
    return jsonify(tuning_view(job, executor().store, executor().config.timezone))


def trials_of(job: Job) -> list[Job]:
    """Return the trial jobs of a tuning, first trial first; 404 for a job that is not a tuning."""
    if job.kind != TUNING:
        raise NotFound("parent", f"job {job.id} is not a tuning")
    store = executor().store
    trials = (store.get(row["job_id"]) for row in job.details.get("trials", []))
    return [trial for trial in trials if trial is not None]


def tuning_view(job: Job, store: Any, zone: Any) -> dict[str, Any]:
    """Return a tuning as its routes answer it: the status body with what was asked."""
    request = request_to_show(job.kind, job.request)
    # A row holding less than a tuning requires still answers, with what it asked left out.
    asked = request if isinstance(request, TrainingRequest) else None
    return {**job_status(job, store, zone), "tuning": asked and asked.tuning,
            "hyperparameters": asked and asked.hyperparameters}
