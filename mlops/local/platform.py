"""The local platform: jobs as sandboxed processes of this machine, models as folders served by model workers."""
from __future__ import annotations

from typing import Any, Collection

from config import Config
from job import PIPELINE, TRAINING, TRANSFORM, TUNING, Job
from mlops.aws import ClientFactory
from mlops.errors import NotSupported
from mlops.job_requests import Checked, JobRequest, PipelineRequest
from mlops.local.jobs import LocalJobs
from mlops.local.serving import LocalModelLifecycle
from mlops.platform import Platform, Ran, Stop
from mlops.records import RecordBook
from mlops.sagemaker.training_service import SageMakerTrainingService
from mlops.reporter import JobReporter
from mlops.staging import remote_log_uri


class LocalPlatform(LocalModelLifecycle, Platform):
    """Runs pipelines, trainings, deployments and transforms on this machine; keeps their records."""

    name = "local"
    kinds = LocalJobs.kinds | LocalModelLifecycle.record_kinds
    stoppable_kinds = frozenset({PIPELINE, TRAINING, TRANSFORM, TUNING})
    source_org = "Local"
    default_instance_type = "this machine"

    def __init__(self, config: Config, book: RecordBook, clients: ClientFactory):
        super().__init__(config, book, clients)
        self.training = LocalJobs(config, clients)

    def check(self, kind: str, request: JobRequest, secrets: dict[str, Any]) -> Checked:
        if kind in self.training.kinds:
            return Checked(self.training.check(kind, request, secrets))
        return Checked(self.check_record_job(kind, request))

    def log_location(self, kind: str, request: JobRequest) -> str | None:
        return remote_log_uri(request) if isinstance(request, PipelineRequest) else None

    def run(self, job: Job, reporter: JobReporter) -> Ran:
        if job.kind in self.training.kinds:
            return self.training.run(reporter)
        return self.run_record_job(reporter)

    def follow(self, reporters: list[JobReporter]) -> None:
        """Nothing to follow: every local job ends inside run."""

    def cancel(self, job: Job, reporter: JobReporter) -> Stop:
        if job.kind in self.training.kinds:
            return self.training.cancel(job)
        return self.cancel_record_job(job)

    def let_go(self, job: Job) -> None:
        if job.kind in self.training.kinds:
            self.training.let_go(job.id)
        else:
            self.let_go_record_job(job)

    def resumable(self, job: Job) -> bool:
        """Deployments and transforms are idempotent; a training resumes from its checkpoints."""
        return self.training.resumable(job) if job.kind in self.training.kinds else True

    def clean_up_abandoned(self, job: Job) -> None:
        if job.kind in self.training.kinds:
            self.training.clean_up_abandoned(job)

    def finish_ended(self, job: Job, reporter: JobReporter) -> bool:
        return job.kind in self.training.kinds and self.training.finish_ended(reporter)

    def output_artifacts(self, job: Job) -> dict[str, Any]:
        return self.training.output_artifacts(job)

    def describe(self, job: Job) -> dict[str, Any] | None:
        """None: a local job's state is all in the store."""
        return None

    def csv_columns(self, s3_uri: str, field: str = "inputs") -> list[str]:
        raise NotSupported(field, "the local platform does not read CSV headers in S3")

    def ready_check(self) -> tuple[bool, str | None] | None:
        """None: this machine has nothing more to check than the store and the queue."""
        return None

    def cloud_configuration(self) -> dict[str, Any]:
        # The local platform reads datasets from S3 too: its AWS access is checked the same way.
        return SageMakerTrainingService(self.config, self.clients).validate_configuration()

    def stop_all(self, job_ids: Collection[str] | None = None) -> None:
        self.training.stop_all(job_ids)

    def close(self) -> None:
        self.training.stop_all()
        super().close()
