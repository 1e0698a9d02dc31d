"""Entry point: train an image classifier on the `training` channel under the SageMaker contract.

Run as `python train.py --epochs 10 ...` (or under torchrun); `python train.py --describe` prints
the hyperparameters and metric definitions as JSON. Exit codes: 0 success, 1 failed training
(bad dataset or any error), 2 bad hyperparameters, 143 stopped by SIGTERM (as SageMaker sends before a
spot interruption; the last finished epoch's checkpoint is kept and a new run resumes from it); on
failure `$SM_OUTPUT_DIR/failure` says why.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from dataset import channel_dir, load_dataset, split_dataset
from failure import DatasetError, TrainingStopped, write_failure
from hyperparameters import HyperparameterError, describe_hyperparameters, parse_hyperparameters
from metric_lines import METRIC_DEFINITIONS

logger = logging.getLogger("train")

EXIT_TRAINING_FAILED = 1
EXIT_BAD_HYPERPARAMETER = 2
# What a shell reports for a process that SIGTERM ended: the run did not complete, and is not a failure.
EXIT_STOPPED = 128 + 15


def main(argv: Sequence[str]) -> int:
    """Parse the flags, train and write the outputs; return the process exit code."""
    try:
        args = parse_hyperparameters(argv)
    except HyperparameterError as error:
        return _fail(f"invalid hyperparameter: {error}", EXIT_BAD_HYPERPARAMETER)
    if args.describe:
        print(json.dumps(describe(), indent=2))
        return 0
    _configure_logging(int(os.environ.get("RANK", 0)))
    try:
        run(args)
    except TrainingStopped as stopped:
        logger.warning("%s", stopped)
        return EXIT_STOPPED
    except DatasetError as error:
        return _fail(f"bad training dataset: {error}", EXIT_TRAINING_FAILED)
    except Exception as error:
        logger.exception("training failed")
        return _fail(f"training failed: {type(error).__name__}: {error}", EXIT_TRAINING_FAILED)
    return 0


def describe() -> dict:
    """Return the hyperparameter table and SageMaker metric definitions as `--describe` prints them."""
    return {"hyperparameters": describe_hyperparameters(), "metrics": list(METRIC_DEFINITIONS)}


# Set by the executor in a tuning's trials; SageMaker sets TRAINING_JOB_NAME in every training container.
CHECKPOINTS_PER_JOB = "ESSEDUM_CHECKPOINTS_PER_JOB"


def run(args: argparse.Namespace) -> None:
    """Load the channel's dataset, train on it and write the model and metrics."""
    # Decoded images live in memory, so the unpacked archives can go as soon as they are read.
    # torch's import (a second or more) runs while worker processes decode, and only then, so
    # --describe, bad flags and datasets without images answer without it.
    with tempfile.TemporaryDirectory(prefix="training-channel-") as scratch:
        dataset = load_dataset(channel_dir(), args.metadata_file, args.image_size, Path(scratch),
                               while_decoding=lambda: importlib.import_module("trainer"))
    split = split_dataset(dataset, args.val_split, args.seed)
    from trainer import OutputDirs, ProcessGroup, train
    group = ProcessGroup.from_environment()
    outputs = OutputDirs(
        model=Path(os.environ.get("SM_MODEL_DIR", "/opt/ml/model")),
        output_data=Path(os.environ.get("SM_OUTPUT_DATA_DIR", "/opt/ml/output/data")),
        checkpoints=_checkpoint_folder(Path(args.checkpoint_dir)),
    )
    final = train(args, dataset, split, group, outputs)
    logger.info("final metrics: %s", json.dumps(final))


def _checkpoint_folder(path: Path) -> Path | None:
    # Outside a container /opt/ml/checkpoints is usually not writable; train without resuming
    # rather than fail a run that never asked for checkpoints.
    job_name = os.environ.get("TRAINING_JOB_NAME", "")
    if os.environ.get(CHECKPOINTS_PER_JOB) and job_name:
        # A tuning's trials share one checkpoint location in S3: each keeps (and resumes from) its own folder.
        path = path / job_name
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        logger.warning("checkpoints disabled: cannot create %s (%s)", path, error)
        return None
    return path


def _configure_logging(rank: int) -> None:
    # Only rank 0 reports progress; other ranks speak up for warnings and errors alone.
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"%(asctime)s %(levelname)s [rank {rank}] %(message)s",
        stream=sys.stdout,
    )


def _fail(message: str, exit_code: int) -> int:
    print(message, file=sys.stderr, flush=True)
    try:
        write_failure(message)
    except OSError as error:
        print(f"cannot write the failure file: {error}", file=sys.stderr, flush=True)
    return exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
