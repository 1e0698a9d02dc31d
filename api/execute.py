"""The Essedum base job API: POST /execute and the per-task routes the backend polls."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Blueprint, current_app, jsonify

from api import schemas
from api.docs import documented
from api.views import AWS_STATUS_OF, essedum_list_entry, essedum_status, executor, find_job, log_location
from job import PIPELINE, Job
from mlops.aws_statuses import STOPPED, STOPPING
from mlops.job_requests import PipelineRequest
from mlops.job_files import UnsafeFile, read_tail

blueprint = Blueprint("execute", __name__)

LOG_LIMIT_BYTES = 5 << 20


def submit_pipeline() -> tuple[Any, int]:
    """Validate a pipeline body, queue it, and answer as the Essedum backend expects."""
    body = schemas.json_body(schemas.EXECUTE)
    request, secrets = PipelineRequest.from_body(body)
    job = executor().queue.submit(PIPELINE, request, secrets)
    return jsonify(task_id=job.id, task_status="Submitted", log_path=log_location(job)), 201


@blueprint.post("/execute")
@documented(schemas.EXECUTE, status=201, summary="Submit an Essedum pipeline")
def execute():
    return submit_pipeline()


@blueprint.get("/execute")
def list_jobs():
    """List the latest 100 jobs, newest first (Essedum's shape)."""
    zone = executor().config.timezone
    return jsonify([essedum_list_entry(job, zone) for job in executor().store.list_jobs(limit=100)])


# The Essedum backend polls getStatus for every job it follows. An answer depends on the job's row
# alone, so each is kept until the store next writes (any write: the counter is the store's); at most
# this many are kept, then all are dropped at once.
STATUS_ANSWERS_KEPT = 4096


@blueprint.get("/execute/<task_id>/getStatus")
def get_status(task_id: str):
    """Return a job's status and times as the Essedum backend parses them."""
    answers = current_app.extensions.setdefault("executor_status_answers", {})
    changes = executor().store.changes
    kept = answers.get(task_id)
    if kept is not None and kept[0] == changes:
        return current_app.response_class(kept[1], mimetype=current_app.json.mimetype)
    job = find_job(task_id, "task_id")
    response = jsonify(essedum_status(job, executor().config.timezone))
    # Only under the full id: a prefix is looked up again, since tomorrow it may name two jobs.
    if job.id == task_id:
        if len(answers) >= STATUS_ANSWERS_KEPT:
            answers.clear()
        answers[task_id] = (changes, response.get_data())
    return response


@blueprint.route("/execute/<task_id>/stop", methods=["GET", "POST"])
def stop(task_id: str):
    """Stop a job (a waiting one at once); true when it was cancelled or is stopping."""
    job = find_job(task_id, "task_id")
    return jsonify({"Task cancelled": bool(executor().queue.cancel(job.id))})


@blueprint.get("/execute/<task_id>/getLog")
def get_log(task_id: str):
    """Return a job's log (its last 5 MiB)."""
    return jsonify(logs={"content": read_log_tail(find_job(task_id, "task_id"))})


def read_log_tail(job: Job, limit: int = LOG_LIMIT_BYTES) -> str:
    """Return the job log, or its last `limit` bytes when it is longer; never through a link."""
    data_dir = executor().config.data_dir
    try:
        data, size = read_tail(data_dir, Path(job.log_path).relative_to(data_dir), limit)
    except FileNotFoundError:
        return ""
    except UnsafeFile:
        return "[executor] the job log is not a regular file (a link, FIFO or device put in its place): not read\n"
    except (OSError, ValueError) as exc:
        return f"[executor] the job log cannot be read: {type(exc).__name__}\n"
    text = data.decode("utf-8", errors="replace")
    return text if size <= limit else f"[... {size - limit} earlier bytes omitted ...]\n{text}"


@blueprint.get("/execute/<task_id>/getOutputArtifacts")
def get_output_artifacts(task_id: str):
    """Return a job's output files by stem, with their text or JSON content."""
    return jsonify(executor().platform.output_artifacts(find_job(task_id, "task_id")))


@dataclass(frozen=True)
class StopOutcome:
    """What asking a job to stop achieved, in the words of the AWS status the backend shows."""

    ended: bool
    status: str
    message: str


def stop_job(job_id: str | None) -> StopOutcome:
    """Stop a job if it is waiting or running; say whether it has ended."""
    job = executor().store.get(job_id) if job_id else None
    if job is None:
        return StopOutcome(True, STOPPED, "no job is running for it")
    if job.status.is_final:
        return StopOutcome(True, AWS_STATUS_OF[job.status], f"it had already ended ({job.status.value})")
    executor().queue.cancel(job.id)
    job = executor().store.get(job.id)
    if job.status.is_final:
        return StopOutcome(True, AWS_STATUS_OF[job.status], "it was stopped before it started")
    return StopOutcome(False, STOPPING, "it is being stopped")
