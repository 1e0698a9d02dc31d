"""What becomes of a job that a restart or a shutdown interrupted: one rule, decided as data.

rq's abandoned-job cleanup is the model: a job found started by a worker that is gone is not left
hanging; one function says what it becomes, and the queue only carries the answer out. The
platform contributes facts (was the job launched on the platform, can running it again resume
it), never its own decision. A job the platform launched (its `run` answered LAUNCHED, which
recorded the job's external id) is followed again; every other job is run again or ended.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

from job import Job
from mlops.job_requests import request_to_show
from mlops.platform import Platform

# A job survives a few restarts in a row (an upgrade, a host reboot, an operator's kill -9) but not a
# crash loop: the job that brings the executor down each time it starts stops here.
MAX_ATTEMPTS = 5
RESTART_REASON = "executor restarted while the job was running"
STOP_REASON = "executor stopped while the job was running"
LOST_REASON = "executor {} was lost while the job was running (its lease lapsed)"
HOW_TO_RETRY = ("submit it again, or ask for a requeue with retry_on_restart in the request (or "
                "EXECUTOR_RETRY_INTERRUPTED for every job)")


class Outcome(enum.Enum):
    """What an interrupted job becomes."""

    MONITOR = "monitor"    # launched on its platform, which still runs it: follow it again
    REQUEUE = "requeue"    # back to WAITING, to run again
    CANCEL = "cancel"      # a user asked to stop it: it ends CANCELLED
    FAIL = "fail"          # it ends ERROR with the reason


@dataclass(frozen=True)
class Decision:
    """An outcome and the words the job's history (or failure reason) gets for it."""

    outcome: Outcome
    reason: str


def decide(job: Job, platform: Platform, *, retry_interrupted: bool, at_shutdown: bool = False,
           lost_executor: str | None = None) -> Decision:
    """Say what a job left RUNNING by a restart, a shutdown or a lost executor (taken over) becomes."""
    cause = LOST_REASON.format(lost_executor) if lost_executor else STOP_REASON if at_shutdown else RESTART_REASON
    if job.backend != platform.name:
        return Decision(Outcome.FAIL, f"{cause}, and the executor now uses the {platform.name} backend")
    if job.external_id:
        return Decision(Outcome.MONITOR, f"{cause}; the platform still runs it: following it again")
    if job.cancel_requested:
        return Decision(Outcome.CANCEL, f"{cause}; it had been asked to stop")
    if not (platform.resumable(job) or request_to_show(job.kind, job.request).retry_on_restart or retry_interrupted):
        return Decision(Outcome.FAIL, f"{cause}; to run it again, {HOW_TO_RETRY}")
    if job.attempts >= MAX_ATTEMPTS:
        return Decision(Outcome.FAIL, f"{cause}; not queued again: it has been started {job.attempts} times, "
                                      f"the bound is {MAX_ATTEMPTS} attempts")
    return Decision(Outcome.REQUEUE, f"{cause}; queued again (attempt {job.attempts + 1} of {MAX_ATTEMPTS})")
