"""Local tuning: one thread drives every running tuning's Optuna study; its trials are training jobs in the queue.

The tuner asks the study for a trial, queues it as a training job whose parent is the tuning, and
from then on reads the trial's epochs from the metric lines the job's output follower stores: each
epoch's objective goes to the pruner, a pruned trial is stopped at once (it keeps its metrics and
checkpoint), and a trial that ended is told to the study. The study lives in the data folder in
Optuna's journal file and only this thread writes it. A trial's job id follows from the tuning's id
and the trial's number, so after a restart the tuner finds each asked trial's job again (or queues
the one a crash kept from being queued): no trial runs or counts twice.

Sharing a store, the tuner drives a tuning only while the executor holds its lease: once it lapses, the
tuner writes nothing more (no trial queued, nothing told to the study, no progress, no end), and the
executor that takes the tuning job over adopts it again from its study, as after a restart.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from db import StoreError
from job import TRAINING, Job, JobStatus
from mlops.reporter import JobReader, JobReporter
from mlops.errors import InvalidRequest
from mlops.job_requests import TrainingRequest
from mlops import tuning as tuning_domain

logger = logging.getLogger(__name__)

# The fields of a tuning's request that each of its trials takes as a training request.
TRIAL_FIELDS = ("dataset", "dataset_path", "metadata_file", "instance_type", "instance_count", "max_runtime_seconds",
                "spot", "entry_point", "source_dir", "tags")

Enqueue = Callable[[str, TrainingRequest, str], Job]


@dataclass
class _Running:
    """A tuning this tuner drives: its study and what it has already told or stopped."""

    job_id: str
    tuning: dict[str, Any]
    study: Any
    started: float
    #: The claim's token: a tuning another executor took over (a new token) is that executor's to drive.
    fence: int
    stops_sent: set[int] = field(default_factory=set)
    table: list[dict[str, Any]] = field(default_factory=list)


class LocalTuner:
    """Drives the tunings this executor runs, from one thread (the study's one writer).

    It holds no store: it reads its tunings and their trials through the queue's JobReader, and
    writes through each job's reporter.
    """

    def __init__(self, jobs: JobReader, data_dir: Path, enqueue: Enqueue, cancel: Callable[[str], Any],
                 reporter_for: Callable[[Job], JobReporter], *, clock: Callable[[], float] = time.time):
        self.jobs = jobs
        self.data_dir = data_dir
        self.enqueue = enqueue
        self.cancel = cancel
        self.reporter_for = reporter_for
        self.clock = clock
        self._running: dict[str, _Running] = {}
        self._lock = threading.Lock()
        # Set from the lease guard's thread when the executor's lease lapses: the step in progress writes nothing more.
        self._let_go = threading.Event()

    def adopt(self, job: Job) -> None:
        """Take a claimed tuning job: open (or reopen after a restart) its study."""
        ctx = self.reporter_for(job)
        tuning = TrainingRequest.from_stored(job.request).search()
        path = tuning_domain.study_path(self.data_dir, job.id)
        fresh = not path.exists()
        study = tuning_domain.open_study(path, job.id, tuning)
        if fresh and tuning.get("warm_start"):
            sources = [tuning_domain.open_study(tuning_domain.study_path(self.data_dir, parent), parent, tuning)
                       for parent in tuning["warm_start"]["from"]]
            added = tuning_domain.warm_start_trials(study, sources, tuning)
            ctx.log(f"[executor] warm start: {added} finished trial(s) of {len(sources)} earlier tuning(s)")
        ctx.log(f"[executor] tuning {tuning['strategy']}: up to {tuning['max_trials']} trial(s), "
                f"{tuning['max_parallel']} at once, {tuning['objective']['goal']} {tuning['objective']['metric']}"
                + ("" if fresh else " (resumed: its finished trials are kept)"))
        ctx.set_phase("Tuning", "running trials")
        with self._lock:
            self._running[job.id] = _Running(job.id, tuning, study, job.started or self.clock(), job.fence)

    def active(self) -> int:
        """Return how many tunings this tuner drives now."""
        with self._lock:
            return len(self._running)

    def let_go(self) -> None:
        """Write nothing more of the tunings this tuner drives, from the step in progress on: the lease lapsed.

        They stay in hand, undriven (the queue steps no tuning while its lease is lapsed): one another executor
        takes over is dropped at the next step (its claim's token changed); one still held then is driven again.
        """
        if not self._let_go.is_set():
            self._let_go.set()
            logger.warning("the executor's lease lapsed: %d tuning(s) are no longer driven here; another executor "
                           "may take them over", self.active())

    def step(self) -> None:
        """Run one cycle over every tuning: report epochs, stop pruned trials, queue new ones, end finished tunings."""
        # The queue steps only while the executor holds its lease: a lapse the guard reports after this line
        # stops the cycle's writes, one reported just before it is reported again at the guard's next tick.
        self._let_go.clear()
        with self._lock:
            running = list(self._running.values())
        for state in running:
            try:
                ended = self._step(state)
            except StoreError as exc:
                logger.warning("tuning %s: the store failed in this cycle (%s); trying again", state.job_id, exc)
                continue
            except Exception as exc:  # a bug ends this tuning, not the tuner and every other tuning
                logger.exception("tuning %s: unexpected error", state.job_id)
                if self._let_go.is_set():
                    continue
                self._end(state, JobStatus.ERROR, f"internal error: {type(exc).__name__}: {exc}")
                ended = True
            if ended:
                with self._lock:
                    self._running.pop(state.job_id, None)

    def _step(self, state: _Running) -> bool:
        import optuna

        job = self.jobs.get(state.job_id)
        if job is None or job.status is not JobStatus.RUNNING or job.fence != state.fence:
            return True
        if self._let_go.is_set():
            return False
        tuning = state.tuning
        limit = tuning.get("max_runtime_seconds")
        out_of_time = bool(limit) and self.clock() - state.started > limit
        stopping = job.cancel_requested or out_of_time
        own = [trial for trial in state.study.get_trials(deepcopy=False) if not trial.user_attrs.get("warm_start")]
        for trial in own:
            if trial.state is optuna.trial.TrialState.RUNNING:
                self._follow(state, job, trial, stopping)
        own = [trial for trial in state.study.get_trials(deepcopy=False) if not trial.user_attrs.get("warm_start")]
        running = sum(trial.state is optuna.trial.TrialState.RUNNING for trial in own)
        asked = len(own)
        while (not stopping and running < tuning["max_parallel"] and asked < tuning["max_trials"]
               and not self._let_go.is_set()):
            trial = state.study.ask()
            values = tuning_domain.suggest(trial, tuning["ranges"])
            self._queue_trial(job, trial.number, values)
            running, asked = running + 1, asked + 1
        self._record(state, job)
        if self._let_go.is_set():
            return False
        if running == 0 and (stopping or asked >= tuning["max_trials"]):
            self._finish(state, job, out_of_time)
            return True
        return False

    def _follow(self, state: _Running, tuning_job: Job, trial: Any, stopping: bool) -> None:
        """Report a running trial's new epochs, stop it if pruned (or the tuning stops), tell its end."""
        import optuna

        trial_id = tuning_domain.trial_job_id(tuning_job.id, trial.number)
        job = self.jobs.get(trial_id)
        if job is None:
            if stopping:
                state.study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
            else:  # asked before a restart, never queued
                self._queue_trial(tuning_job, trial.number, trial.params)
            return
        metric = state.tuning["objective"]["metric"]
        live = optuna.trial.Trial(state.study, trial._trial_id)
        reported = max(trial.intermediate_values, default=0)
        epochs = {row["step"]: row["value"] for row in self.jobs.metric_history(trial_id)
                  if row["name"] == metric and row["step"] is not None and row["value"] is not None}
        if self._let_go.is_set():
            return
        for epoch in sorted(step for step in epochs if step > reported):
            live.report(epochs[epoch], epoch)
            reported = epoch
        if not job.status.is_final:
            if trial.number in state.stops_sent:
                return
            if stopping:
                state.stops_sent.add(trial.number)
                self.cancel(trial_id)
            # After its last epoch a trial has nothing left to save: it ends as it is.
            elif (job.status is JobStatus.RUNNING and epochs and reported < (job.progress.get("epochs") or 0)
                  and live.should_prune()):
                state.stops_sent.add(trial.number)
                self.reporter_for(job).merge_details(stopped_early_at_epoch=reported)
                self.reporter_for(tuning_job).log(f"[executor] trial {trial.number + 1}: stopped early at epoch "
                                                 f"{reported} ({metric} {epochs[reported]:.4f})")
                self.cancel(trial_id)
            return
        value = self.jobs.latest_metrics(trial_id).get(metric)
        if job.details.get("stopped_early_at_epoch") is not None and job.status is not JobStatus.COMPLETED:
            state.study.tell(trial.number, state=optuna.trial.TrialState.PRUNED)
        elif job.status is JobStatus.COMPLETED and value is not None:
            state.study.tell(trial.number, value)
        else:
            state.study.tell(trial.number, state=optuna.trial.TrialState.FAIL)

    def _queue_trial(self, tuning_job: Job, number: int, values: dict[str, Any]) -> None:
        tuning = TrainingRequest.from_stored(tuning_job.request)
        stored = tuning.to_stored()
        trial_request = TrainingRequest.from_stored({key: stored[key] for key in TRIAL_FIELDS if key in stored})
        trial_request = trial_request.with_changes(
            name=f"{tuning.name}-trial-{number + 1}",
            hyperparameters={**tuning.hyperparameters, **tuning_domain.hyperparameter_text(values)},
            # A trial interrupted by a restart runs again (from its checkpoint where the script keeps one).
            retry_on_restart=True, parent=tuning_job.id, trial=number + 1)
        self.enqueue(TRAINING, trial_request, tuning_domain.trial_job_id(tuning_job.id, number))

    def _record(self, state: _Running, tuning_job: Job) -> None:
        """Write the trials table, the best trial and the progress into the tuning's record when they changed."""
        table = trial_table(self.jobs, tuning_job.id, state.study, state.tuning)
        if table == state.table or self._let_go.is_set():
            return
        state.table = table
        ctx = self.reporter_for(tuning_job)
        best = best_trial(table, state.tuning["objective"]["goal"])
        done = sum(row["status"] not in (JobStatus.WAITING.value, JobStatus.RUNNING.value) for row in table)
        running = sum(row["status"] == JobStatus.RUNNING.value for row in table)
        ctx.merge_details(trials=table, best=best)
        ctx.set_progress(done=done, total=state.tuning["max_trials"], running=running,
                         percent=round(100.0 * done / state.tuning["max_trials"], 1))

    def _finish(self, state: _Running, job: Job, out_of_time: bool) -> None:
        best = best_trial(state.table, state.tuning["objective"]["goal"])
        if job.cancel_requested:
            self._end(state, JobStatus.CANCELLED, message="stopped at the user's request; every trial was stopped")
        elif best is None:
            self._end(state, JobStatus.ERROR, "no trial completed with a value of the objective "
                                              f"{state.tuning['objective']['metric']}; see the trials' logs")
        else:
            reason = "its max_runtime_seconds passed; " if out_of_time else ""
            self._end(state, JobStatus.COMPLETED, message=f"{reason}best trial {best['number']}: "
                                                          f"{state.tuning['objective']['metric']} {best['objective']}")

    def _end(self, state: _Running, status: JobStatus, failure_reason: str | None = None,
             message: str | None = None) -> None:
        job = self.jobs.get(state.job_id)
        if job is not None and job.status is JobStatus.RUNNING and job.fence == state.fence:
            self.reporter_for(job).finish(status, failure_reason, message)


def trial_table(jobs: JobReader, tuning_id: str, study: Any, tuning: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the trials of a tuning as the status route shows them, first trial first."""
    import optuna

    metric = tuning["objective"]["metric"]
    rows = []
    for trial in study.get_trials(deepcopy=False):
        if trial.user_attrs.get("warm_start"):
            continue
        job_id = tuning_domain.trial_job_id(tuning_id, trial.number)
        job = jobs.get(job_id)
        status = job.status.value if job is not None else JobStatus.WAITING.value
        if trial.state is optuna.trial.TrialState.PRUNED:
            status = tuning_domain.STOPPED_EARLY
        objective = trial.value if trial.state is optuna.trial.TrialState.COMPLETE else (
            jobs.latest_metrics(job_id).get(metric) if job is not None else None)
        rows.append({"number": trial.number + 1, "job_id": job_id, "hyperparameters": dict(trial.params),
                     "status": status, "objective": objective,
                     "epoch": (job.progress.get("epoch") if job is not None else None)})
    return rows


def best_trial(table: list[dict[str, Any]], goal: str) -> dict[str, Any] | None:
    """Return the completed trial with the best objective, or None before one completed."""
    completed = [row for row in table if row["status"] == JobStatus.COMPLETED.value and row["objective"] is not None]
    if not completed:
        return None
    pick = max if goal == "maximize" else min
    best = pick(completed, key=lambda row: row["objective"])
    return {"job_id": best["job_id"], "number": best["number"], "hyperparameters": best["hyperparameters"],
            "objective": best["objective"]}


def check_local(tuning: dict[str, Any], data_dir: Path) -> None:
    """Refuse a warm start from a tuning this executor has no study of."""
    for source in (tuning.get("warm_start") or {}).get("from", []):
        try:
            path = tuning_domain.study_path(data_dir, source)
        except ValueError:
            raise InvalidRequest("tuning.warm_start.from", f"{source!r} is not a tuning job id") from None
        if not path.is_file():
            raise InvalidRequest("tuning.warm_start.from", f"no tuning {source} has run on this executor")
