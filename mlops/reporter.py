"""The reporter through which a platform tells the queue what became of a job: the platform's only pen.

rq's job methods write through the job's own connection and nothing else reaches the registry; in
the same way a platform never holds the store, only the reporter the queue gives it for one job
attempt. Everything it writes passes secret redaction, so a script that prints its credentials
cannot put them in the job log, and the job's sealed secrets are opened once per attempt. What
drives other jobs (the tuner follows its trials) reads them through a JobReader, which writes nothing.
"""
from __future__ import annotations

import functools
import logging
import threading
from pathlib import Path
from typing import Any, Callable

from db import JobExists, Store, check_fence
from job import Job, JobStatus
from job_secrets import redact, secret_values
from mlops.job_files import append_text
from mlops.job_requests import Checked, JobRequest, request_of

logger = logging.getLogger(__name__)


class JobReader:
    """What the queue lets a driver of jobs read: a job, its metric history, its latest metrics; never a write."""

    def __init__(self, store: Store):
        self._store = store

    def get(self, job_id: str) -> Job | None:
        """Return the job with this id, or None."""
        return self._store.get(job_id)

    def metric_history(self, job_id: str) -> list[dict[str, Any]]:
        """Return every kept metric value (name, value, step, time) of a job, oldest first."""
        return self._store.metric_history(job_id)

    def latest_metrics(self, job_id: str) -> dict[str, float | None]:
        """Return the latest value of each metric of a job."""
        return self._store.latest_metrics(job_id)


class JobReporter:
    """What a platform may say about the job it runs: log, phase, progress, metrics, artifacts, ids, its end."""

    def __init__(self, job: Job, store: Store, open_secrets: Callable[[], dict[str, Any]],
                 on_metrics: Callable[[], None] | None = None):
        self.job = job
        self._store = store
        self._open_secrets = open_secrets
        # Told once new metric rows are stored (a trial's tuner judges each epoch as it is written).
        self._on_metrics = on_metrics
        self._secrets: dict[str, Any] | None = None
        self._secret_values: list[str] = []
        self._lock = threading.Lock()

    @property
    def job_id(self) -> str:
        return self.job.id

    @property
    def job_dir(self) -> Path:
        return Path(self.job.output_dir)

    @property
    def log_path(self) -> Path:
        return Path(self.job.log_path)

    @functools.cached_property
    def request(self) -> JobRequest:
        """The job's typed request, read from its stored form once for this attempt."""
        return request_of(self.job.kind, self.job.request)

    @property
    def secrets(self) -> dict[str, Any]:
        """The job's secrets, opened once for this attempt."""
        with self._lock:
            if self._secrets is None:
                self._secrets = self._open_secrets()
                self._secret_values = secret_values(self._secrets)
            return self._secrets

    def redact(self, text: str) -> str:
        """Remove this job's secret values from text."""
        self.secrets  # noqa: B018 - opened on first use, so that its values are known
        return redact(text, self._secret_values)

    def log(self, text: str) -> None:
        """Append text to the job log (a newline is added when missing); OSError when it cannot be written."""
        if not text.endswith("\n"):
            text += "\n"
        text = self.redact(text)
        with self._lock:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            # Never through a link, never into a FIFO: in a data folder a job could reach, the log
            # could have been replaced by a link to the key file.
            append_text(self.log_path.parent, self.log_path.name, text)

    def set_phase(self, phase: str, message: str | None = None) -> None:
        """Record the job's current phase (Downloading, Training, Uploading, ...)."""
        self._store.update(self.job_id, fence=self.job.fence, phase=phase, message=message)
        self.job.phase = phase

    def warn(self, message: str) -> None:
        """Record a warning in the job's events (and its log) without changing its status."""
        text = self.redact(f"warning: {message}")
        self._store.add_note(self.job_id, text)
        self.log(f"[executor] {text}")

    def set_progress(self, **progress: Any) -> None:
        """Replace the job's progress object (epoch, epochs, percent, ...)."""
        self._store.update(self.job_id, fence=self.job.fence, progress=progress)
        self.job.progress = progress

    def set_external_id(self, external_id: str) -> None:
        """Record the id of the job on the platform that runs it."""
        self._store.update(self.job_id, fence=self.job.fence, external_id=external_id)
        self.job.external_id = external_id

    def set_pid(self, pid: int | str | None) -> None:
        """Record the process id of a job running on this machine."""
        self._store.update(self.job_id, fence=self.job.fence, pid=None if pid is None else str(pid))

    def set_artifacts(self, artifacts: dict[str, Any]) -> None:
        """Record where the job's outputs are."""
        self._store.update(self.job_id, fence=self.job.fence, artifacts=artifacts)
        self.job.artifacts = artifacts

    def merge_details(self, **details: Any) -> None:
        """Record facts about the run (instance type, billable seconds, estimated cost, ...)."""
        self._store.merge_details(self.job_id, fence=self.job.fence, **details)
        self.job.details.update(details)

    def add_child(self, job_id: str, kind: str, checked: Checked) -> bool:
        """Queue a job of this one's (a tuning's trial), its files beside this one's; False when it exists already."""
        try:
            self._store.create_job(job_id, kind=kind, backend=self.job.backend, request=checked.request.to_stored(),
                                   settings=checked.settings, secrets=None,
                                   log_path=str(self.log_path.parent / f"{job_id}.log"),
                                   output_dir=str(self.job_dir.parent / job_id))
        except JobExists:
            return False
        return True

    def add_metrics(self, values: dict[str, float | None], step: int | None = None,
                    when: float | None = None) -> None:
        """Record metric values of the job."""
        self.add_metric_rows([(name, value, step) for name, value in values.items()], when)

    def add_metric_rows(self, rows: list[tuple[str, float | None, int | None]], when: float | None = None) -> None:
        """Record (name, value, step) metric rows of the job."""
        self._store.add_metrics(self.job_id, rows, when)
        if self._on_metrics is not None:
            self._on_metrics()

    def latest_metrics(self) -> dict[str, float | None]:
        """Return the job's last value of each metric recorded so far."""
        return self._store.latest_metrics(self.job_id)

    def cancel_requested(self) -> bool:
        """True once a user asked to stop this job."""
        job = self._store.get(self.job_id)
        return bool(job and job.cancel_requested)

    def ensure_held(self) -> None:
        """Raise Fenced when another executor took the job over: its folder is that executor's now."""
        job = self._store.get(self.job_id)
        if job is not None:
            check_fence(self.job_id, {"owner": job.owner, "fence": job.fence}, self.job.fence)

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
        return self._store.transition(self.job_id, status, expected=JobStatus.RUNNING,
                                      failure_reason=failure_reason, message=message, fence=self.job.fence)
