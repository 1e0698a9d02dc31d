"""The jobs dashboard: two HTML pages that hold no data, and the JSON they (and the CLI) read with the token.

The pages and their assets are public so that a browser can load them; every job fact comes from
/api/jobs, which needs the bearer token like any other data route. The pages' script sends it
(see static/auth.js) and renders with textContent only, so a job name or log line is never markup.
"""
from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from flask import Blueprint, abort, jsonify, redirect, request, send_from_directory, url_for

from api.access import public
from api.docs import documented
from api.downloads import file_rows
from api.execute import read_log_tail
from api.pages import page
from api.tuning import trials_of
from api.views import executor, find_job, format_time, job_status
from job import JOB_KINDS, PIPELINE, TRAINING, Job, JobStatus
from mlops.errors import MalformedRequest
from mlops.job_outputs import list_outputs
from mlops.job_requests import request_to_show

blueprint = Blueprint("dashboard", __name__, template_folder="templates")

STATIC_DIR = Path(__file__).parent / "static"
LOG_TAIL_BYTES = 64 << 10
MAX_PAGE = 500


def elapsed(job: Job, now: float) -> float | None:
    """Return the seconds the job has run: until now while it runs, until its end once it ended.

    A job run more than once (a stop or restart of the executor in between) ran only while RUNNING:
    the time it waited for the executor to come back is not counted. After a crash, the executor
    cannot know when the job's run ended, and counts up to its own restart.
    """
    if job.started is None:
        return None
    end = job.finished if job.finished is not None else now
    if job.attempts <= 1:
        return round(end - job.started, 3)
    seconds, running_since = 0.0, None
    for event in executor().store.events(job.id):
        if event["status"] == JobStatus.RUNNING.value:
            running_since = event["time"] if running_since is None else running_since
        elif running_since is not None:
            seconds += event["time"] - running_since
            running_since = None
    if running_since is not None:
        seconds += end - running_since
    return round(seconds, 3)


# What a person compares runs by; secrets are never part of a request.
REQUEST_FIELDS = {
    TRAINING: ("dataset", "hyperparameters", "instance_type", "instance_count", "spot", "max_runtime_seconds",
               "entry_point"),
    PIPELINE: ("input_artifacts", "command", "storage", "project_id", "version", "configs", "environment_keys"),
}


def request_view(job: Job) -> dict[str, Any]:
    """Return the parts of a job's request that describe the run (hyperparameters, dataset, instance)."""
    # Read from the stored form, not the typed request: the page shows what is stored, keys of any release.
    fields = REQUEST_FIELDS.get(job.kind)
    if fields is None:
        return {key: value for key, value in job.request.items() if not isinstance(value, (dict, list))}
    view = {key: job.request.get(key) for key in fields if job.request.get(key) not in (None, "", [], {})}
    if job.kind == TRAINING and not view.get("instance_type"):
        view["instance_type"] = executor().platform.default_instance_type
    return view


def eta_seconds(job: Job, history: list[dict[str, Any]], now: float) -> float | None:
    """Estimate the seconds left of a running job from the time its epochs took so far."""
    epoch, epochs = job.progress.get("epoch"), job.progress.get("epochs")
    if job.status is not JobStatus.RUNNING or not epoch or not epochs:
        return None
    first_seen: dict[int, float] = {}
    for point in history:
        if point["step"] is not None:
            first_seen.setdefault(point["step"], point["time"])
    steps = sorted(first_seen)
    # Only consecutive epochs of this run count: a resumed run starts again after a gap.
    gaps = [first_seen[b] - first_seen[a] for a, b in zip(steps, steps[1:]) if b == a + 1]
    if not gaps:
        return None
    gaps.sort()
    per_epoch = gaps[len(gaps) // 2]
    since_last = max(0.0, now - first_seen[steps[-1]])
    return round(max(0.0, (epochs - epoch) * per_epoch - since_last), 1)


def overview(job: Job, now: float) -> dict[str, Any]:
    """Return one row of the jobs list."""
    zone = executor().config.timezone
    return {
        "id": job.id, "name": request_to_show(job.kind, job.request).name, "kind": job.kind, "backend": job.backend,
        "status": job.status.value, "phase": job.phase,
        "percent": 100.0 if job.status is JobStatus.COMPLETED else job.progress.get("percent"),
        "epoch": job.progress.get("epoch"), "epochs": job.progress.get("epochs"),
        "submitted": format_time(job.submitted, zone), "started": format_time(job.started, zone),
        "finished": format_time(job.finished, zone), "elapsed_seconds": elapsed(job, now),
        "cost_usd": job.details.get("estimated_cost_usd"), "failure_reason": job.failure_reason,
        "executor": job.owner,
    }


def _choice(name: str, allowed: tuple[str, ...]) -> str | None:
    value = request.args.get(name) or None
    if value is not None and value not in allowed:
        raise MalformedRequest(name, f"must be one of {', '.join(allowed)}")
    return value


def _bounded_int(name: str, default: int, low: int, high: int) -> int:
    try:
        value = int(request.args.get(name, default))
    except ValueError:
        raise MalformedRequest(name, "must be an integer") from None
    if not low <= value <= high:
        raise MalformedRequest(name, f"must be between {low} and {high}")
    return value


STATUSES = tuple(status.value for status in JobStatus)
LIST_QUERY = {"status": {"type": "string", "enum": list(STATUSES)}, "kind": {"type": "string", "enum": list(JOB_KINDS)},
              "name": {"type": "string", "description": "part of the job's name (any case)"},
              "from": {"type": "string", "description": "submitted on or after this day (YYYY-MM-DD, UTC), or "
                                                        "within this many days back from now"},
              "to": {"type": "string", "description": "submitted on or before this day (YYYY-MM-DD, UTC), or "
                                                      "this many days back from now or earlier"},
              "limit": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 100},
              "offset": {"type": "integer", "minimum": 0, "default": 0},
              "parent": {"type": "string", "description": "a tuning's id: list its trials, first trial first"}}


@blueprint.get("/api/jobs")
@documented(query=LIST_QUERY)
def list_jobs():
    """List jobs newest first with status, phase, progress, elapsed time and cost."""
    status, kind = _choice("status", STATUSES), _choice("kind", JOB_KINDS)
    limit, offset = _bounded_int("limit", 100, 1, MAX_PAGE), _bounded_int("offset", 0, 0, 10 ** 9)
    name = request.args.get("name", "").strip()[:255] or None
    start, end = _since("from", now := time.time()), _since("to", now)
    store = executor().store
    if request.args.get("parent"):
        jobs = trials_of(find_job(request.args["parent"], "parent"))[offset:offset + limit]
    else:
        jobs = store.list_jobs(limit=limit, offset=offset, status=status, kind=kind, name_contains=name,
                               submitted_from=start[0] if start else None, submitted_to=end[1] if end else None)
    metrics = store.latest_metrics_of([job.id for job in jobs])
    rows = [{**overview(job, now), "metrics": metrics[job.id]} for job in jobs]
    data_size = executor().data_size
    return jsonify(jobs=rows, counts=store.count_by_status(), statuses=list(STATUSES), kinds=list(JOB_KINDS),
                   data_folder_bytes=data_size.bytes() if data_size is not None else None)


DAY_SECONDS = 86400


def _since(name: str, now: float) -> tuple[float, float] | None:
    """Read a day query parameter as the span it names: a YYYY-MM-DD day (UTC), or N days back from now."""
    value = request.args.get(name) or None
    if value is None:
        return None
    if value.isdigit():
        moment = now - int(value[:6]) * DAY_SECONDS
        return moment, moment
    try:
        start = datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        raise MalformedRequest(name, "must be a day as YYYY-MM-DD, or a number of days back from now") from None
    return start, start + DAY_SECONDS


@blueprint.get("/api/jobs/<job_id>")
def job_detail(job_id: str):
    """Return one job with its metric history, events and the tail of its log."""
    job = find_job(job_id)
    store = executor().store
    detail = job_status(job, store, executor().config.timezone)
    detail.update(overview(job, time.time()))
    detail["metric_history"] = history = store.metric_history(job.id)
    detail["eta_seconds"] = eta_seconds(job, history, time.time())
    detail["request"] = request_view(job)
    files = list_outputs(Path(job.output_dir))
    detail["files"], detail["files_truncated"] = file_rows(files), files.truncated
    detail["events"] = [{**event, "time": format_time(event["time"], executor().config.timezone)}
                        for event in store.events(job.id)]
    detail["log_tail"] = read_log_tail(job, LOG_TAIL_BYTES)
    return jsonify(detail)


@blueprint.get("/execute/jobs")
@public
def jobs_page():
    """Show the jobs dashboard (the page holds no data; its script reads /api/jobs with the token)."""
    return page("jobs.html")


@blueprint.get("/")
@public
def home():
    """Send a browser to the jobs dashboard."""
    return redirect(url_for("dashboard.jobs_page"))


@blueprint.get("/execute/jobs/compare")
@public
def compare_page():
    """Compare jobs: their metric curves overlaid and a table of final metrics and hyperparameters."""
    return page("compare.html")


@blueprint.get("/execute/jobs/<job_id>/tuning")
@public
def tuning_page(job_id: str):
    """Show a tuning: its trials, the objective by trial with the best so far, and against each hyperparameter."""
    return page("tuning.html", job_id=job_id)


@blueprint.get("/execute/jobs/<job_id>")
@public
def job_page(job_id: str):
    """Show one job: progress, loss and accuracy charts, events and the live log tail."""
    return page("job.html", job_id=job_id)


@blueprint.get("/assets/<name>")
@public
def asset(name: str):
    """Serve one of the pages' scripts or style sheets."""
    if name.startswith(".") or not (STATIC_DIR / name).is_file():
        abort(404)
    return send_from_directory(STATIC_DIR, name, max_age=300)
