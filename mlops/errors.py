"""The exceptions of the backend layer; api/__init__.py maps them to HTTP answers."""
from __future__ import annotations

from typing import Any


class InvalidRequest(ValueError):
    """A request names something the executor cannot run; answered 400 or 422 naming the field."""

    def __init__(self, field: str, message: str, status: int = 422, **extra: object):
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message
        self.status = status
        self.extra = extra


class BackendError(Exception):
    """A backend failed to do what was asked; stored as the job's failure reason."""


class JobFailed(BackendError):
    """The job itself failed (its script exited non-zero, or the platform reported a failure)."""


class SageMakerError(BackendError):
    """Base exception for SageMaker training errors."""


class SageMakerConfigurationError(SageMakerError):
    """Raised when SageMaker configuration is invalid."""


class SageMakerJobError(SageMakerError):
    """Raised when SageMaker job operations fail."""


class DockerContainerError(SageMakerError):
    """Raised when Docker container operations fail."""


# Read from the exception's `response`, without botocore, so that light modules (staging) can use them.
def error_code(exc: Exception) -> str | None:
    """Return the AWS error code of a botocore ClientError, else None."""
    response: Any = getattr(exc, "response", None)
    return response.get("Error", {}).get("Code") if isinstance(response, dict) else None


def error_text(exc: Exception) -> str:
    """Return 'Code: message' for an AWS error, or the exception's text."""
    code = error_code(exc)
    if code:
        return f"{code}: {exc.response['Error'].get('Message', '')}".rstrip(": ")  # type: ignore[attr-defined]
    return str(exc)
