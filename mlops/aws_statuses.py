"""The status words of SageMaker's job families, declared once, as Airflow's SageMakerHook declares them.

A family's words are sorted the way the executor reads a Describe answer: still moving
(non-terminal), or ended as completed, failed or stopped; a Stop call is made only in a stoppable
state. The words are AWS's own, from botocore's SageMaker model (tests/test_aws_statuses.py holds
them to it). The local platform's records and the Essedum routes answer in the same words, so a
client reads one vocabulary whichever platform runs its job.
"""
from __future__ import annotations

from dataclasses import dataclass

IN_PROGRESS = "InProgress"
STOPPING = "Stopping"
STOPPED = "Stopped"
COMPLETED = "Completed"
FAILED = "Failed"
DELETING = "Deleting"
# A training job's SecondaryStatus before it starts: what Essedum shows for a job still queued.
PENDING = "Pending"

CREATING = "Creating"
UPDATING = "Updating"
IN_SERVICE = "InService"
OUT_OF_SERVICE = "OutOfService"


@dataclass(frozen=True)
class JobStates:
    """One job family's status words: those it moves through, and those it ends in."""

    non_terminal_states: frozenset[str]
    completed_states: frozenset[str] = frozenset({COMPLETED})
    failed_states: frozenset[str] = frozenset({FAILED})
    stopped_states: frozenset[str] = frozenset({STOPPED})
    stoppable_states: frozenset[str] = frozenset({IN_PROGRESS})

    @property
    def terminal_states(self) -> frozenset[str]:
        """Return the words of a job that has ended, however it ended."""
        return self.completed_states | self.failed_states | self.stopped_states


TRAINING_STATES = JobStates(non_terminal_states=frozenset({IN_PROGRESS, STOPPING, DELETING}))
TRANSFORM_STATES = JobStates(non_terminal_states=frozenset({IN_PROGRESS, STOPPING}))
AUTOML_STATES = JobStates(non_terminal_states=frozenset({IN_PROGRESS, STOPPING}))
# A tuning whose deletion failed had ended before it: the executor reads it as stopped.
TUNING_STATES = JobStates(non_terminal_states=frozenset({IN_PROGRESS, STOPPING, DELETING}),
                          stopped_states=frozenset({STOPPED, "DeleteFailed"}))

# An endpoint that is changing: a deployment waits for it to settle rather than change it again.
ENDPOINT_NON_TERMINAL_STATES = frozenset({CREATING, UPDATING, "SystemUpdating", "RollingBack", DELETING,
                                          "UpdateRollbackFailed"})
# An endpoint that cannot serve: the deployment that led there has failed.
ENDPOINT_FAILED_STATES = frozenset({FAILED, OUT_OF_SERVICE})
