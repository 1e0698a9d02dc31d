"""The one place boto3 clients are made: region, credentials or profile, retries, timeouts, counting."""
from __future__ import annotations

import logging
import threading
from collections import Counter
from typing import Any, Callable, Mapping

import boto3
from botocore.config import Config as BotoConfig

logger = logging.getLogger(__name__)

THROTTLING_CODES = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
    "TooManyRequestsException", "ProvisionedThroughputExceededException", "RequestLimitExceeded",
    "SlowDown", "RequestThrottled", "PriorRequestNotComplete",
})


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
        self._clients: dict[tuple[str, str | None], Any] = {}
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

    def client(self, service: str, adapter_instance: str | None = None) -> Any:
        """Return a cached client of an AWS service."""
        key = (service, self.profile_for(adapter_instance))
        with self._lock:
            client = self._clients.get(key)
        if client is None:
            client = self.session(adapter_instance).client(service, config=self.boto_config)
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
