"""How a run ends short of success: the failure file SageMaker reads into FailureReason, or a stop by SIGTERM."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_OUTPUT_DIR = "/opt/ml/output"

# DescribeTrainingJob's FailureReason holds at most 1,024 characters.
MAX_FAILURE_LENGTH = 1024


class DatasetError(ValueError):
    """The training channel does not hold a usable dataset."""


def write_failure(message: str) -> Path:
    """Write a one-line failure message to $SM_OUTPUT_DIR/failure and return its path."""
    path = Path(os.environ.get("SM_OUTPUT_DIR", DEFAULT_OUTPUT_DIR)) / "failure"
    path.parent.mkdir(parents=True, exist_ok=True)
    one_line = " ".join(message.split())[:MAX_FAILURE_LENGTH]
    path.write_text(one_line + "\n", encoding="utf-8")
    return path


class TrainingStopped(Exception):
    """SIGTERM stopped the training; the state of the last finished epoch is saved (when checkpoints are on)."""

    def __init__(self, epoch: int, checkpoints: Path | None):
        kept = (f"the checkpoint after epoch {epoch - 1} is kept in {checkpoints}; a new run resumes at epoch {epoch}"
                if checkpoints is not None and epoch > 1 else "no epoch was saved; a new run starts afresh")
        super().__init__(f"stopped by SIGTERM during epoch {epoch}: {kept}")
        self.epoch = epoch
