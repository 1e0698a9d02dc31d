"""The queue: submission, worker threads, the monitor of launched jobs, start-up recovery, shutdown.

The store is the truth: a worker claims the oldest WAITING job in one transaction, so a job runs
once however many workers or wake-ups there are. The in-memory condition only wakes workers up;
losing a wake-up costs at most one idle poll interval, never a job. The queue decides from the
platform's answers: a job whose `run` answered LAUNCHED is followed by the monitor thread, one whose
`cancel` answered REQUESTED ends when the platform says so.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from pathlib import PurePath
from typing import Any, Callable, Protocol

from config import Config
from db import Fenced, Record, Store, StoreError, StoreUnavailable
from job import TUNING, Job, JobStatus
from job_secrets import SecretBox
from lease import Lease, executor_id
from mlops.errors import BackendError, InvalidRequest, NotSupported
from mlops.job_files import remove_tree
from mlops.job_requests import JobRequest
from mlops.platform import Platform, Ran, Stop
from mlops.recovery import Decision, Outcome, decide
from mlops.reporter import JobReader, JobReporter

logger = logging.getLogger(__name__)

IDLE_POLL_S = 5.0
# With a shared store: how often an executor looks for stops asked of its jobs (through any executor),
# for jobs taken from it, and for lapsed leases. A stop asked anywhere ends the job within about this.
WATCH_TICK_S = 0.5
# How often the tuner steps its tunings when nothing wakes it sooner.
TUNER_CYCLE_S = 1.0


class Tuner(Protocol):
    """Drives the tunings the executor runs itself (mlops/local/tuning.py), from one thread."""

    def adopt(self, job: Job) -> None:
        """Take a claimed tuning job: open (or reopen after a restart) its study."""

    def step(self) -> None:
        """Ask for trials, report epochs to the pruner, stop pruned trials, end finished tunings."""

    def let_go(self) -> None:
        """Write nothing more of the tunings it drives: the executor's lease lapsed."""


class JobQueue:
    """Accepts jobs, runs them on worker threads and follows launched ones with a monitor thread."""

    def __init__(self, config: Config, store: Store, platform: Platform, secret_box: SecretBox, *,
                 clock: Callable[[], float] = time.time, tuner_for: Callable[[JobQueue], Tuner | None] | None = None):
        self.config = config
        self.store = store
        self.platform = platform
        self.secret_box = secret_box
        self.clock = clock
        self.jobs_dir = config.data_dir / "jobs"
        # Logs live beside the job folders, not inside them: a job can write anywhere in its own
        # folder, and must not be able to replace the file the executor appends to and serves.
        self.logs_dir = config.data_dir / "logs" / "jobs"
        self._wake = threading.Condition()
        self._pending_wakeups = 0
        self._monitor_wake = threading.Event()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._workers: dict[str, threading.Thread] = {}
        self._workers_lock = threading.Lock()
        # Jobs whose end could not be stored (the store failed), settled once it takes writes: each with the
        # reason it ends ERROR with (None for a run this executor stopped, which the recovery rule decides)
        # and the lease token of the run: a job taken over since is the new owner's to end.
        self._unfinished: dict[str, tuple[str | None, int]] = {}
        self._unfinished_lock = threading.Lock()
        self._busy = 0
        self._busy_lock = threading.Lock()
        self.lease = Lease(store, config.lease_seconds, executor_id(config.name))
        # Local jobs this executor's workers run now, with the lease token of their claim; and the stops
        # already passed on to the platform.
        self._running: dict[str, int] = {}
        self._stops_sent: set[str] = set()
        # The claimed jobs of those runs, kept so that they can be stopped with no store read (the store may be
        # the thing lost); and the runs already stopped because this executor's lease lapsed.
        self._claimed: dict[str, Job] = {}
        self._let_go: set[str] = set()
        # One reporter per job attempt, so that its sealed secrets are opened once, not per cycle.
        self._reporters: dict[str, JobReporter] = {}
        self._reporters_lock = threading.Lock()
        self._monitor: threading.Thread | None = None
        self._monitor_lock = threading.Lock()
        # What the tuner may read of its tunings and their trials; it writes through their reporters.
        self.job_reader = JobReader(store)
        # Where the executor drives tunings itself (their trials run here), one thread of their own does,
        # never a worker: a worker waiting on its tuning's trials would hold a place the trials need.
        self.tuner: Tuner | None = tuner_for(self) if tuner_for is not None else None
        self._worker_kinds: list[str] | None = sorted(platform.kinds - {TUNING}) if self.tuner else None
        self._tuner_wake = threading.Event()
        self.started = False

    # -- submission ------------------------------------------------------------------------------

    def submit(self, kind: str, request: JobRequest, secrets: dict[str, Any] | None = None) -> Job:
        """Check a request with the platform, store it as a WAITING job and wake a worker; nothing is made on refusal."""
        return self._submit(kind, request, secrets or {})[0]

    def submit_change(self, kind: str, request: JobRequest) -> tuple[Job, Record]:
        """Submit a deployment or transform; return its job and its record as marked pending.

        The record is marked first, with the job's id, so that a worker taking the job at once
        cannot have its result overwritten by that mark; the answer shows the mark even so.
        """
        job, record = self._submit(kind, request, {})
        if record is None:
            raise ValueError(f"{kind} jobs change no record")
        return job, record

    def _submit(self, kind: str, request: JobRequest, secrets: dict[str, Any]) -> tuple[Job, Record | None]:
        if kind not in self.platform.kinds:
            raise NotSupported("", f"the {self.platform.name} backend does not run {kind} jobs")
        checked = self.platform.check(kind, request, secrets)
        job_id = str(uuid.uuid4())
        with self.platform.reserve(kind, checked.request, job_id) as record:
            job = self.enqueue(kind, checked.request, secrets, job_id, settings=checked.settings)
        return job, record

    def enqueue(self, kind: str, request: JobRequest, secrets: dict[str, Any] | None = None,
                job_id: str | None = None, settings: dict[str, Any] | None = None) -> Job:
        """Store a checked request (a tuning's trial is checked with its tuning) as a WAITING job; wake a worker."""
        job_id = job_id or str(uuid.uuid4())
        job = self.store.create_job(job_id, kind=kind, backend=self.platform.name,
                                    request=request.to_stored(), settings=settings,
                                    secrets=self.secret_box.seal(secrets or {}),
                                    log_path=str(self.logs_dir / f"{job_id}.log"), output_dir=str(self.jobs_dir / job_id))
        log_location = self.platform.log_location(kind, request)
        if log_location:
            self.store.merge_details(job_id, log_location=log_location)
            job.details["log_location"] = log_location
        self.wake()
        return job

    def cancel(self, job_id: str) -> bool | None:
        """Cancel a job; None for an unknown job, False when it had ended or cannot be stopped.

        True is a promise: the job will end CANCELLED (the store holds every final status to it).
        """
        job = self.store.get(job_id)
        if job is None:
            return None
        if job.status is JobStatus.RUNNING and job.kind not in self.platform.stoppable_kinds:
            return False
        before = self.store.request_cancel(job_id)
        if before is None:
            return None
        if before is JobStatus.WAITING:
            return True
        if before is not JobStatus.RUNNING:
            return False
        job = self.store.get(job_id)
        if self.store.shared and job.owner != self.lease.executor:
            # Its owner sees the flag at its next watch tick and stops it there.
            return True
        if self.tuner is not None and job.kind == TUNING:
            # The tuner stops every trial of it in its next cycle, then ends it CANCELLED.
            self._tuner_wake.set()
            return True
        if job.external_id:
            # A launched job is stopped by a call to its platform: the monitor makes it, not the request thread.
            self._follow_launched()
            return True
        answer = self.platform.cancel(job, self.reporter_for(job))
        return answer is not Stop.NOTHING or job.status is JobStatus.RUNNING

    def delete(self, job_id: str) -> bool:
        """Delete an ended job: its record, events and metrics, its folder and its log; False if unknown or active."""
        if not self.store.delete_job(job_id):
            return False
        # Only once the record is gone with a final status: no worker writes to these files any more.
        # The paths come from this queue's folders and the id alone, never from the stored record.
        if PurePath(job_id).name != job_id or job_id in (".", ".."):
            logger.error("job %s: its id is not a plain name; its files are left in place", job_id)
            return True
        for path in (self.jobs_dir / job_id, self.logs_dir / f"{job_id}.log"):
            try:
                remove_tree(path)
            except OSError as exc:
                logger.warning("job %s: %s could not be removed: %s", job_id, path, exc)
        return True

    def wake(self) -> None:
        """Tell one idle worker (and the tuner) that a job may be waiting."""
        self._replace_dead_workers()
        if self.tuner is not None:
            self._tuner_wake.set()
        with self._wake:
            self._pending_wakeups += 1
            self._wake.notify()

    # -- threads ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Recover what the last run left, then start the workers and the monitor."""
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        if self.store.shared:
            self.lease.renew()
        self.recover()
        for number in range(self.config.workers):
            self._start_worker(f"worker-{number + 1}")
        if self.tuner is not None:
            self._spawn(self._tuner_loop, "tuner")
        if self.store.shared:
            logger.info("executor %s: sharing the job store, lease %ss", self.lease.executor, self.config.lease_seconds)
            self.lease.start(self.watch, WATCH_TICK_S)
            # Not on the lease's thread: there a store that does not answer holds each renewal and watch for
            # the pool's timeout, longer than a lease.
            self._spawn(self._guard_lease, "lease-guard")
        self.started = True
        if self._launched_jobs():
            self._follow_launched()

    def _follow_launched(self) -> None:
        """Wake the monitor, starting it at the first launched job: a platform that launches none never needs it."""
        with self._monitor_lock:  # workers launch at once: one monitor for them all
            if self.started and self._monitor is None and not self._stopping.is_set():
                self._monitor = threading.Thread(target=self._monitor_loop, name="monitor", daemon=True)
                self._monitor.start()
                self._threads.append(self._monitor)
        self._monitor_wake.set()

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def recover(self) -> None:
        """Requeue, fail or monitor again the running jobs no live executor holds; WAITING jobs just run.

        Alone on its data folder (SQLite), an executor holds every running job a previous run left;
        sharing a store, it takes over those of executors whose lease lapsed, each job with a new token.
        """
        shared = self.store.shared
        for job, lost in self.store.take_over(self.lease.executor, everyone_else=not shared):
            if job.backend == self.platform.name:
                self.platform.clean_up_abandoned(job)
                if self._finish_ended(job):
                    continue
            decision = decide(job, self.platform, retry_interrupted=self.config.retry_interrupted,
                              lost_executor=lost if shared else None)
            self._carry_out(job, decision)
            if decision.outcome is Outcome.MONITOR:
                self._follow_launched()
        waiting = self.store.jobs_in_status(JobStatus.WAITING)
        if waiting and not self.started:
            logger.info("%d waiting job(s) found at start-up", len(waiting))

    def _finish_ended(self, job: Job) -> bool:
        """End a taken-over job whose run had ended as that run decided: what ended is never run again."""
        reporter = self.reporter_for(job)
        try:
            return self.platform.finish_ended(job, reporter)
        except (BackendError, OSError) as exc:
            self._fail(job, reporter, str(exc))
            return True
        finally:
            self._drop_reporters([job.id])

    def watch(self) -> None:
        """With a shared store: pass on stops asked through any executor, stop runs of jobs taken from this
        one, take over the jobs of lapsed leases, and wake an idle worker for jobs submitted elsewhere."""
        mine = {job.id: job for job in self.store.jobs_in_status(JobStatus.RUNNING, owner=self.lease.executor)}
        self._stops_sent &= set(mine)
        for job in mine.values():
            if job.cancel_requested and job.id not in self._stops_sent:
                self._stops_sent.add(job.id)
                if job.external_id:
                    self._follow_launched()
                else:
                    self.platform.cancel(job, self.reporter_for(job))
        with self._busy_lock:
            running = list(self._running.items())
        for job_id, fence in running:
            if job_id in mine and mine[job_id].fence == fence:
                continue
            current = self.store.get(job_id)
            if current is not None and (current.owner, current.fence) != (self.lease.executor, fence):
                logger.warning("job %s: taken over by executor %s; stopping this executor's run of it",
                               job_id, current.owner)
                self.platform.cancel(current, self.reporter_for(current))
        now = self.clock()
        if any(until < now for executor, until in self.store.leases().items() if executor != self.lease.executor):
            self.recover()
            self.wake()
        elif self.busy_workers() < self.config.workers and self.store.list_jobs(limit=1, status="WAITING"):
            # Jobs submitted through another executor woke that one's workers only: an idle worker here
            # looks within a tick rather than at its idle poll.
            self.wake()

    def _guard_lease(self) -> None:
        """Each tick, stop this executor's local runs once its lease has lapsed (the store lost or too slow)."""
        while not self._stopping.wait(WATCH_TICK_S):
            if not self.lease.held:
                self._let_go_of_runs()

    def _let_go_of_runs(self) -> None:
        """Stop every local run of this executor, once each, and let its tuner's tunings go: its lease lapsed, so
        another executor may take the jobs over and run them again in the same job folders (or drive them from the
        same study). Reads nothing from the store, which may be unreachable."""
        with self._busy_lock:
            claimed = [job for job_id, job in self._claimed.items() if job_id not in self._let_go]
            self._let_go.update(job.id for job in claimed)
        for job in claimed:
            logger.warning("job %s: executor %s lost its lease (its last renewal is over %ss old); stopping this "
                           "executor's run of it, which another executor may take over",
                           job.id, self.lease.executor, self.config.lease_seconds)
            try:
                self.platform.let_go(job)
            except Exception:  # the guard goes on: one run that cannot be stopped must not leave the others running
                logger.exception("job %s: this executor's run of it could not be stopped", job.id)
        if self.tuner is not None:
            self.tuner.let_go()

    def _lease_lapsed(self) -> bool:
        """True while this executor shares a store and its lease has lapsed: it claims and drives nothing then."""
        return self.store.shared and not self.lease.held

    def _start_worker(self, name: str) -> None:
        thread = threading.Thread(target=self._worker_main, name=name, daemon=True)
        try:
            thread.start()
        except RuntimeError as exc:  # the process's thread limit; a later wake-up tries again
            logger.error("cannot start worker thread %s: %s", name, exc)
            return
        with self._workers_lock:
            self._workers[name] = thread
        self._threads.append(thread)

    def _replace_dead_workers(self) -> None:
        """Start a worker in place of each one that died and could not be replaced then."""
        if not self.started or self._stopping.is_set():
            return
        with self._workers_lock:
            dead = [name for name, thread in self._workers.items() if not thread.is_alive()]
        for name in dead:
            logger.warning("worker thread %s is dead; starting another", name)
            self._start_worker(name)

    def alive_workers(self) -> int:
        """Return how many worker threads are alive."""
        with self._workers_lock:
            return sum(thread.is_alive() for thread in self._workers.values())

    def busy_workers(self) -> int:
        """Return how many workers are running a job now."""
        with self._busy_lock:
            return self._busy

    def _worker_main(self) -> None:
        try:
            self._worker_loop()
        except BaseException:  # noqa: B036 - whatever ends a worker, another takes its place
            if self._stopping.is_set():
                return
            name = threading.current_thread().name
            logger.critical("worker thread %s died; starting another", name, exc_info=True)
            self._start_worker(name)

    def _worker_loop(self) -> None:
        while not self._stopping.is_set():
            self._settle_unfinished()
            if self._lease_lapsed():
                # Another executor may take this one's jobs over now: one claimed here would be taken at once.
                self._idle()
                continue
            try:
                job = self.store.claim_next([self.platform.name], kinds=self._worker_kinds, owner=self.lease.executor)
            except StoreError as exc:
                logger.error("cannot claim a job (%s); retrying", exc)
                job = None
            if job is None:
                self._idle()
                continue
            with self._busy_lock:
                self._busy += 1
                self._running[job.id] = job.fence
                self._claimed[job.id] = job
            try:
                self.run_job(job)
            except BaseException as exc:
                self._remember_unfinished(job, f"internal error: the worker running the job died "
                                               f"({type(exc).__name__}: {exc})")
                raise
            finally:
                with self._busy_lock:
                    self._busy -= 1
                    self._running.pop(job.id, None)
                    self._claimed.pop(job.id, None)
                    self._let_go.discard(job.id)
                    self._stops_sent.discard(job.id)

    def _remember_unfinished(self, job: Job, reason: str | None) -> None:
        with self._unfinished_lock:
            self._unfinished.setdefault(job.id, (reason, job.fence))

    def _settle_unfinished(self) -> None:
        """End ERROR each job whose end could not be stored, as soon as the store takes writes."""
        with self._unfinished_lock:
            pending = dict(self._unfinished)
        for job_id, (reason, fence) in pending.items():
            try:
                if reason is None:
                    self._decide_stopped_run(job_id, fence)
                else:
                    self.store.transition(job_id, JobStatus.ERROR, expected=JobStatus.RUNNING, failure_reason=reason,
                                          fence=fence)
            except StoreUnavailable:
                return
            except Fenced as exc:
                logger.warning("job %s: its end is not stored: %s", job_id, exc)
            except (KeyError, StoreError):
                pass
            else:
                logger.info("job %s: its end is stored now", job_id)
            with self._unfinished_lock:
                self._unfinished.pop(job_id, None)

    def _idle(self) -> None:
        with self._wake:
            if self._pending_wakeups == 0 and not self._stopping.is_set():
                self._wake.wait(IDLE_POLL_S)
            self._pending_wakeups = max(0, self._pending_wakeups - 1)

    def reporter_for(self, job: Job) -> JobReporter:
        """Return the reporter of a job's current attempt: one per attempt, so its secrets are opened once."""
        with self._reporters_lock:
            reporter = self._reporters.get(job.id)
            if reporter is None or (reporter.job.attempts, reporter.job.fence) != (job.attempts, job.fence):
                reporter = JobReporter(job, self.store, lambda: self.secret_box.open(self.store.secrets(job.id)),
                                       on_metrics=self._tuner_wake.set if self._is_trial(job) else None)
                self._reporters[job.id] = reporter
            return reporter

    def _drop_reporters(self, job_ids: list[str]) -> None:
        with self._reporters_lock:
            for job_id in job_ids:
                self._reporters.pop(job_id, None)

    def run_job(self, job: Job) -> None:
        """Run one claimed job with the backend; any exception ends it ERROR with the reason.

        Where even that cannot be stored (the store fails), the job is ended once the store takes
        writes again: no error while running, failing or logging a job ends the worker.
        """
        try:
            self._run(job)
        except Fenced as exc:
            # Another executor took the job over (this one's lease lapsed): its state is the new owner's.
            logger.warning("job %s: %s; this executor's run of it ended", job.id, exc)
        except StoreError as exc:
            logger.error("job %s: its end cannot be stored yet: %s", job.id, exc)
            self._remember_unfinished(job, f"the job store failed while the job ran or ended: {exc}")
        except Exception as exc:
            logger.exception("job %s: error while ending the job", job.id)
            self._remember_unfinished(job, f"internal error while ending the job: {type(exc).__name__}: {exc}")

    def _run(self, job: Job) -> None:
        logger.info("job %s (%s): starting, attempt %d", job.id, job.kind, job.attempts)
        ctx: JobReporter | None = None
        ran = Ran.ENDED
        try:
            reporter = self.reporter_for(job)
            reporter.secrets  # noqa: B018 - opened here, once for the attempt: what cannot open them fails the job
            ctx = reporter
            ctx.log(f"[executor] job {job.id} ({job.kind}) started on the {self.platform.name} backend")
            ran = self.platform.run(job, ctx)
        except InterruptedError:
            try:
                self._decide_stopped_run(job.id, job.fence, job)
            except StoreUnavailable:
                # Stopped because the store is out of reach (why a lease lapses): never an ERROR for that; the
                # recovery rule decides once it answers, unless another executor has taken the job by then.
                self._remember_unfinished(job, None)
        except (BackendError, InvalidRequest, OSError, StoreError) as exc:
            self._fail(job, ctx, str(exc))
        except Exception as exc:  # a bug must end the job, not leave it RUNNING forever
            logger.exception("job %s: unexpected error", job.id)
            self._fail(job, ctx, f"internal error: {type(exc).__name__}: {exc}")
        else:
            current = self.store.get(job.id)
            if ran is Ran.LAUNCHED:
                self._follow_launched()
            logger.info("job %s: %s", job.id, current.status.value if current else "gone")
        finally:
            if ran is not Ran.LAUNCHED:
                self._drop_reporters([job.id])
            if self._is_trial(job):
                # Its slot is free: the tuner tells the study now and queues the next trial at once.
                self._tuner_wake.set()

    def _decide_stopped_run(self, job_id: str, fence: int, job: Job | None = None) -> None:
        """Move a job whose run this executor stopped (a shutdown, a lapsed lease) where the recovery rule says,
        while it still holds the job by this lease token."""
        current = self.store.get(job_id) or job
        if current is not None and current.fence != fence:
            logger.warning("job %s: taken over by executor %s; its outcome is that executor's", job_id, current.owner)
            return
        if current is None or current.status is not JobStatus.RUNNING:
            return
        self._carry_out(current, decide(current, self.platform, retry_interrupted=self.config.retry_interrupted,
                                        at_shutdown=True), fence=fence)

    def _is_trial(self, job: Job) -> bool:
        """True for a trial of a tuning this executor's tuner drives."""
        return self.tuner is not None and bool(job.request.get("parent"))

    def _carry_out(self, job: Job, decision: Decision, fence: int | None = None) -> None:
        """Move an interrupted job where recovery decided, under the lease token this executor holds it by
        (the job's own by default); a job followed on its platform stays RUNNING."""
        logger.info("job %s: %s (%s)", job.id, decision.outcome.value, decision.reason)
        fence = job.fence if fence is None else fence
        if decision.outcome is Outcome.REQUEUE:
            self.store.transition(job.id, JobStatus.WAITING, expected=JobStatus.RUNNING, message=decision.reason,
                                  fence=fence)
        elif decision.outcome is Outcome.CANCEL:
            self.store.transition(job.id, JobStatus.CANCELLED, expected=JobStatus.RUNNING, message=decision.reason,
                                  fence=fence)
        elif decision.outcome is Outcome.FAIL:
            self.store.transition(job.id, JobStatus.ERROR, expected=JobStatus.RUNNING,
                                  failure_reason=decision.reason, fence=fence)

    def _fail(self, job: Job, ctx: JobReporter | None, reason: str) -> None:
        if ctx is not None:
            reason = ctx.redact(reason)
        # The reason may quote the job's own output lines: repr keeps each failure one line of the log.
        logger.warning("job %s failed: %r", job.id, reason)
        try:
            if ctx is not None:
                ctx.finish(JobStatus.ERROR, reason)
            else:
                self.store.transition(job.id, JobStatus.ERROR, expected=JobStatus.RUNNING, failure_reason=reason,
                                      fence=job.fence)
        except Fenced:
            raise
        except StoreError:
            # The job failed for this reason; the store refusing to record it only delays the record.
            self._remember_unfinished(job, reason)
            raise

    def _monitor_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self.monitor_once()
            except Exception:  # one bad cycle must not end monitoring of every job
                logger.exception("monitor cycle failed")
            self._monitor_wake.wait(self.config.monitor_interval)
            self._monitor_wake.clear()

    def _launched_jobs(self) -> list[Job]:
        """Return the running jobs the platform launched (their `run` answered LAUNCHED): those it follows."""
        running = self.store.jobs_in_status(JobStatus.RUNNING, backend=self.platform.name,
                                            owner=self.lease.executor if self.store.shared else None)
        return [job for job in running if job.external_id]

    def monitor_once(self) -> None:
        """Run one monitor cycle: stops users asked for, then the state of every launched job."""
        launched = self._launched_jobs()
        reporters = []
        for job in launched:
            reporter = self.reporter_for(job)
            reporter.job = job  # as the store has it now: a stop asked for, what the last cycle recorded
            reporters.append(reporter)
        for reporter in reporters:
            if reporter.job.cancel_requested:
                try:
                    self.platform.cancel(reporter.job, reporter)
                except BackendError as exc:
                    logger.warning("job %s: stop failed: %s", reporter.job_id, exc)
        if reporters:
            self.platform.follow(reporters)
        # A launched job no longer running has ended: its attempt's reporter goes.
        followed = {job.id for job in launched}
        with self._reporters_lock:
            ended = [job_id for job_id, reporter in self._reporters.items()
                     if reporter.job.external_id and job_id not in followed]
        self._drop_reporters(ended)

    def _tuner_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self.tune_once()
            except Exception:  # one bad cycle must not end every tuning
                logger.exception("tuning cycle failed")
            self._tuner_wake.wait(TUNER_CYCLE_S)
            self._tuner_wake.clear()

    def tune_once(self) -> None:
        """Run one tuning cycle: take the waiting tunings, then step every running one."""
        assert self.tuner is not None
        if self._lease_lapsed():
            return  # the lease guard let its tunings go; those no executor took over are driven again once it holds
        owner = self.lease.executor
        while (job := self.store.claim_next([self.platform.name], kinds=[TUNING], owner=owner)) is not None:
            try:
                self.tuner.adopt(job)
            except Exception as exc:
                logger.exception("tuning %s: cannot start", job.id)
                self._fail(job, None, f"the tuning cannot start: {type(exc).__name__}: {exc}")
        self.tuner.step()

    # -- shutdown --------------------------------------------------------------------------------

    def _announce_stop(self, timeout: float) -> list[str]:
        """Log what the stop does to each running job, in the words of the recovery rule; return those stopped now.

        A job that resumes from its checkpoint gains nothing from the warm wait: it is stopped at once
        (the bundled script saves its state at SIGTERM and exits), and loses at most the epoch in progress.
        """
        running = self.store.jobs_in_status(JobStatus.RUNNING, backend=self.platform.name,
                                            owner=self.lease.executor if self.store.shared else None)
        stopped_now = []
        followed = 0
        for job in running:
            name = job.request.get("name") or job.kind
            epoch = f", epoch {job.progress['epoch']}/{job.progress['epochs']}" if job.progress.get("epochs") else ""
            decision = decide(job, self.platform, retry_interrupted=self.config.retry_interrupted, at_shutdown=True)
            if decision.outcome is Outcome.MONITOR:
                logger.warning("job %s (%s%s): keeps running on the platform; followed again at the next start",
                               job.id, name, epoch)
                followed += 1
                continue
            if decision.outcome is Outcome.REQUEUE and self.platform.resumable(job):
                logger.warning("job %s (%s%s): stopped now (it keeps its last checkpoint) and queued again, to "
                               "resume from that checkpoint at the next start", job.id, name, epoch)
                stopped_now.append(job.id)
                continue
            if decision.outcome is Outcome.REQUEUE:
                then = "queued again"
            elif decision.outcome is Outcome.CANCEL:
                then = "ends CANCELLED (it had been asked to stop)"
            else:
                then = (f"ends ERROR ({decision.reason}); "
                        f"rerun it with: executor-client rerun {job.id[:8]}")
            logger.warning("job %s (%s%s): gets %ss to finish, then is stopped and %s", job.id, name, epoch,
                           timeout, then)
        if len(running) > len(stopped_now) + followed:
            logger.warning("press Ctrl+C again to stop the running job(s) at once")
        return stopped_now

    def stop(self, timeout: float | None = None, cold: threading.Event | None = None) -> None:
        """Stop taking jobs, let running local jobs finish within the bound (or until `cold` is set), then stop them."""
        timeout = self.config.shutdown_timeout if timeout is None else timeout
        cold = cold or threading.Event()
        self._stopping.set()
        self._monitor_wake.set()
        with self._wake:
            self._wake.notify_all()
        stopped_now = self._announce_stop(timeout)
        if stopped_now:
            self.platform.stop_all(stopped_now)
        deadline = time.monotonic() + timeout
        # Warm: running jobs get the bound to finish on their own, unless a second interrupt asks for cold now.
        while self.busy_workers() and time.monotonic() < deadline:
            if cold.wait(0.1):
                logger.warning("second interrupt: stopping the running job(s) now")
                break
        # Cold: whatever still runs is stopped; its worker records how it ended.
        if self.busy_workers():
            logger.warning("stopping %d running job(s) at shutdown", self.busy_workers())
            self.platform.stop_all()
        for thread in self._threads:
            thread.join(timeout=max(0.1, deadline + 15 - time.monotonic()))
        if self.store.shared:
            # Released at once: another executor follows this one's SageMaker jobs without waiting for the lapse.
            self.lease.stop(release=True)
        self.platform.close()
        self.started = False
