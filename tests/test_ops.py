"""Health, readiness, Prometheus metrics, and the service's logs (request ids, one log per job, no secrets)."""
from __future__ import annotations

import logging
import uuid
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import pipeline_body, wait_for, write_pipeline
from db import StoreUnavailable
from job import JobStatus
from helpers_service import AUTH, METRIC_SCRIPT, TOKEN


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Parse Prometheus text into {(sample name, sorted labels): value}."""
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


@pytest.fixture
def secured(make_app):
    return make_app(api_token=TOKEN)


def test_health_answers_without_a_token(secured):
    response = secured.test_client().get("/health")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_ready_and_metrics_require_the_token(secured):
    client = secured.test_client()
    assert client.get("/ready").status_code == 401
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers=AUTH).status_code == 200


def test_ready_is_503_until_the_queue_runs(app):
    client = app.test_client()
    response = client.get("/ready")
    assert response.status_code == 503
    assert response.get_json()["checks"]["queue"] == {"ok": False, "reason": "the queue's workers are not running"}

    app.config["EXECUTOR"].queue.start()
    response = client.get("/ready")
    assert response.status_code == 200
    checks = response.get_json()["checks"]
    assert response.get_json()["status"] == "ready"
    assert checks["database"] == checks["queue"] == checks["workers"] == {"ok": True, "reason": None}
    # Ready either way; the check says how user code is isolated here (a warning when it is not).
    sandbox = app.config["EXECUTOR"].sandbox
    assert checks["sandbox"] == {"ok": True, "reason": None, "isolation": sandbox.describe()}
    expected = "user code runs in bubblewrap" if sandbox.isolating else "user code is NOT isolated"
    assert checks["sandbox"]["isolation"].startswith(expected)


def test_ready_is_503_when_the_database_cannot_be_written(app, monkeypatch):
    executor = app.config["EXECUTOR"]
    executor.queue.start()

    def full_disk() -> None:
        raise StoreUnavailable("job database cannot be written: database or disk is full")

    monkeypatch.setattr(executor.store, "check_writable", full_disk)
    response = app.test_client().get("/ready")
    assert response.status_code == 503
    assert response.get_json()["checks"]["database"] == {
        "ok": False, "reason": "job database cannot be written: database or disk is full"}


def test_ready_asks_the_backend_when_it_has_a_check(app):
    executor = app.config["EXECUTOR"]
    executor.queue.start()
    executor.platform.ready_check = lambda: (False, "AWS unreachable: could not connect to sts")
    response = app.test_client().get("/ready")
    assert response.status_code == 503
    assert response.get_json()["checks"]["backend"] == {"ok": False,
                                                        "reason": "AWS unreachable: could not connect to sts"}


def test_ready_reports_a_backend_check_that_raises(app):
    executor = app.config["EXECUTOR"]
    executor.queue.start()

    def unreachable():
        raise ConnectionError("connect timeout on sts.us-east-1.amazonaws.com")

    executor.platform.ready_check = unreachable
    response = app.test_client().get("/ready")
    assert response.status_code == 503
    assert response.get_json()["checks"]["backend"]["reason"] == (
        "ConnectionError: connect timeout on sts.us-east-1.amazonaws.com")


def test_metrics_report_jobs_queue_workers_aws_calls_and_durations(app):
    executor = app.config["EXECUTOR"]
    store = executor.store
    now = [1000.0]
    store.clock = lambda: now[0]
    for number in range(3):
        store.create_job(f"job-{number}", kind="pipeline", backend="local", request={}, secrets=None,
                         log_path="job.log", output_dir=".")
    store.claim_next()
    now[0] += 42.0
    store.transition("job-0", JobStatus.COMPLETED)
    store.claim_next()
    executor.clients.counter.record_call("sagemaker", "DescribeTrainingJob")
    executor.clients.counter.record_call("sagemaker", "DescribeTrainingJob")
    executor.clients.counter.record_throttle("sagemaker", "DescribeTrainingJob")

    response = app.test_client().get("/metrics")

    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    values = samples(response.get_data(as_text=True))
    assert values[("executor_jobs", (("status", "COMPLETED"),))] == 1
    assert values[("executor_jobs", (("status", "RUNNING"),))] == 1
    assert values[("executor_jobs", (("status", "WAITING"),))] == 1
    assert values[("executor_queue_depth", ())] == 1
    assert values[("executor_workers", ())] == 2
    assert values[("executor_workers_busy", ())] == 0
    call = (("operation", "DescribeTrainingJob"), ("service", "sagemaker"))
    assert values[("executor_aws_calls_total", call)] == 2
    assert values[("executor_aws_throttles_total", call)] == 1
    done = (("kind", "pipeline"), ("status", "COMPLETED"))
    assert values[("executor_job_duration_seconds_count", done)] == 1
    assert values[("executor_job_duration_seconds_sum", done)] == 42.0
    assert values[("executor_job_duration_seconds_bucket", (*done[:1], ("le", "15.0"), done[1]))] == 0
    assert values[("executor_job_duration_seconds_bucket", (*done[:1], ("le", "60.0"), done[1]))] == 1


def test_two_apps_in_one_process_keep_their_own_metrics(make_app, tmp_path):
    first = make_app()
    second = make_app(data_dir=str(tmp_path / "other"))
    first.config["EXECUTOR"].store.create_job("only-in-first", kind="pipeline", backend="local", request={},
                                              secrets=None, log_path="job.log", output_dir=".")
    first_values = samples(first.test_client().get("/metrics").get_data(as_text=True))
    second_values = samples(second.test_client().get("/metrics").get_data(as_text=True))
    assert first_values[("executor_queue_depth", ())] == 1
    assert second_values[("executor_queue_depth", ())] == 0


def test_service_logs_carry_request_ids_one_log_per_job_and_no_secrets(service, data_dir: Path):
    write_pipeline(data_dir / "storage", "demo", METRIC_SCRIPT, name="run.py")
    server = service(data_dir, env={"EXECUTOR_API_TOKEN": TOKEN})
    body = pipeline_body("demo", "python run.py 2")
    status, submitted = server.request("POST", "/execute", body, headers={**AUTH, "X-Request-ID": "req42abc"})
    assert status == 201
    path = f"/execute/{submitted['task_id']}/getStatus"
    final = wait_for(lambda: (lambda body: body if body["task_status"] in ("COMPLETED", "ERROR") else None)(
        server.request("GET", path, headers=AUTH)[1]))
    assert final["task_status"] == "COMPLETED"
    status, _ = server.request("GET", "/execute", headers={**AUTH, "X-Request-ID": "req43def"})
    assert status == 200
    missing = f"/execute/{uuid.uuid4()}/getStatus"
    assert server.request("GET", missing, headers={**AUTH, "X-Request-ID": "req44ghi"})[0] == 404
    assert server.terminate() == 0

    service_log = (data_dir / "logs" / "executor.log").read_text(encoding="utf-8")
    request_lines = [line for line in service_log.splitlines() if "[req42abc]" in line]
    assert any("POST /execute -> 201" in line for line in request_lines)
    assert any("[req43def]" in line and "GET /execute -> 200" in line for line in service_log.splitlines())
    # Answered status polls are logged at DEBUG like probes (a line each would rotate the rest away);
    # a refused one is logged like any request.
    assert f"GET {path} -> 200" not in service_log
    assert any("[req44ghi]" in line and f"GET {missing} -> 404" in line for line in service_log.splitlines())
    job_log = data_dir / "logs" / "jobs" / f"{submitted['task_id']}.log"
    assert "epoch=2/2" in job_log.read_text(encoding="utf-8")
    secret = body["credentials"]["secret_key"]
    for path in [*(data_dir / "logs").glob("executor.log*"), job_log, *data_dir.glob("executor.sqlite3*")]:
        content = path.read_bytes()
        assert secret.encode() not in content, path
        assert TOKEN.encode() not in content, path


def test_waitress_queue_warnings_are_logged_once_a_minute_saying_how_many_were_held(tmp_path: Path):
    # waitress logs "Task queue depth is N" for every request that finds its threads busy.
    from app import configure_logging
    from config import load_config

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    switches = logging._srcfile, logging.logProcesses, logging.logMultiprocessing
    queue_logger = logging.getLogger("waitress.queue")
    try:
        configure_logging(load_config(overrides={"data_dir": str(tmp_path)}))
        configure_logging(load_config(overrides={"data_dir": str(tmp_path)}))  # a second call adds no filter
        for created in (1000.0, 1001.0, 1030.0, 1061.0, 1062.0):
            record = queue_logger.makeRecord(queue_logger.name, logging.WARNING, __file__, 0,
                                             "Task queue depth is %d", (3,), None)
            record.created = created
            queue_logger.handle(record)
        for handler in root.handlers:
            handler.flush()
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)
        logging._srcfile, logging.logProcesses, logging.logMultiprocessing = switches
        queue_logger.filters.clear()
    lines = [line for line in (tmp_path / "logs" / "executor.log").read_text().splitlines()
             if "Task queue depth is 3" in line]
    assert len(lines) == 2, lines
    assert "held back" not in lines[0] and "(2 more held back since the last one shown)" in lines[1]
