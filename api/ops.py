"""Operations routes: /health (alive), /ready (able to take jobs), /metrics (Prometheus), request log lines."""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Iterator

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from api.access import public
from api.auth import loopback_trust_risk
from db import StoreError
from job import FINAL_STATUSES, JobStatus

logger = logging.getLogger(__name__)

blueprint = Blueprint("ops", __name__)

# Job run times span seconds (a failed staging) to a day (the default runtime limit).
DURATION_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 24 * 3600.0)
# Probes, scrapes and status polls arrive every few seconds (the Essedum backend polls getStatus for
# every job it follows): at INFO their lines would drown the ones that matter and rotate them out of
# the log within hours. An answered poll is logged at DEBUG; a refused one at INFO like any request.
QUIET_ENDPOINTS = frozenset({"ops.health", "ops.ready", "ops.metrics", "execute.get_status", "training.status"})
REGISTRY_KEY = "executor_metrics_registry"


@blueprint.get("/health")
@public
def health():
    """Say that the process is alive (no checks, no authentication)."""
    return jsonify(status="ok")


@blueprint.get("/ready")
def ready():
    """Say whether the executor can take jobs: database writable, queue running, backend reachable."""
    checks = readiness_checks(current_app.config["EXECUTOR"])
    ok = all(check["ok"] for check in checks.values())
    return jsonify(status="ready" if ok else "not ready", checks=checks), 200 if ok else 503


@blueprint.get("/metrics")
def metrics():
    """Expose jobs, queue, workers, AWS calls and job durations in the Prometheus text format."""
    registry: CollectorRegistry = current_app.extensions[REGISTRY_KEY]
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


def readiness_checks(executor: Any) -> dict[str, dict[str, Any]]:
    """Run each readiness check and return {name: {ok, reason}}."""
    checks: dict[str, dict[str, Any]] = {}
    try:
        executor.store.check_writable()
        checks["database"] = {"ok": True, "reason": None}
    except StoreError as exc:
        checks["database"] = {"ok": False, "reason": str(exc)}
    checks["queue"] = ({"ok": True, "reason": None} if executor.queue.started
                       else {"ok": False, "reason": "the queue's workers are not running"})
    if executor.store.shared:
        checks["lease"] = _lease_check(executor.queue.lease)
    for name, check in SERVICE_CHECKS.items():
        ok, reason = check(executor)
        checks[name] = {"ok": ok, "reason": reason}
    if executor.sandbox is not None:
        # EXECUTOR_SANDBOX=required never gets this far without one: auto without one is a warning.
        # Informs: why jobs run without the network asked for, or how an unisolated job could call this API.
        reason = executor.sandbox.network_missing or loopback_trust_risk(executor.config, executor.sandbox)
        checks["sandbox"] = {"ok": True, "reason": reason, "isolation": executor.sandbox.describe()}
    if executor.confinement is not None:
        # As the sandbox's: EXECUTOR_JOB_CGROUPS=required never starts without cgroups; rlimits only inform.
        confinement = executor.confinement
        checks["limits"] = {"ok": True, "reason": None if confinement.cgroups else confinement.missing,
                            "enforcement": confinement.describe()}
    try:
        backend_check = executor.platform.ready_check()
    except Exception as exc:  # a probe must answer 503 with the reason, not 500
        backend_check = (False, f"{type(exc).__name__}: {exc}")
    if backend_check is not None:
        ok, reason = backend_check
        checks["backend"] = {"ok": bool(ok), "reason": reason}
    return checks


def _lease_check(lease: Any) -> dict[str, Any]:
    """Say whether this executor holds its lease in the shared store, and until when."""
    held = lease.held
    reason = None if held else (f"the lease has not been renewed for {lease.seconds:g} s: other executors may "
                                "take over this executor's jobs" if lease.until is not None else "no lease held yet")
    return {"ok": held, "reason": reason, "executor": lease.executor, "until": lease.until}


def _workers_alive(executor: Any) -> tuple[bool, str | None]:
    if not executor.queue.started:
        return True, None
    alive, wanted = executor.queue.alive_workers(), executor.config.workers
    if alive < wanted:
        return False, f"{wanted - alive} of {wanted} worker threads are dead and could not be replaced"
    return True, None


# Checks of the service's own parts, each (executor) -> (ok, reason). A required sandbox that is
# missing stops the start (mlops/sandbox.py), so the sandbox's line in /ready only informs.
SERVICE_CHECKS: dict[str, Callable[[Any], tuple[bool, str | None]]] = {"workers": _workers_alive}


class ExecutorCollector:
    """Reads the store, the queue and the AWS call counter at scrape time."""

    def __init__(self, app: Flask):
        self.app = app

    def collect(self) -> Iterator[Metric]:
        executor = self.app.config["EXECUTOR"]
        info = GaugeMetricFamily("executor_info", "This executor: its id in the job store, its store and backend",
                                 labels=["executor", "store", "backend"])
        info.add_metric([executor.queue.lease.executor, type(executor.store).__name__, executor.config.backend], 1)
        yield info
        counts = executor.store.count_by_status()
        jobs = GaugeMetricFamily("executor_jobs", "Jobs in the store, by status", labels=["status"])
        for status, count in sorted(counts.items()):
            jobs.add_metric([status], count)
        yield jobs
        yield GaugeMetricFamily("executor_queue_depth", "Jobs waiting for a worker",
                                value=counts.get(JobStatus.WAITING.value, 0))
        yield GaugeMetricFamily("executor_workers", "Worker threads configured", value=executor.config.workers)
        yield GaugeMetricFamily("executor_workers_busy", "Worker threads running a job now",
                                value=executor.queue.busy_workers())
        snapshot = executor.clients.counter.snapshot()
        yield _counter("executor_aws_calls", "AWS API calls, each retry included", snapshot["calls"])
        yield _counter("executor_aws_throttles", "AWS answers that asked the executor to slow down",
                       snapshot["throttles"])
        yield _durations(executor.store)
        if executor.data_size is not None:
            yield GaugeMetricFamily("executor_data_folder_bytes",
                                    "Disk the data folder takes (hard links once), measured at most once a minute",
                                    value=executor.data_size.bytes())


def _counter(name: str, documentation: str, counts: dict[tuple[str, str], int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=["service", "operation"])
    for (service, operation), count in sorted(counts.items()):
        family.add_metric([service, operation], count)
    return family


def _durations(store: Any) -> HistogramMetricFamily:
    family = HistogramMetricFamily("executor_job_duration_seconds",
                                   "Run time of ended jobs (start to end), by kind and final status",
                                   labels=["kind", "status"])
    durations: dict[tuple[str, str], list[float]] = {}
    for status in sorted(FINAL_STATUSES, key=lambda item: item.value):
        for job in store.jobs_in_status(status):
            if job.started is not None and job.finished is not None:
                durations.setdefault((job.kind, status.value), []).append(job.finished - job.started)
    for (kind, status), values in sorted(durations.items()):
        buckets = [(floatToGoString(bound), sum(1 for value in values if value <= bound)) for bound in DURATION_BUCKETS]
        buckets.append(("+Inf", len(values)))
        family.add_metric([kind, status], buckets, sum_value=sum(values))
    return family


@blueprint.record_once
def _create_registry(state) -> None:
    # One registry per app, not the process-wide default: several apps in one test process
    # (or one process) must not share or clash over collectors.
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ExecutorCollector(state.app))
    state.app.extensions[REGISTRY_KEY] = registry


@blueprint.before_app_request
def _note_start() -> None:
    g.request_started = time.perf_counter()


@blueprint.after_app_request
def _log_request(response: Response) -> Response:
    elapsed_ms = (time.perf_counter() - g.get("request_started", time.perf_counter())) * 1000
    # The path only: query strings are the client's business and headers may carry the token.
    level = logging.DEBUG if request.endpoint in QUIET_ENDPOINTS and response.status_code < 400 else logging.INFO
    logger.log(level, "%s %s -> %d in %.1f ms", request.method, request.path, response.status_code, elapsed_ms)
    return response
