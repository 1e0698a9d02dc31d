"""A job as the executor knows it: its status, the moves between statuses, and its fields.

Every store keeps jobs by these rules; none of them depends on how a store keeps its rows.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any


#: The job kinds: what a job is, which decides its request's family and how a platform runs it.
PIPELINE = "pipeline"      # POST /execute and /pipelines/training/custom_script
TRAINING = "training"      # POST /api/service/v1/pipelines/training and /pipelines/training/train
AUTOML = "automl"          # POST /pipelines/training/automl
ENDPOINT = "endpoint"      # deploying a model to an endpoint
TRANSFORM = "transform"    # batch inference
TUNING = "tuning"          # POST /api/service/v1/pipelines/tuning: a search whose trials are training jobs

JOB_KINDS = (PIPELINE, TRAINING, AUTOML, ENDPOINT, TRANSFORM, TUNING)


class JobStatus(str, Enum):
    """A job's status, with the values the Essedum backend switches on."""

    WAITING = "WAITING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    ERROR = "ERROR"
    CANCELLED = "CANCELLED"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({JobStatus.COMPLETED, JobStatus.ERROR, JobStatus.CANCELLED})

# RUNNING -> WAITING is the requeue of an interrupted job that asked to be retried.
ALLOWED_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.WAITING: frozenset({JobStatus.RUNNING, JobStatus.CANCELLED, JobStatus.ERROR}),
    JobStatus.RUNNING: frozenset({JobStatus.COMPLETED, JobStatus.ERROR, JobStatus.CANCELLED, JobStatus.WAITING}),
    JobStatus.COMPLETED: frozenset(),
    JobStatus.ERROR: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}

# The phase a job shows on entering a status when the mover names none (RUNNING keeps the one it has).
_STATUS_PHASES = {
    JobStatus.WAITING: "Queued",
    JobStatus.COMPLETED: "Completed",
    JobStatus.ERROR: "Failed",
    JobStatus.CANCELLED: "Cancelled",
}


def default_phase(status: JobStatus, current: str) -> str:
    """Return the phase a job in phase `current` takes on entering `status`."""
    return _STATUS_PHASES.get(status, current)


def ends_cancelled(current: JobStatus, to: JobStatus, cancel_requested: bool) -> bool:
    """Tell whether a move to `to` must end the job CANCELLED instead: its stop was answered "cancelled".

    That answer was a promise, kept whatever final status the job's work reached first.
    """
    return cancel_requested and current is JobStatus.RUNNING and to.is_final and to is not JobStatus.CANCELLED


@dataclass
class Job:
    """One job: what was asked, where it stands, and what it has produced so far."""

    id: str
    kind: str
    backend: str
    status: JobStatus
    phase: str
    request: dict[str, Any]
    submitted: float
    started: float | None
    finished: float | None
    updated: float
    external_id: str | None
    pid: str | None
    failure_reason: str | None
    progress: dict[str, Any]
    artifacts: dict[str, Any]
    details: dict[str, Any]
    cancel_requested: bool
    attempts: int
    log_path: str
    output_dir: str
    has_secrets: bool = field(default=False)
    #: The executor that runs (or last ran) the job, and the token of its claim: each claim or takeover
    #: raises it, and a write carrying an older one is refused.
    owner: str | None = None
    fence: int = 0
    #: What the job's platform resolved for it when it checked the request (SageMaker: the instance,
    #: role, bucket, entry point and hyperparameters); None where the platform resolves nothing.
    settings: dict[str, Any] | None = None
