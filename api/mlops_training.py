"""Essedum's MLOps training routes (contract §2): AutoML, custom scripts, and training job records.

Anything that creates something in AWS goes through the queue; the routes only read: the CSV
header a /train request names, and a job's live description for /<id>/get, both through the
platform.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, jsonify, url_for

from api import schemas
from api.docs import documented
from api.execute import stop_job, submit_pipeline
from api.views import AWS_STATUS_OF, essedum_origin, executor, format_record_time
from job import AUTOML, PIPELINE, TRAINING, Job, JobStatus
from job_secrets import redact_description
from mlops.aws_statuses import STOPPED, STOPPING
from mlops.platform import Platform
from mlops.errors import MalformedRequest, NotFound, NotSupported
from mlops.job_ids import find_job, is_id_prefix
from mlops.job_requests import AutoMLRequest, PipelineRequest, request_to_show
from mlops.shapes import AUTOML_CONTENT_TYPES, AUTOML_MODES, AUTOML_PROBLEM_TYPES, best_candidate

blueprint = Blueprint("mlops_training", __name__, url_prefix="/api/service/v1")
# Essedum calls /cloudconnect outside the /api/service/v1 prefix.
cloud_blueprint = Blueprint("cloudconnect", __name__)

TRAINING_KINDS = (TRAINING, AUTOML, PIPELINE)
SAGEMAKER_JOB_NAME = re.compile(r"^[A-Za-z0-9-]{1,63}$")
TRAINING_ARN = re.compile(r"^arn:aws[a-z-]*:sagemaker:[a-z0-9-]*:\d{12}:(?:training|automl)-job/(?P<name>[^/]+)$")

S3_URI_TEXT = schemas.text(1024, pattern="^s3://[^\\u0000]+$")
TAG_LIST = {"type": "array", "maxItems": 48, "items": {
    "type": "object", "additionalProperties": False, "required": ["Key", "Value"],
    "properties": {"Key": schemas.text(128), "Value": {"type": "string", "maxLength": 256}}}}

TRAIN = {
    "title": "AutoMLOnCsv",
    "description": "AutoML (SageMaker Autopilot) on a CSV in S3, predicting one of its columns.",
    "type": "object",
    "additionalProperties": False,
    "required": ["RoleArn", "Bucket", "inputs", "target_attribute_name"],
    "properties": {
        "RoleArn": schemas.text(2048), "Bucket": schemas.text(63), "S3Prefix": {"type": "string", "maxLength": 512},
        "inputs": S3_URI_TEXT, "target_attribute_name": schemas.text(255),
        "content_type": {"type": "string", "enum": list(AUTOML_CONTENT_TYPES)},
        "problem_type": {"type": "string", "enum": list(AUTOML_PROBLEM_TYPES),
                         "description": "optional; SageMaker infers it from the target column when absent"},
    },
}

AUTOML_JOB = {
    "title": "AutoMLJob",
    "description": "A SageMaker AutoML (CreateAutoMLJobV2) job on tabular data.",
    "type": "object",
    "additionalProperties": False,
    "required": ["input_data_config", "output_data_config", "target_attribute_name"],
    "properties": {
        "job_name": schemas.text(32),
        "input_data_config": {"type": "object", "additionalProperties": False, "required": ["s3_uri"],
                              "properties": {"s3_uri": S3_URI_TEXT,
                                             "content_type": {"type": "string", "enum": list(AUTOML_CONTENT_TYPES)}}},
        "output_data_config": {"type": "object", "additionalProperties": False, "required": ["s3_output_path"],
                               "properties": {"s3_output_path": S3_URI_TEXT}},
        "target_attribute_name": schemas.text(255),
        "problem_type": {"type": "string", "enum": list(AUTOML_PROBLEM_TYPES)},
        "objective": {"type": "object", "additionalProperties": False, "required": ["metric_name"],
                      "properties": {"metric_name": schemas.text(64)}},
        "max_candidates": {"type": "integer", "minimum": 1, "maximum": 750},
        # A candidate is a training job (AWS's MaxRuntimeInSeconds: at most 28 days); the whole job 30 days.
        "max_runtime_per_training_job_in_seconds": {"type": "integer", "minimum": 1, "maximum": 28 * 24 * 3600},
        "total_job_runtime_in_seconds": {"type": "integer", "minimum": 1, "maximum": 30 * 24 * 3600},
        "role_arn": schemas.text(2048),
        "mode": {"type": "string", "enum": list(AUTOML_MODES)},
        "tags": TAG_LIST,
        "generate_candidate_definitions_only": {"type": "boolean"},
    },
}


def _automl_platform() -> Platform:
    platform = executor().platform
    if AUTOML not in platform.kinds:
        raise NotSupported("", f"the {platform.name} backend does not run AutoML jobs")
    return platform


def _accepted(job: Job, status: int):
    body = {"job_name": asked_of(job).name, "job_arn": None,
            "status": "Submitted", "job_id": job.id,
            "status_url": url_for("mlops_training.get_job", job_id=job.id)}
    return jsonify(body), status, {"Location": body["status_url"]}


@blueprint.post("/pipelines/training/train")
@documented(TRAIN, status=202, summary="AutoML on a CSV in S3", response_schema=schemas.AUTOML_ACCEPTED)
def train():
    body = schemas.json_body(TRAIN)
    platform = _automl_platform()
    automl_request = AutoMLRequest.from_train_body(body, essedum_origin())
    columns = platform.csv_columns(automl_request.input_s3_uri)
    target = automl_request.target_attribute_name
    if target not in columns:
        raise MalformedRequest("target_attribute_name", f"{target!r} is not a column of {automl_request.input_s3_uri}",
                               available_columns=columns)
    return _accepted(executor().queue.submit(AUTOML, automl_request), 202)


@blueprint.post("/pipelines/training/automl")
@documented(AUTOML_JOB, status=201, summary="Create a SageMaker AutoML job")
def create_automl():
    body = schemas.json_body(AUTOML_JOB)
    _automl_platform()
    automl_request = AutoMLRequest.from_automl_body(body, essedum_origin())
    return _accepted(executor().queue.submit(AUTOML, automl_request), 201)


@blueprint.post("/pipelines/training/custom_script")
@documented(schemas.EXECUTE, status=201, summary="Run a pipeline's own script (as POST /execute)")
def custom_script():
    return submit_pipeline()


@blueprint.get("/pipelines/training/list")
def list_jobs():
    jobs = executor().store.list_jobs(limit=1000, kinds=TRAINING_KINDS)
    return jsonify([job_record(job) for job in jobs])


@blueprint.get("/pipelines/training/<path:job_id>/get")
def get_job(job_id: str):
    job = find_training_job(job_id)
    described = executor().platform.describe(job) if not job.status.is_final else None
    return jsonify(job_record(job, described))


@blueprint.get("/pipelines/training/<path:job_id>/cancel")
def cancel_job(job_id: str):
    job = find_training_job(job_id)
    outcome = executor().queue.cancel(job.id)
    job = executor().store.get(job.id)
    if job.status is JobStatus.CANCELLED:
        status, message = STOPPED, "the job was cancelled before it started"
    elif outcome and job.status is JobStatus.RUNNING:
        status, message = STOPPING, "the job is being stopped"
    else:
        status, message = _aws_status(job, None), f"the job had already ended ({job.status.value})"
    return jsonify(message=message, job_name=job.external_id or asked_of(job).name, job_id=job.id, status=status)


@blueprint.delete("/projects_pipelines/<path:job_id>/delete")
def delete_job(job_id: str):
    """Stop a training job if it runs, then forget it; one that is still stopping is kept (202)."""
    job = find_training_job(job_id)
    outcome = stop_job(job.id)
    name = display_name(job)
    if not outcome.ended or not executor().queue.delete(job.id):
        return jsonify(message=f"training job {name} is stopping; delete it again once it has stopped",
                       job_name=name, job_id=job.id, status=STOPPING, deleted=False), 202
    return jsonify(message=f"training job {name} deleted ({outcome.message})", job_name=name, job_id=job.id,
                   status=outcome.status, deleted=True)


@cloud_blueprint.post("/cloudconnect")
def cloudconnect():
    """Check the executor's own AWS configuration: credentials, bucket, role and instance type."""
    result = executor().platform.cloud_configuration()
    return jsonify(result), 200 if result["valid"] else 502


def find_training_job(job_id: str) -> Job:
    """Find a training, AutoML or custom-script job by executor id, SageMaker job name or its ARN."""
    store = executor().store
    arn = TRAINING_ARN.match(job_id)
    if arn:
        # SageMaker lowercases the name inside the ARN.
        job = next((candidate for candidate in store.list_jobs(limit=1000, kinds=TRAINING_KINDS)
                    if job_id in (candidate.details.get("sagemaker_job_arn"), candidate.details.get("automl_job_arn"))
                    or (candidate.external_id or "").lower() == arn.group("name")), None)
        if job is None:
            raise NotFound("id", f"no training job {job_id}")
        return job
    if not SAGEMAKER_JOB_NAME.match(job_id) and not is_id_prefix(job_id):
        raise MalformedRequest("id", "is neither a job id (or its first 4 characters or more) nor a SageMaker job name")
    job = next((candidate for candidate in store.list_jobs(limit=1000, kinds=TRAINING_KINDS)
                if job_id == candidate.external_id
                or (candidate.kind == AUTOML and job_id == asked_of(candidate).name)), None)
    if job is None and not is_id_prefix(job_id):
        raise NotFound("id", f"no training job {job_id}")
    return job or find_job(store, job_id, "id", kinds=TRAINING_KINDS)


@dataclass(frozen=True)
class Asked:
    """What a training, AutoML or custom-script job's request says of it, as its records show it."""

    #: The name the client gave the job (an AutoML job's job_name), if any.
    name: str | None
    description: str
    adapter: str | None = None
    project: str | None = None


def asked_of(job: Job) -> Asked:
    """Read what the records show of a job from its typed request, the same way for each family."""
    request = request_to_show(job.kind, job.request)
    if isinstance(request, AutoMLRequest):
        origin = request.origin or {}
        return Asked(request.job_name, request.target_attribute_name, origin.get("adapter"), origin.get("project"))
    if isinstance(request, PipelineRequest):
        return Asked(request.name, request.name or "", project=request.project_id)
    # A training job, or a row that holds less than its family requires: its name is all it says.
    return Asked(request.name, request.name or "")


def display_name(job: Job, asked: Asked | None = None) -> str:
    """Return the name a training job is shown by: its SageMaker name, else the client's, else its id."""
    return job.external_id or (asked or asked_of(job)).name or job.id


def _aws_status(job: Job, described: dict[str, Any] | None) -> str:
    if described:
        return described.get("TrainingJobStatus") or described.get("AutoMLJobStatus")
    return job.details.get("sagemaker_status") or AWS_STATUS_OF[job.status]


def job_record(job: Job, described: dict[str, Any] | None = None) -> dict[str, Any]:
    """Return a job as an Essedum MLOps record; with AWS's live description when given."""
    details = job.details
    asked = asked_of(job)
    kind = "custom_script" if job.kind == PIPELINE else job.kind
    raw = described or {key: details.get(key) for key in (
        "sagemaker_status", "secondary_status", "final_metrics", "training_seconds", "billable_seconds",
        "instance_type", "instance_count", "estimated_cost_usd", "cost_note", "best_candidate") if key in details}
    name = display_name(job, asked)
    record = {
        # An id the /pipelines/training/<id>/... routes accept (they take the ARN too).
        "sourceID": job.external_id or job.id,
        "arn": details.get("sagemaker_job_arn") or details.get("automl_job_arn"),
        "container": details.get("image_uri") or {},
        "adapter": asked.adapter,
        "rawPayload": json.dumps(redact_description(raw), default=str),
        "syncDate": format_record_time(job.updated),
        "description": asked.description,
        "project": asked.project,
        "type": kind,
        "createdOn": format_record_time(job.submitted),
        "sourceOrg": None,
        "name": name,
        "id": job.id,
        "sourcename": job.external_id or name,
        "status": _aws_status(job, described),
        "artifacts": job.artifacts or {},
        "deployment": None,
        "jobId": job.id,
        "jobStatus": _aws_status(job, described),
        "executorStatus": job.status.value,
        "phase": job.phase,
        "failureReason": job.failure_reason or (described or {}).get("FailureReason") or None,
        "metrics": executor().store.latest_metrics(job.id),
        "progress": job.progress,
    }
    if job.kind == AUTOML:
        record["bestCandidate"] = best_candidate(described) if described else details.get("best_candidate")
    return record
