"""The AWS adapter: the one place that imports boto3 and botocore.

It makes the clients (region, credentials or profile, adaptive retries, timeouts, call counting),
turns AWS's errors into the project's own (not found, throttled, in use, quota, access denied),
sends files to S3 with boto3's managed transfers, pages through AWS's listings, and reads botocore's
service models. What to call and when is decided above it, by the platforms and the
seeds' training service (mlops/sagemaker/training_service.py); it imports nothing from them.
"""
from __future__ import annotations

import logging
import math
import re
import threading
from collections import Counter
from functools import lru_cache
from typing import Any, Callable, Iterator, Mapping

import boto3
import botocore.session
from boto3.s3.transfer import TransferConfig
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, ReadTimeoutError

from config import Config
from mlops.errors import (AccessDenied, BackendError, Conflict, InvalidRequest, NotFound, QuotaExceeded,
                          SageMakerError, Throttled, error_code, error_text)

logger = logging.getLogger(__name__)

NOT_FOUND_MESSAGE = re.compile(r"could not find|not found|does not exist", re.IGNORECASE)
NOT_FOUND_CODES = frozenset({"ResourceNotFound", "ResourceNotFoundException", "NoSuchEntity", "NoSuchKey",
                             "NoSuchBucket", "404", "NotFound"})
ACCESS_DENIED_CODES = frozenset({"AccessDenied", "AccessDeniedException", "403"})
IN_USE_CODES = frozenset({"ResourceInUse", "ConflictException"})
# What a failed AWS call raises: botocore's answer errors and its transport errors.
AWS_ERRORS = (ClientError, BotoCoreError)


# -- clients -------------------------------------------------------------------------------------

THROTTLING_CODES = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
    "TooManyRequestsException", "ProvisionedThroughputExceededException", "RequestLimitExceeded",
    "SlowDown", "RequestThrottled", "PriorRequestNotComplete",
})


# InvokeEndpoint is not idempotent (a retry runs the model again) and an endpoint may take up to 60 s to
# answer it (SageMaker's invocation timeout), so it is sent once and read for longer than that.
INVOKE_READ_TIMEOUT_SECONDS = 70
SERVICE_CONFIGS = {"sagemaker-runtime": BotoConfig(retries={"mode": "standard", "total_max_attempts": 1},
                                                   read_timeout=INVOKE_READ_TIMEOUT_SECONDS)}


class CallCounter:
    """Counts AWS API calls and throttling answers, by service and operation."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: Counter[tuple[str, str]] = Counter()
        self.throttles: Counter[tuple[str, str]] = Counter()

    def record_call(self, service: str, operation: str) -> None:
        with self._lock:
            self.calls[(service, operation)] += 1

    def record_throttle(self, service: str, operation: str) -> None:
        with self._lock:
            self.throttles[(service, operation)] += 1

    def snapshot(self) -> dict[str, dict[tuple[str, str], int]]:
        """Return copies of the counters."""
        with self._lock:
            return {"calls": dict(self.calls), "throttles": dict(self.throttles)}

    def total(self, service: str | None = None, operation: str | None = None) -> int:
        """Return how many calls were made, optionally of one service or operation."""
        with self._lock:
            return sum(count for (svc, op), count in self.calls.items()
                       if (service is None or svc == service) and (operation is None or op == operation))


class ClientFactory:
    """Makes and caches boto3 clients; every client counts its calls and retries adaptively.

    AWS_ENDPOINT_URL (and AWS_ENDPOINT_URL_<SERVICE>) are honoured by botocore itself, which is how
    tests point the executor at a moto server and how S3-compatible stores are reached.
    """

    def __init__(self, *, region: str | None = None, profile: str | None = None,
                 adapter_profiles: Mapping[str, str] | None = None,
                 session_factory: Callable[..., boto3.session.Session] = boto3.session.Session,
                 counter: CallCounter | None = None, max_attempts: int = 8,
                 connect_timeout: float = 10, read_timeout: float = 60):
        self.region = region
        self.profile = profile
        self.adapter_profiles = dict(adapter_profiles or {})
        self.session_factory = session_factory
        self.counter = counter or CallCounter()
        self.boto_config = BotoConfig(
            retries={"mode": "adaptive", "max_attempts": max_attempts},
            connect_timeout=connect_timeout, read_timeout=read_timeout,
            user_agent_extra="essedum-executor")
        self._clients: dict[tuple[str, str | None, str | None, float | None], Any] = {}
        self._sessions: dict[str | None, boto3.session.Session] = {}
        self._lock = threading.Lock()

    def profile_for(self, adapter_instance: str | None) -> str | None:
        """Return the profile for an Essedum adapter instance, or the default profile."""
        if adapter_instance and adapter_instance in self.adapter_profiles:
            return self.adapter_profiles[adapter_instance]
        return self.profile

    def session(self, adapter_instance: str | None = None) -> boto3.session.Session:
        """Return the (cached) boto3 session for an adapter instance."""
        profile = self.profile_for(adapter_instance)
        with self._lock:
            if profile not in self._sessions:
                kwargs: dict[str, Any] = {}
                if profile:
                    kwargs["profile_name"] = profile
                if self.region:
                    kwargs["region_name"] = self.region
                self._sessions[profile] = self.session_factory(**kwargs)
            return self._sessions[profile]

    @property
    def region_name(self) -> str | None:
        """Return the region clients use."""
        return self.region or self.session().region_name

    def client(self, service: str, adapter_instance: str | None = None, *, region: str | None = None,
               read_timeout: float | None = None) -> Any:
        """Return a cached client of an AWS service (in the executor's region unless one is named).

        With read_timeout, the client waits at most that long for an answer, and for a connection.
        """
        key = (service, self.profile_for(adapter_instance), region, read_timeout)
        with self._lock:
            client = self._clients.get(key)
        if client is None:
            config = self.boto_config.merge(SERVICE_CONFIGS[service]) if service in SERVICE_CONFIGS \
                else self.boto_config
            if read_timeout is not None:
                config = config.merge(BotoConfig(read_timeout=read_timeout,
                                                 connect_timeout=min(config.connect_timeout, read_timeout)))
            client = self.session(adapter_instance).client(service, config=config, region_name=region)
            self._count(client, service)
            with self._lock:
                client = self._clients.setdefault(key, client)
        return client

    def storage_client(self, *, endpoint_url: str | None, access_key: str, secret_key: str,
                       region: str | None = None) -> Any:
        """Return an uncached S3 client with a request's own credentials (for Essedum storage)."""
        session = self.session_factory(aws_access_key_id=access_key, aws_secret_access_key=secret_key,
                                       region_name=region or self.region or "us-east-1")
        client = session.client("s3", endpoint_url=endpoint_url, config=self.boto_config)
        self._count(client, "s3")
        return client

    def _count(self, client: Any, service: str) -> None:
        # before-send and needs-retry fire once per attempt, so retries count as the calls AWS
        # sees and rate-limits, which is what monitoring cost and throttling depend on.
        def before_send(event_name: str, **_: Any) -> None:
            self.counter.record_call(service, event_name.rsplit(".", 1)[-1])

        def needs_retry(response: Any = None, operation: Any = None, **_: Any) -> None:
            parsed = response[1] if response else None
            code = parsed.get("Error", {}).get("Code") if isinstance(parsed, Mapping) else None
            if code in THROTTLING_CODES and operation is not None:
                self.counter.record_throttle(service, operation.name)

        client.meta.events.register("before-send", before_send)
        client.meta.events.register("needs-retry", needs_retry)


def clients_for(config: Config) -> ClientFactory:
    """Return the client factory the configuration describes (region, profile, per-adapter profiles)."""
    pairs = [item.split("=", 1) for item in (config.adapter_profiles or "").split(",") if "=" in item]
    return ClientFactory(region=config.aws_region, profile=config.aws_profile,
                         adapter_profiles={key.strip(): value.strip() for key, value in pairs})


# -- errors --------------------------------------------------------------------------------------

def is_missing_credentials(exc: Exception) -> bool:
    """True when an AWS call failed because no credentials were found (none set, no profile)."""
    return isinstance(exc, NoCredentialsError)


def is_read_timeout(exc: Exception) -> bool:
    """True when an AWS call was sent and its answer did not come within the client's read timeout."""
    return isinstance(exc, ReadTimeoutError)


def is_not_found(exc: Exception) -> bool:
    """True when an AWS error says the named resource (job, object, bucket, role) does not exist."""
    code = error_code(exc)
    if code in NOT_FOUND_CODES:
        return True
    message = getattr(exc, "response", {}).get("Error", {}).get("Message", "") if code else ""
    return code == "ValidationException" and bool(NOT_FOUND_MESSAGE.search(message))


def is_throttled(exc: Exception) -> bool:
    """True when AWS asked the executor to slow down (after the client's own retries)."""
    return error_code(exc) in THROTTLING_CODES


def aws_error(exc: Exception, field: str, operation: str) -> Exception:
    """Turn an AWS error into the project's own: a refusal names the request field, anything else is a BackendError."""
    code, text = error_code(exc), error_text(exc)
    if code in ("ValidationException", "ValidationError") and "already exist" in text.lower():
        return Conflict(field, text)
    if is_not_found(exc):
        return NotFound(field, text)
    if code in ("ValidationException", "ValidationError"):
        return InvalidRequest(field, text)
    if code in IN_USE_CODES:
        return Conflict(field, text)
    if code == "ResourceLimitExceeded":
        return QuotaExceeded(field, f"{text} (an AWS quota: ask AWS for more)")
    if code in ACCESS_DENIED_CODES:
        return AccessDenied(field, f"{text} (the executor's credentials may not do {operation})")
    if is_throttled(exc):
        return Throttled(f"{operation}: AWS is throttling the executor: {text}")
    return BackendError(f"{operation} failed: {text}")


# -- paging --------------------------------------------------------------------------------------

class Pages:
    """The pages of an AWS listing, at most `limit` of them; `complete` says whether its last page was read.

    The listing ends at a page without a token, or with the token it was asked with (which would
    only answer the same page again). A failed call raises from the iteration.
    """

    def __init__(self, call: Callable[..., Mapping[str, Any]], params: Mapping[str, Any], *, limit: int,
                 token: str = "NextToken"):
        self.call = call
        self.params = dict(params)
        self.limit = limit
        self.token = token
        self.complete = False

    def __iter__(self) -> Iterator[Mapping[str, Any]]:
        params = dict(self.params)
        for _ in range(self.limit):
            page = self.call(**params)
            yield page
            token = page.get(self.token)
            if not token or token == params.get(self.token):
                self.complete = True
                return
            params[self.token] = token


# -- S3 transfers --------------------------------------------------------------------------------

MIN_PART_SIZE = 16 * 1024 * 1024
MAX_PARTS = 9000  # S3 allows 10,000; the margin absorbs a size estimate that is a little low


def transfer_config(size: int) -> TransferConfig:
    """Return a multipart configuration whose part size keeps a large object under S3's part limit."""
    part = max(MIN_PART_SIZE, math.ceil(size / MAX_PARTS))
    return TransferConfig(multipart_threshold=MIN_PART_SIZE, multipart_chunksize=part,
                          max_concurrency=8, use_threads=True)


def object_exists(s3: Any, bucket: str, key: str) -> bool:
    """True when the object exists (HEAD); an access error is raised, not read as 'missing'."""
    try:
        s3.head_object(Bucket=bucket, Key=key)
        return True
    except ClientError as exc:
        if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
            return False
        raise SageMakerError(f"cannot check s3://{bucket}/{key}: {error_text(exc)}") from exc
    except BotoCoreError as exc:
        raise SageMakerError(f"cannot check s3://{bucket}/{key}: {exc}") from exc


def upload_stream(s3: Any, stream: Any, bucket: str, key: str, size: int) -> None:
    """Send a readable stream of about `size` bytes to S3 with the managed (multipart) transfer."""
    try:
        s3.upload_fileobj(stream, bucket, key, Config=transfer_config(size))
    except AWS_ERRORS as exc:
        raise SageMakerError(f"cannot upload to s3://{bucket}/{key}: {error_text(exc)}") from exc


def delete_quietly(s3: Any, bucket: str, key: str) -> None:
    """Delete an object, logging (not raising) a failure: for clean-up after an upload that went wrong."""
    try:
        s3.delete_object(Bucket=bucket, Key=key)
    except AWS_ERRORS:
        logger.warning("could not remove the inconsistent upload s3://%s/%s", bucket, key)


# -- service models ------------------------------------------------------------------------------

@lru_cache(maxsize=None)
def service_model(service: str) -> Any:
    """Return botocore's model of an AWS service: the source of its names, enums and limits (no call)."""
    return botocore.session.get_session().get_service_model(service)
