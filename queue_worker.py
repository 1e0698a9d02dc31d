"""The queue: submission, worker threads, the monitor of remote jobs, start-up recovery, shutdown.

The store is the truth: a worker claims the oldest WAITING job in one transaction, so a job runs
once however many workers or wake-ups there are. The in-memory condition only wakes workers up;
losing a wake-up costs at most one idle poll interval, never a job.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

from config import Config
from db import Job, JobStatus, JobStore, StoreError
from job_secrets import SecretBox
from mlops.base import Backend, JobContext
from mlops.errors import BackendError, InvalidRequest
from mlops.recovery import Decision, Outcome, decide

logger = logging.getLogger(__name__)

IDLE_POLL_S = 5.0


class JobQueue:
    """Accepts jobs, runs them on worker threads and follows remote ones with a monitor thread."""

    def __init__(self, config: Config, store: JobStore, backend: Backend, secret_box: SecretBox, *,
                 clock: Callable[[], float] = time.time):
        self.config = config
        self.store = store
        self.backend = backend
        self.secret_box = secret_box
        self.clock = clock
        self.jobs_dir = config.data_dir / "jobs"
        self._wake = threading.Condition()
        self._pending_wakeups = 0
        self._monitor_wake = threading.Event()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._busy = 0
        self._busy_lock = threading.Lock()
        self.started = False

    # -- submission ------------------------------------------------------------------------------

    def submit(self, kind: str, request: dict[str, Any], secrets: dict[str, Any] | None = None) -> Job:
        """Validate a request with the backend, store it as a WAITING job and wake a worker."""
        return self.enqueue(kind, self.check(kind, request, secrets or {}), secrets or {})

    def check(self, kind: str, request: dict[str, Any], secrets: dict[str, Any] | None = None) -> dict[str, Any]:
        """Validate a request with the backend (before anything is stored) and return it normalised."""
        if kind not in self.backend.kinds:
            raise InvalidRequest("", f"the {self.backend.name} backend does not run {kind} jobs")
        return self.backend.check(kind, request, secrets or {})

    def enqueue(self, kind: str, request: dict[str, Any], secrets: dict[str, Any] | None = None,
                job_id: str | None = None) -> Job:
        """Store a request that check() returned as a WAITING job and wake a worker."""
        secrets = secrets or {}
        job_id = job_id or str(uuid.uuid4())
        job_dir = self.jobs_dir / job_id
        job = self.store.create_job(job_id, kind=kind, backend=self.backend.name, request=request,
                                    secrets=self.secret_box.seal(secrets), log_path=str(job_dir / "job.log"),
                                    output_dir=str(job_dir))
        self.wake()
        return job

    def cancel(self, job_id: str) -> bool | None:
        """Cancel a job; None for an unknown job, False when it had already ended."""
        before = self.store.request_cancel(job_id)
        if before is None:
            return None
        if before is JobStatus.WAITING:
            return True
        if before is not JobStatus.RUNNING:
            return False
        job = self.store.get(job_id)
        if self.backend.remote:
            # A stop on a remote platform is an API call: the monitor makes it, not the request thread.
            self._monitor_wake.set()
            return True
        return self.backend.cancel(job) or job.status is JobStatus.RUNNING

    def wake(self) -> None:
        """Tell one idle worker that a job may be waiting."""
        with self._wake:
            self._pending_wakeups += 1
            self._wake.notify()

    # -- threads ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Recover what the last run left, then start the workers and the monitor."""
        self.recover()
        for number in range(self.config.workers):
            self._spawn(self._worker_loop, f"worker-{number + 1}")
        if self.backend.remote:
            self._spawn(self._monitor_loop, "monitor")
        self.started = True

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def recover(self) -> None:
        """Requeue, fail or monitor again the jobs a previous run left RUNNING; WAITING jobs just run."""
        for job in self.store.jobs_in_status(JobStatus.RUNNING):
            if job.backend == self.backend.name:
                self.backend.clean_up_abandoned(job)
            self._carry_out(job, decide(job, self.backend, retry_interrupted=self.config.retry_interrupted))
        waiting = self.store.jobs_in_status(JobStatus.WAITING)
        if waiting:
            logger.info("%d waiting job(s) found at start-up", len(waiting))

    def busy_workers(self) -> int:
        """Return how many workers are running a job now."""
        with self._busy_lock:
            return self._busy

    def _worker_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                job = self.store.claim_next([self.backend.name])
            except StoreError:
                logger.exception("cannot claim a job; retrying")
                job = None
            if job is None:
                self._idle()
                continue
            with self._busy_lock:
                self._busy += 1
            try:
                self.run_job(job)
            finally:
                with self._busy_lock:
                    self._busy -= 1

    def _idle(self) -> None:
        with self._wake:
            if self._pending_wakeups == 0 and not self._stopping.is_set():
                self._wake.wait(IDLE_POLL_S)
            self._pending_wakeups = max(0, self._pending_wakeups - 1)

    def context_for(self, job: Job) -> JobContext:
        """Return the context through which the backend reports on a job."""
        secrets = self.secret_box.open(self.store.secrets(job.id))
        return JobContext(job, self.store, Path(job.output_dir), secrets)

    def run_job(self, job: Job) -> None:
        """Run one claimed job with the backend; any exception ends it as ERROR with the reason."""
        logger.info("job %s (%s): starting, attempt %d", job.id, job.kind, job.attempts)
        ctx: JobContext | None = None
        try:
            ctx = self.context_for(job)
            ctx.log(f"[executor] job {job.id} ({job.kind}) started on the {self.backend.name} backend")
            self.backend.run(ctx)
        except InterruptedError:
            current = self.store.get(job.id) or job
            self._carry_out(current, decide(current, self.backend, retry_interrupted=self.config.retry_interrupted,
                                            at_shutdown=True))
        except (BackendError, InvalidRequest, OSError, StoreError) as exc:
            self._fail(job, ctx, str(exc))
        except Exception as exc:  # a bug must end the job, not leave it RUNNING forever
            logger.exception("job %s: unexpected error", job.id)
            self._fail(job, ctx, f"internal error: {type(exc).__name__}: {exc}")
        else:
            current = self.store.get(job.id)
            if current and current.status is JobStatus.RUNNING and self.backend.remote:
                self._monitor_wake.set()
            logger.info("job %s: %s", job.id, current.status.value if current else "gone")

    def _carry_out(self, job: Job, decision: Decision) -> None:
        """Move an interrupted job where recovery decided; a job followed on its platform stays RUNNING."""
        logger.info("job %s: %s (%s)", job.id, decision.outcome.value, decision.reason)
        if decision.outcome is Outcome.REQUEUE:
            self.store.transition(job.id, JobStatus.WAITING, expected=JobStatus.RUNNING, message=decision.reason)
        elif decision.outcome is Outcome.CANCEL:
            self.store.transition(job.id, JobStatus.CANCELLED, expected=JobStatus.RUNNING, message=decision.reason)
        elif decision.outcome is Outcome.FAIL:
            self.store.transition(job.id, JobStatus.ERROR, expected=JobStatus.RUNNING,
                                  failure_reason=decision.reason)

    def _fail(self, job: Job, ctx: JobContext | None, reason: str) -> None:
        logger.warning("job %s failed: %s", job.id, ctx.redact(reason) if ctx else reason)
        if ctx is not None:
            ctx.finish(JobStatus.ERROR, reason)
        else:
            self.store.transition(job.id, JobStatus.ERROR, expected=JobStatus.RUNNING, failure_reason=reason)

    def _monitor_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self.monitor_once()
            except Exception:  # one bad cycle must not end monitoring of every job
                logger.exception("monitor cycle failed")
            self._monitor_wake.wait(self.config.monitor_interval)
            self._monitor_wake.clear()

    def monitor_once(self) -> None:
        """Run one monitor cycle: stops users asked for, then the state of every remote running job."""
        running = self.store.jobs_in_status(JobStatus.RUNNING, backend=self.backend.name)
        launched = [job for job in running if job.external_id]
        for job in launched:
            if job.cancel_requested:
                try:
                    self.backend.cancel(job)
                except BackendError as exc:
                    logger.warning("job %s: stop failed: %s", job.id, exc)
        if launched:
            self.backend.monitor(launched, self.context_for)

    # -- shutdown --------------------------------------------------------------------------------

    def stop(self, timeout: float | None = None) -> None:
        """Stop taking jobs, let running local jobs finish within the bound, then stop them."""
        timeout = self.config.shutdown_timeout if timeout is None else timeout
        self._stopping.set()
        self._monitor_wake.set()
        with self._wake:
            self._wake.notify_all()
        deadline = time.monotonic() + timeout
        # Warm: running jobs get the bound to finish on their own.
        while self.busy_workers() and time.monotonic() < deadline:
            time.sleep(0.1)
        # Cold: whatever still runs is stopped; its worker records how it ended.
        if self.busy_workers():
            logger.warning("stopping %d running job(s) at shutdown", self.busy_workers())
            self.backend.stop_all()
        for thread in self._threads:
            thread.join(timeout=max(0.1, deadline + 15 - time.monotonic()))
        self.backend.close()
        self.started = False
