"""The SageMaker platform: training, pipeline and AutoML jobs, endpoints and batch transforms on Amazon SageMaker."""
from __future__ import annotations

import time
from typing import Any, Callable, Collection

from config import Config
from job import Job
from mlops.aws import ClientFactory
from mlops.job_requests import Checked, JobRequest
from mlops.platform import Platform, Ran, Stop
from mlops.records import RecordBook
from mlops.reporter import JobReporter
from mlops.sagemaker.jobs import SageMakerJobs
from mlops.sagemaker.serving import SageMakerModelLifecycle
from mlops.sagemaker.training_service import PLATFORM_NAME, SageMakerTrainingService


class SageMakerPlatform(SageMakerModelLifecycle, Platform):
    """Launches every job on SageMaker and follows it there; keeps the records of what it made."""

    name = PLATFORM_NAME
    kinds = SageMakerJobs.kinds | SageMakerModelLifecycle.record_kinds
    stoppable_kinds = SageMakerJobs.kinds | SageMakerModelLifecycle.stoppable_record_kinds
    source_org = "AWS SageMaker"
    sandbox = None
    confinement = None

    def __init__(self, config: Config, book: RecordBook, clients: ClientFactory, *,
                 clock: Callable[[], float] = time.time):
        super().__init__(config, book, clients)
        self.training = SageMakerJobs(config, clients, clock=clock)
        self.default_instance_type = config.instance_type

    def check(self, kind: str, request: JobRequest, secrets: dict[str, Any]) -> Checked:
        if kind in self.training.kinds:
            return self.training.check(kind, request, secrets)
        return Checked(self.check_record_job(kind, request))

    def log_location(self, kind: str, request: JobRequest) -> str | None:
        """None: the monitor copies each job's CloudWatch lines into the executor's log file."""
        return None

    def run(self, job: Job, reporter: JobReporter) -> Ran:
        if job.kind in self.training.kinds:
            return self.training.run(reporter)
        return self.run_record_job(reporter)

    def follow(self, reporters: list[JobReporter]) -> None:
        training = [reporter for reporter in reporters if reporter.job.kind in self.training.kinds]
        if training:
            self.training.follow(training)
        changes = [reporter for reporter in reporters if reporter.job.kind in self.record_kinds]
        if changes:
            self.follow_record_jobs(changes)

    def cancel(self, job: Job, reporter: JobReporter) -> Stop:
        if job.kind in self.training.kinds:
            return self.training.cancel(job, reporter)
        return self.cancel_record_job(job)

    def resumable(self, job: Job) -> bool:
        """True: a job interrupted before SageMaker had it is launched again, and run() adopts one SageMaker has."""
        return True

    def clean_up_abandoned(self, job: Job) -> None:
        """Nothing runs on this machine: what SageMaker runs is followed again."""

    def output_artifacts(self, job: Job) -> dict[str, Any]:
        return self.training.output_artifacts(job)

    def describe(self, job: Job) -> dict[str, Any] | None:
        return self.training.describe(job)

    def csv_columns(self, s3_uri: str, field: str = "inputs") -> list[str]:
        return self.training.csv_columns(s3_uri, field)

    def ready_check(self) -> tuple[bool, str | None] | None:
        return self.training.ready_check()

    def cloud_configuration(self) -> dict[str, Any]:
        return SageMakerTrainingService(self.config, self.clients).validate_configuration()

    def stop_all(self, job_ids: Collection[str] | None = None) -> None:
        """Nothing to stop here: SageMaker jobs keep running and are followed again at the next start."""

    def close(self) -> None:
        """Nothing held beyond the clients, which the app owns."""
