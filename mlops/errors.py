"""The domain errors of everything below api/; api/__init__.py alone turns them into HTTP answers."""
from __future__ import annotations

from typing import Any


class InvalidRequest(ValueError):
    """A request names something the executor cannot run: a field it cannot accept."""

    def __init__(self, field: str, message: str, **extra: object):
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message
        self.extra = extra


class MalformedRequest(InvalidRequest):
    """A request that cannot be read as it stands: a field missing, malformed or contradicting another."""


class NotFound(InvalidRequest):
    """The request names a job, record or object that does not exist."""


class Conflict(InvalidRequest):
    """What the request names exists already, is in use, or is being changed by another job."""


class TooLarge(InvalidRequest):
    """A payload is larger than the executor or the platform takes."""


class NotAcceptable(InvalidRequest):
    """The answer cannot be given in the form the request asks for."""


class AccessDenied(InvalidRequest):
    """The platform refused the executor's credentials for what the request needs."""


class QuotaExceeded(InvalidRequest):
    """An account quota of the platform stops the request."""


class NotSupported(InvalidRequest):
    """The platform the executor runs on does not offer what the request asks for."""


class BackendError(Exception):
    """A backend failed to do what was asked; stored as the job's failure reason."""


class StorageFull(BackendError):
    """The executor's disk has no room left for what a request brings (ENOSPC, a full quota)."""


class Throttled(BackendError):
    """AWS kept answering with throttling errors after the client's own retries."""


class Overloaded(BackendError):
    """Too many requests wait for a model, or for the server's share of threads for models; retry later."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class DeadlineExceeded(BackendError):
    """Work a request started ran past its time limit; the text says how far it got."""


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
