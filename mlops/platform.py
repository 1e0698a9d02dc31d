"""The one interface of a platform: the jobs it runs, the records it keeps, and the answers it gives.

huey's BaseStorage is the model: one flat interface, each method one line of docstring, and what a
platform can do declared as attributes. Each platform package has one implementation
(mlops/local/platform.py, mlops/sagemaker/platform.py); mlops/platforms.py picks one from the
configuration. Its answers are values the queue reads: `run` says whether the job ended or was
launched to be followed, `cancel` whether the job stopped now or a stop was asked for.
"""
from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from typing import Any, BinaryIO, ClassVar, Collection, Protocol

from db import Record
from job import Job
from mlops.errors import NotSupported
from mlops.exports import Export
from mlops.job_requests import Checked, JobRequest
from mlops.reporter import JobReporter
from mlops.sandbox import Sandbox


class Confinement(Protocol):
    """How a platform holds the user code it runs here to the job limits (mlops/local/limits.py)."""

    #: Why cgroups are not used, when they are not.
    missing: str | None

    @property
    def cgroups(self) -> bool:
        """True when each process tree gets a cgroup of its own."""

    def describe(self) -> str:
        """Say in one line how jobs are held to their limits."""


class Ran(enum.Enum):
    """What `run` did with a job."""

    ENDED = "ended"            # the job reached its final status inside run
    LAUNCHED = "launched"      # the platform runs it now; `follow` brings it to its end


class Stop(enum.Enum):
    """What `cancel` did with a running job."""

    STOPPED = "stopped"        # stopped now: the worker running it ends it CANCELLED
    REQUESTED = "requested"    # asked of the platform: following the job ends it CANCELLED
    NOTHING = "nothing"        # nothing of it runs any more: it ends as it ended


class Platform(ABC):
    """Runs jobs, keeps the records of models, endpoints, transforms and datasets, and says if it can work."""

    #: The platform's name, stored with each job it takes.
    name: ClassVar[str]
    #: The job kinds it runs; any other is refused with NotSupported.
    kinds: ClassVar[frozenset[str]]
    #: The kinds whose running jobs can be stopped.
    stoppable_kinds: ClassVar[frozenset[str]]
    #: The `source_org` of the records it keeps.
    source_org: ClassVar[str]
    #: How user code is isolated on this machine; None where none runs here.
    sandbox: Sandbox | None
    #: How user code is held to its limits on this machine; None where none runs here.
    confinement: Confinement | None
    #: The instance a training job whose request names none runs on, in words.
    default_instance_type: str

    # -- jobs ------------------------------------------------------------------------------------

    @abstractmethod
    def check(self, kind: str, request: JobRequest, secrets: dict[str, Any]) -> Checked:
        """Validate a request before anything is stored; return it normalised with its settings, or raise InvalidRequest."""

    @abstractmethod
    def log_location(self, kind: str, request: JobRequest) -> str | None:
        """Return where a checked job's log is published for clients; None: the executor's own log file."""

    @abstractmethod
    def reserve(self, kind: str, request: JobRequest, job_id: str) -> AbstractContextManager[Record | None]:
        """Mark what a checked job will change (an endpoint, a transform) for the job queued inside; undone on error."""

    @abstractmethod
    def run(self, job: Job, reporter: JobReporter) -> Ran:
        """Run a claimed job: to its end, or until the platform has it."""

    @abstractmethod
    def follow(self, reporters: list[JobReporter]) -> None:
        """Bring the launched jobs up to date (one monitor cycle), ending those the platform has ended."""

    @abstractmethod
    def cancel(self, job: Job, reporter: JobReporter) -> Stop:
        """Start stopping a running job the user asked to stop."""

    @abstractmethod
    def resumable(self, job: Job) -> bool:
        """Say whether running an interrupted job again continues its work instead of repeating it."""

    @abstractmethod
    def clean_up_abandoned(self, job: Job) -> None:
        """Stop what a previous run of the executor left behind of a job it was running."""

    def let_go(self, job: Job) -> None:
        """Stop this process's run of a job whose lease lapsed, recording no end of it and reading no store."""
        # A job launched on a remote platform runs there, not here: its new follower re-attaches to it.

    def finish_ended(self, job: Job, reporter: JobReporter) -> bool:
        """End a taken-over job as its run decided, where the run ended before its owner stored that; False if none did."""
        return False

    @abstractmethod
    def output_artifacts(self, job: Job) -> dict[str, Any]:
        """Return the job's output files as {stem: {"content": ...}}."""

    @abstractmethod
    def describe(self, job: Job) -> dict[str, Any] | None:
        """Return the platform's live description of a launched job; None where there is none."""

    @abstractmethod
    def csv_columns(self, s3_uri: str, field: str = "inputs") -> list[str]:
        """Return the header of a CSV the platform reads (AutoML's target must be one of its columns)."""

    # -- readiness -------------------------------------------------------------------------------

    @abstractmethod
    def ready_check(self) -> tuple[bool, str | None] | None:
        """Say whether the platform can take jobs now, and why not; None when it has nothing to check."""

    @abstractmethod
    def cloud_configuration(self) -> dict[str, Any]:
        """Check the executor's own AWS configuration (credentials, bucket, role, instance type); nothing is created."""

    @abstractmethod
    def stop_all(self, job_ids: Collection[str] | None = None) -> None:
        """Stop the jobs this process runs (these, or every one): the executor is shutting down."""

    @abstractmethod
    def close(self) -> None:
        """Release what the platform holds (processes, model workers, clients)."""

    # -- records ---------------------------------------------------------------------------------

    @abstractmethod
    def find(self, type: str, name: str) -> Record | None:
        """Return a record by type and name, or None."""

    @abstractmethod
    def record(self, type: str, name: str) -> Record:
        """Return a record by type and name, or raise NotFound."""

    @abstractmethod
    def records(self, type: str) -> list[Record]:
        """Return every record of a type."""

    @abstractmethod
    def endpoints_using(self, key: str, value: str) -> list[str]:
        """Return the names of the endpoints whose payload lists value under key."""

    @abstractmethod
    def register_model(self, body: dict[str, Any], origin: dict[str, Any]) -> Record:
        """Register a model (from a finished training job or containers) and return its record."""

    @abstractmethod
    def delete_model(self, name: str, adapter: str | None = None) -> None:
        """Delete a model no endpoint or running transform uses."""

    @abstractmethod
    def register_endpoint(self, body: dict[str, Any], origin: dict[str, Any]) -> Record:
        """Create an endpoint configuration and return its record."""

    @abstractmethod
    def delete_endpoint_config(self, name: str, adapter: str | None = None) -> None:
        """Delete an endpoint configuration no endpoint uses."""

    @abstractmethod
    def delete_endpoint(self, name: str, adapter: str | None = None) -> None:
        """Delete an endpoint that is not being deployed."""

    @abstractmethod
    def undeploy_endpoint(self, name: str, adapter: str | None = None) -> Record:
        """Take an endpoint down and keep its configuration and models."""

    @abstractmethod
    def invoke(self, name: str, body: bytes, content_type: str, accept: str | None,
               adapter: str | None = None) -> tuple[bytes, str]:
        """Send a payload to an endpoint in service; return the answer and its content type."""

    @abstractmethod
    def read_s3_payload(self, uri: str, adapter: str | None = None) -> tuple[bytes, str]:
        """Read an s3:// object to send to an endpoint, with its content type."""

    @abstractmethod
    def explain(self, name: str, body: bytes, content_type: str, adapter: str | None = None) -> dict[str, Any]:
        """Explain an endpoint's prediction for one request, or raise NotSupported saying why not."""

    @abstractmethod
    def export(self, record: Record, body: dict[str, Any], adapter: str | None = None) -> dict[str, Any]:
        """Export a model or dataset: say where and how its bytes can be fetched."""

    def export_state(self, record: Record) -> dict[str, Any]:
        """Say where a local export stands without starting one."""
        raise NotSupported("id", "this platform's exports answer at once; there is no export to poll")

    @abstractmethod
    def export_file(self, record: Record) -> Export:
        """Return the file a download of a model or dataset sends, or raise NotSupported."""

    @abstractmethod
    def upload_dataset(self, bucket: str | None, key: str, stream: BinaryIO, filename: str | None,
                       origin: dict[str, Any], description: str = "") -> Record:
        """Store an uploaded dataset file and return its record."""

    @abstractmethod
    def import_dataset(self, bucket: str | None, key: str | None, local_path: str, origin: dict[str, Any],
                       description: str = "") -> Record:
        """Add a file of the storage root as a dataset, as if it had been uploaded."""

    @abstractmethod
    def delete_dataset(self, name: str, adapter: str | None = None) -> None:
        """Delete a dataset file and its record."""
