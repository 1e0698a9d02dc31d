"""The one wiring function: the platform the configuration names (EXECUTOR_BACKEND)."""
from __future__ import annotations

from config import Config
from db import Store
from mlops.aws import ClientFactory
from mlops.platform import Platform
from mlops.records import RecordBook


def make_platform(config: Config, store: Store, clients: ClientFactory) -> Platform:
    """Return the platform the configuration names, keeping its records in the store's records table."""
    book = RecordBook(store)
    if config.backend == "sagemaker":
        # Imported here: a local executor need not load SageMaker's service model at start-up.
        from mlops.sagemaker.platform import SageMakerPlatform

        return SageMakerPlatform(config, book, clients)
    from mlops.local.platform import LocalPlatform

    return LocalPlatform(config, book, clients)
