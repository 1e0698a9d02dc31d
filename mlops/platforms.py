"""The wiring: the platform the configuration names (EXECUTOR_BACKEND), and who drives its tunings."""
from __future__ import annotations

from typing import TYPE_CHECKING

from config import Config
from db import Store
from mlops.aws import ClientFactory
from job import TUNING
from mlops.platform import Platform
from mlops.records import RecordBook

if TYPE_CHECKING:
    from queue_worker import JobQueue, Tuner


def make_platform(config: Config, store: Store, clients: ClientFactory) -> Platform:
    """Return the platform the configuration names, keeping its records in the store's records table."""
    book = RecordBook(store)
    if config.backend == "sagemaker":
        # Imported here: a local executor need not load SageMaker's service model at start-up.
        from mlops.sagemaker.platform import SageMakerPlatform

        return SageMakerPlatform(config, book, clients)
    from mlops.local.platform import LocalPlatform

    return LocalPlatform(config, book, clients)


def make_tuner(config: Config, queue: JobQueue) -> Tuner | None:
    """Return the tuner that drives the tunings whose trials run on this machine; None where none do."""
    if config.backend == "sagemaker" or TUNING not in queue.platform.kinds:
        return None
    from mlops.local.tuning import LocalTuner

    # It reads and writes through what the queue gives it, never the store.
    return LocalTuner(queue.job_reader, config.data_dir,
                      lambda kind, request, job_id: queue.enqueue(kind, request, job_id=job_id),
                      queue.cancel, queue.reporter_for, clock=queue.clock)
