"""What the SageMaker platform resolves for a training, tuning or pipeline job when it checks the request."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping


#: Settings that jobs stored by earlier releases do not hold.
ADDED_LATER = frozenset({"output_s3_uri"})


@dataclass(frozen=True)
class SageMakerSettings:
    """The instance, limits, role, bucket, container and script a job's SageMaker training job is made with."""

    instance_type: str
    instance_count: int
    max_runtime_seconds: int
    volume_size_gb: int
    spot: bool
    max_wait_seconds: int | None
    role_arn: str
    bucket: str
    prefix: str
    container: str | None
    py_version: str
    tags: Mapping[str, str]
    #: Where the model goes when the request names a place; None: the job's folder in the bucket.
    output_s3_uri: str | None
    entry_point: str
    hyperparameters: Mapping[str, str]
    metric_definitions: list[dict[str, str]]

    @classmethod
    def from_stored(cls, stored: Mapping[str, Any]) -> SageMakerSettings:
        """Read settings as a job keeps them (Job.settings), those stored before a place for the model was taken too."""
        return cls(**{item.name: stored.get(item.name) if item.name in ADDED_LATER else stored[item.name]
                      for item in dataclasses.fields(cls)})

    def to_stored(self) -> dict[str, Any]:
        """Return the settings as a job keeps them, in their order."""
        return {item.name: getattr(self, item.name) for item in dataclasses.fields(self)}
