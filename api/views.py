"""How jobs are shown over HTTP: the Essedum status shape, the seed README's status shape, times."""
from __future__ import annotations

import re
from datetime import datetime, timezone, tzinfo
from typing import Any

from flask import current_app, request

from mlops.aws_statuses import COMPLETED, FAILED, IN_PROGRESS, PENDING, STOPPED
from mlops.errors import MalformedRequest
from mlops.job_ids import find_job as find_job_by_id
from mlops.job_requests import TrainingRequest, request_to_show

from db import Store
from job import TUNING, Job, JobStatus

# A job's status in the words of AWS's training jobs, which Essedum reads, for a job AWS has not described.
AWS_STATUS_OF = {JobStatus.WAITING: PENDING, JobStatus.RUNNING: IN_PROGRESS, JobStatus.COMPLETED: COMPLETED,
                 JobStatus.ERROR: FAILED, JobStatus.CANCELLED: STOPPED}


def executor():
    """Return the running executor (store, queue, backend, config) of this app."""
    return current_app.config["EXECUTOR"]


ORIGIN_TEXT = re.compile(r"^[\w .:@/-]{1,255}$")


def find_job(job_id: str, field: str = "job_id") -> Job:
    """Return the job with this id or unique id prefix; 400 malformed, 404 unknown, 409 ambiguous, naming `field`."""
    return find_job_by_id(executor().store, job_id, field)


def essedum_origin() -> dict[str, Any]:
    """The Essedum adapter instance and project a request names (query parameters or headers)."""
    values = {"adapter": request.args.get("adapter_instance"),
              "project": request.args.get("project") or request.headers.get("Project")}
    for field, value in values.items():
        if value is not None and not ORIGIN_TEXT.match(value):
            raise MalformedRequest(field, "must be 1-255 letters, digits or . : @ / - _ space")
    return values


def format_time(epoch: float | None, zone: tzinfo | None) -> str | None:
    """Format a time as the Essedum backend parses it: 'YYYY-MM-DD HH:MM:SS.ffffff+HH:MM'."""
    if epoch is None:
        return None
    moment = datetime.fromtimestamp(epoch, zone) if zone else datetime.fromtimestamp(epoch).astimezone()
    # str() would drop the fraction when it is zero, which the backend's pattern does not accept.
    return moment.isoformat(sep=" ", timespec="microseconds")


def format_record_time(epoch: float | None) -> str | None:
    """Format a record time as the backend's SageMaker adapter parses it: 'yyyy-MM-dd HH-mm-ss', UTC.

    ICIPModelAWSServiceSageMaker reads createdOn and syncDate with SimpleDateFormat("yyyy-MM-dd HH-mm-ss").
    """
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d %H-%M-%S")


def run_times(job: Job) -> tuple[float | None, float | None, float | None]:
    """Return (started, finished, seconds from started to finished) as the Essedum backend reads them.

    The backend (ICIPRemoteLoggerService) stores `started + timestamp` as the finish time, and reads
    all three for every final status; a final job without a start time started when it ended.
    """
    if job.finished is None or not job.status.is_final:
        return job.started, None, None
    started = job.finished if job.started is None else job.started
    return started, job.finished, round(job.finished - started, 6)


def log_location(job: Job) -> str:
    """Return where clients read the job's log: where its platform said it publishes it, else the executor's file."""
    return job.details.get("log_location") or job.log_path


def essedum_status(job: Job, zone: tzinfo | None) -> dict[str, Any]:
    """Return the body of GET /execute/<id>/getStatus."""
    started, finished, seconds = run_times(job)
    return {
        "task_id": job.id,
        "pid": job.pid or job.external_id,
        "task_status": job.status.value,
        "log_path": log_location(job),
        "submitted": format_time(job.submitted, zone),
        "started": format_time(started, zone),
        "finished": format_time(finished, zone),
        "output_dir": job.output_dir,
        "timestamp": seconds,
        "phase": job.phase,
        "failure_reason": job.failure_reason,
    }


def essedum_list_entry(job: Job, zone: tzinfo | None) -> dict[str, Any]:
    """Return one entry of GET /execute."""
    started, finished, _ = run_times(job)
    return {"id": job.id, "status": job.status.value, "submitted": format_time(job.submitted, zone),
            "started": format_time(started, zone), "finished": format_time(finished, zone),
            "pid": job.pid or job.external_id, "logpath": log_location(job)}


def job_status(job: Job, store: Store, zone: tzinfo | None) -> dict[str, Any]:
    """Return the body of GET /status/<id>: status, phase, progress, metrics, failure and artifacts."""
    progress = {"epoch": None, "epochs": None, "percent": 100.0 if job.status is JobStatus.COMPLETED else None}
    progress.update(job.progress)
    started, finished, seconds = run_times(job)
    request = request_to_show(job.kind, job.request)
    body = {
        "job_id": job.id,
        "kind": job.kind,
        "backend": job.backend,
        "name": request.name,
        "status": job.status.value,
        "phase": job.phase,
        "progress": progress,
        "metrics": store.latest_metrics(job.id),
        "failure_reason": job.failure_reason,
        "artifacts": job.artifacts,
        "external_id": job.external_id,
        "details": job.details,
        "submitted": format_time(job.submitted, zone),
        "started": format_time(started, zone),
        "finished": format_time(finished, zone),
        "timestamp": seconds,
        "attempts": job.attempts,
        "executor": job.owner,
    }
    if not isinstance(request, TrainingRequest):
        return body
    if job.kind == TUNING:
        # A tuning's progress counts trials (done, total, running); its trials and best one are its own.
        search = request.search()
        body["progress"] = {"done": 0, "total": search["max_trials"], "running": 0, **job.progress}
        body["objective"] = search["objective"]
        body["best"] = job.details.get("best")
        body["trials"] = job.details.get("trials", [])
    elif request.parent:
        body["parent"], body["trial"] = request.parent, request.trial
    return body
