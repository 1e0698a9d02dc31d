"""The platform the executor runs on: its jobs backend and its model lifecycle, composed; and the one wiring function."""
from __future__ import annotations

from typing import Any, Collection

from config import Config
from db import Store
from job import Job
from mlops.base import Backend, ContextFactory, JobContext
from mlops.aws import ClientFactory
from mlops.local.jobs import LocalBackend
from mlops.local.serving import LocalModelLifecycle
from mlops.records import ModelLifecycle
from mlops.sagemaker.training_service import SageMakerTrainingService


class Platform(Backend):
    """One platform: the backend of its training jobs and the lifecycle of its models, behind one interface.

    Jobs of the lifecycle's kinds (endpoint, transform) go to the lifecycle, every other job to the
    jobs backend. Routes reach records through `model_lifecycle` and the AWS configuration check
    through `cloud_configuration`, both of which every platform has.
    """

    def __init__(self, jobs: Backend, model_lifecycle: ModelLifecycle, config: Config, clients: ClientFactory):
        self.jobs = jobs
        self.model_lifecycle = model_lifecycle
        self.config = config
        self.clients = clients

    # Backend declares these per class; a platform's are its jobs backend's, so read-only properties
    # stand in for them (the ignores: mypy will not let a property replace a writable ClassVar).
    @property
    def name(self) -> str:  # type: ignore[override]
        return self.jobs.name

    @property
    def remote(self) -> bool:  # type: ignore[override]
        return self.jobs.remote

    @property
    def kinds(self) -> frozenset[str]:  # type: ignore[override]
        return frozenset(self.jobs.kinds) | self.model_lifecycle.kinds

    @property
    def stoppable_kinds(self) -> frozenset[str]:  # type: ignore[override]
        return frozenset(self.jobs.stoppable_kinds) | self.model_lifecycle.stoppable_kinds

    def _runner(self, kind: str) -> Backend | ModelLifecycle:
        return self.model_lifecycle if kind in self.model_lifecycle.kinds else self.jobs

    def check(self, kind: str, request: dict[str, Any], secrets: dict[str, Any]) -> dict[str, Any]:
        return self._runner(kind).check(kind, request, secrets)

    def run(self, ctx: JobContext) -> None:
        self._runner(ctx.job.kind).run(ctx)

    def cancel(self, job: Job) -> bool:
        return self._runner(job.kind).cancel(job)

    def resumable(self, job: Job) -> bool:
        return self._runner(job.kind).resumable(job)

    def clean_up_abandoned(self, job: Job) -> None:
        self._runner(job.kind).clean_up_abandoned(job)

    def monitor(self, jobs: list[Job], context_for: ContextFactory) -> None:
        for runner in (self.jobs, self.model_lifecycle):
            mine = [job for job in jobs if self._runner(job.kind) is runner]
            if mine:
                runner.monitor(mine, context_for)

    def log_location(self, job: Job) -> str:
        return self.jobs.log_location(job)

    def output_artifacts(self, job: Job) -> dict[str, Any]:
        return self.jobs.output_artifacts(job)

    def describe(self, job: Job) -> dict[str, Any] | None:
        return self.jobs.describe(job)

    def csv_columns(self, s3_uri: str, field: str = "inputs") -> list[str]:
        return self.jobs.csv_columns(s3_uri, field)

    def ready_check(self) -> tuple[bool, str | None] | None:
        return self.jobs.ready_check()

    def stop_all(self, job_ids: Collection[str] | None = None) -> None:
        self.jobs.stop_all(job_ids)

    def cloud_configuration(self) -> dict[str, Any]:
        """Check the executor's own AWS configuration (credentials, bucket, role, instance type); nothing is created."""
        return SageMakerTrainingService(self.config, self.clients).validate_configuration()

    def close(self) -> None:
        self.model_lifecycle.close()
        self.jobs.close()


def make_platform(config: Config, store: Store, clients: ClientFactory, jobs: Backend | None = None) -> Platform:
    """Return the platform the configuration names (EXECUTOR_BACKEND), or the one around a given jobs backend."""
    name = jobs.name if jobs is not None else config.backend
    if name == "sagemaker":
        # Imported here: a local executor need not load SageMaker's service model at start-up.
        from mlops.sagemaker.jobs import SageMakerBackend
        from mlops.sagemaker.serving import SageMakerModelLifecycle

        return Platform(jobs or SageMakerBackend(config, clients, store), SageMakerModelLifecycle(config, store, clients),
                        config, clients)
    return Platform(jobs or LocalBackend(config, clients), LocalModelLifecycle(config, store, clients), config, clients)
