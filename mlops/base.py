"""The interface every backend implements, and the context through which a backend reports on a job."""
from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, ClassVar, Collection

from db import Store
from job import Job, JobStatus
from job_secrets import redact, secret_values
from mlops.errors import NotSupported
from mlops.job_files import append_text

logger = logging.getLogger(__name__)

PIPELINE = "pipeline"      # POST /execute and /pipelines/training/custom_script
TRAINING = "training"      # POST /api/service/v1/pipelines/training and /pipelines/training/train
AUTOML = "automl"          # POST /pipelines/training/automl
ENDPOINT = "endpoint"      # deploying a model to an endpoint
TRANSFORM = "transform"    # batch inference
TUNING = "tuning"          # POST /api/service/v1/pipelines/tuning: a search whose trials are training jobs

JOB_KINDS = (PIPELINE, TRAINING, AUTOML, ENDPOINT, TRANSFORM, TUNING)


class JobContext:
    """What a backend may do to the job it runs: log, report progress and metrics, and end it.

    Everything it writes passes secret redaction, so a script that prints its credentials
    cannot put them in the job log.
    """

    def __init__(self, job: Job, store: Store, job_dir: Path, secrets: dict[str, Any]):
        self.job = job
        self.store = store
        self.job_dir = job_dir
        self.secrets = secrets
        self._secret_values = secret_values(secrets)
        self._log_lock = threading.Lock()

    @property
    def job_id(self) -> str:
        return self.job.id

    @property
    def log_path(self) -> Path:
        return Path(self.job.log_path)

    def redact(self, text: str) -> str:
        """Remove this job's secret values from text."""
        return redact(text, self._secret_values)

    def log(self, text: str) -> None:
        """Append text to the job log (a newline is added when missing); OSError when it cannot be written."""
        if not text.endswith("\n"):
            text += "\n"
        with self._log_lock:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            # Never through a link, never into a FIFO: in a data folder a job could reach, the log
            # could have been replaced by a link to the key file.
            append_text(self.log_path.parent, self.log_path.name, self.redact(text))

    def set_phase(self, phase: str, message: str | None = None) -> None:
        """Record the job's current phase (Downloading, Training, Uploading, ...)."""
        self.store.update(self.job_id, fence=self.job.fence, phase=phase, message=message)
        self.job.phase = phase

    def warn(self, message: str) -> None:
        """Record a warning in the job's events (and its log) without changing its status."""
        text = self.redact(f"warning: {message}")
        self.store.add_note(self.job_id, text)
        self.log(f"[executor] {text}")

    def set_progress(self, **progress: Any) -> None:
        """Replace the job's progress object (epoch, epochs, percent, ...)."""
        self.store.update(self.job_id, fence=self.job.fence, progress=progress)
        self.job.progress = progress

    def set_external_id(self, external_id: str) -> None:
        """Record the id of the job on the platform that runs it."""
        self.store.update(self.job_id, fence=self.job.fence, external_id=external_id)
        self.job.external_id = external_id

    def set_pid(self, pid: int | str | None) -> None:
        """Record the process id of a job running on this machine."""
        self.store.update(self.job_id, fence=self.job.fence, pid=None if pid is None else str(pid))

    def set_artifacts(self, artifacts: dict[str, Any]) -> None:
        """Record where the job's outputs are."""
        self.store.update(self.job_id, fence=self.job.fence, artifacts=artifacts)
        self.job.artifacts = artifacts

    def merge_details(self, **details: Any) -> None:
        """Record facts about the run (instance type, billable seconds, estimated cost, ...)."""
        self.store.merge_details(self.job_id, fence=self.job.fence, **details)
        self.job.details.update(details)

    def add_metrics(self, values: dict[str, float | None], step: int | None = None,
                    when: float | None = None) -> None:
        """Record metric values of the job."""
        self.store.add_metrics(self.job_id, [(name, value, step) for name, value in values.items()], when)

    def cancel_requested(self) -> bool:
        """True once a user asked to stop this job."""
        job = self.store.get(self.job_id)
        return bool(job and job.cancel_requested)

    def finish(self, status: JobStatus, failure_reason: str | None = None, message: str | None = None) -> bool:
        """End the job with a final status; False when it had already ended.

        A log that cannot be written does not keep the job from ending; a store that cannot be
        written raises StoreUnavailable, and the queue ends the job once it can.
        """
        if failure_reason:
            failure_reason = self.redact(failure_reason)
        try:
            self.log(f"[executor] job ended {status.value}" + (f": {failure_reason}" if failure_reason else ""))
        except OSError as exc:
            logger.warning("job %s: its log cannot be written: %s", self.job_id, exc)
        return self.store.transition(self.job_id, status, expected=JobStatus.RUNNING,
                                     failure_reason=failure_reason, message=message, fence=self.job.fence)


ContextFactory = Callable[[Job], JobContext]


class Backend(ABC):
    """Runs jobs somewhere. One instance serves every worker thread."""

    name: ClassVar[str]
    #: True when jobs run elsewhere and the monitor thread must follow them.
    remote: ClassVar[bool] = False
    #: The job kinds this backend can run.
    kinds: ClassVar[frozenset[str]] = frozenset()
    #: The kinds whose running jobs can be stopped: a stop answered true must end the job CANCELLED.
    stoppable_kinds: ClassVar[frozenset[str]] = frozenset()

    def check(self, kind: str, request: dict[str, Any], secrets: dict[str, Any]) -> dict[str, Any]:
        """Validate a request at submission and return it normalised; raise InvalidRequest if it cannot run."""
        return request

    @abstractmethod
    def run(self, ctx: JobContext) -> None:
        """Run a claimed job: a local backend to its end, a remote one until it is launched."""

    @abstractmethod
    def cancel(self, job: Job) -> bool:
        """Start stopping a running job; True when a stop was started or had been already."""

    def monitor(self, jobs: list[Job], context_for: ContextFactory) -> None:
        """Bring the state of remote running jobs up to date (one monitor cycle)."""

    def resumable(self, job: Job) -> bool:
        """True when running an interrupted job again continues its work instead of repeating it."""
        return False

    def clean_up_abandoned(self, job: Job) -> None:
        """Stop what a previous run of the executor left behind of a job it was running (orphans)."""

    def log_location(self, job: Job) -> str:
        """Return where the job's log is kept, as reported to clients."""
        return job.log_path

    def output_artifacts(self, job: Job) -> dict[str, Any]:
        """Return the job's output files as {stem: {"content": ...}}."""
        return {}

    def describe(self, job: Job) -> dict[str, Any] | None:
        """Return the platform's live description of a launched job; None where there is none."""
        return None

    def csv_columns(self, s3_uri: str, field: str = "inputs") -> list[str]:
        """Return the header of a CSV the platform can read (AutoML's target must be one of them)."""
        raise NotSupported(field, f"the {self.name} backend does not read CSV headers in S3")

    def ready_check(self) -> tuple[bool, str | None] | None:
        """Say whether the platform can take jobs now, and why not; None when it has nothing to check."""
        return None

    def stop_all(self, job_ids: Collection[str] | None = None) -> None:
        """Stop the jobs this process runs (these, or every one): the executor is shutting down."""

    def close(self) -> None:
        """Release what the backend holds (processes, clients)."""
