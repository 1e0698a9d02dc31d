"""Tailing the CloudWatch logs of SageMaker training jobs into the executor's job logs.

One FilterLogEvents query over the training log group, narrowed to the executor's stream name
prefix, returns the new lines of every instance of every job: a cycle costs what the new log
volume costs, not one call per running job. Lines are merged by time across a job's instances.

CloudWatch can take a little while to make an event searchable, so each query reaches back
OVERLAP_MS before the newest line seen; the event ids inside that window are kept in the job's
details, so a line read twice is written once, and a restart loses nothing.

Logs never hold up status: a throttled read backs off on its own (the job statuses go on being
read), and any other error (AccessDenied on logs:FilterLogEvents, a network failure) is kept as
`problem` for the backend to report on the jobs and in /ready, and tried again next cycle.
"""
from __future__ import annotations

import logging
import time
from collections import defaultdict
from typing import Any, Callable, Iterable


from job import Job
from mlops.aws import AWS_ERRORS, Pages, is_not_found, is_throttled
from mlops.errors import error_text
from mlops.reporter import JobReporter
from mlops.metric_lines import parse_metric_line, progress_of

logger = logging.getLogger(__name__)

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
OVERLAP_MS = 60_000
MAX_PAGES_PER_QUERY = 50
MAX_BACKOFF_SECONDS = 300.0


def _host(stream: str) -> str:
    # Streams are named <job>/algo-<n>-<epoch seconds>.
    tail = stream.split("/", 1)[-1]
    return tail.rsplit("-", 1)[0] if tail.count("-") >= 2 else tail


class TrainingLogTail:
    """Appends new CloudWatch lines of running jobs to their logs, and reads metric lines in them."""

    def __init__(self, logs_client: Callable[[], Any], *, log_group: str = LOG_GROUP, overlap_ms: int = OVERLAP_MS,
                 clock: Callable[[], float] = time.time):
        self._logs_client = logs_client
        self.log_group = log_group
        self.overlap_ms = overlap_ms
        self.clock = clock
        self._since_ms: int | None = None
        self._backoff = 0.0
        self._resume_at = 0.0
        self.problem: str | None = None

    def tail(self, jobs: dict[str, JobReporter], stream_prefix: str) -> None:
        """Read the new lines of every job (its reporter keyed by SageMaker name) with one paged query."""
        if not jobs:
            return
        since = self._since_ms if self._since_ms is not None else min(self._cursor_ms(ctx.job)
                                                                        for ctx in jobs.values())
        read = self._read(stream_prefix, since - self.overlap_ms)
        if read is None:
            return
        events, newest, complete = read
        by_job: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for event in events:
            by_job[event["logStreamName"].split("/", 1)[0]].append(event)
        for name, job_events in by_job.items():
            if name in jobs:
                self.apply(jobs[name].job, job_events, jobs[name])
        if newest is not None:
            self._since_ms = max(since, newest) if complete else max(since, newest - self.overlap_ms)

    def tail_job(self, job: Job, ctx: JobReporter) -> None:
        """Read the new lines of one job (its last lines, before it is marked finished)."""
        read = self._read(f"{job.external_id}/", self._cursor_ms(job) - self.overlap_ms)
        if read and read[0]:
            self.apply(job, read[0], ctx)

    def _read(self, prefix: str, start_ms: int) -> tuple[list[dict[str, Any]], int | None, bool] | None:
        """Fetch, or None while backing off or after an error (kept in `problem`)."""
        now = self.clock()
        if now < self._resume_at:
            return None
        try:
            read = self._fetch(prefix, start_ms)
        except AWS_ERRORS as exc:
            if is_throttled(exc):
                self._backoff = min(max(2 * self._backoff, 1.0), MAX_BACKOFF_SECONDS)
                self._resume_at = now + self._backoff
                logger.warning("CloudWatch Logs throttled the log read (%s); next read in %.0f s",
                               error_text(exc), self._backoff)
            else:
                self.problem = f"job logs cannot be read from CloudWatch ({self.log_group}): {error_text(exc)}"
                logger.warning("%s", self.problem)
            return None
        self._backoff = 0.0
        self.problem = None
        return read

    def _cursor_ms(self, job: Job) -> int:
        cursor = job.details.get("log_cursor") or {}
        if "ts" in cursor:
            return int(cursor["ts"])
        return int((job.started or job.submitted) * 1000)

    def _fetch(self, prefix: str, start_ms: int) -> tuple[list[dict[str, Any]], int | None, bool]:
        client = self._logs_client()
        events: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"logGroupName": self.log_group, "logStreamNamePrefix": prefix,
                                  "startTime": max(0, start_ms)}
        pages = Pages(client.filter_log_events, kwargs, limit=MAX_PAGES_PER_QUERY, token="nextToken")
        try:
            for page in pages:
                events.extend(page.get("events", []))
            if not pages.complete:
                logger.warning("log query for %s stopped after %d pages; the rest comes next cycle",
                               prefix, MAX_PAGES_PER_QUERY)
                newest = max((event["timestamp"] for event in events), default=None)
                return events, newest, False
        except AWS_ERRORS as exc:
            if is_not_found(exc):
                # The group appears only when the first training job writes to it.
                return [], None, True
            raise
        return events, max((event["timestamp"] for event in events), default=None), True

    def apply(self, job: Job, events: Iterable[dict[str, Any]], ctx: JobReporter) -> int:
        """Write a job's unseen events in time order, record its metric lines; return how many were new."""
        cursor = job.details.get("log_cursor") or {}
        cursor_ts = int(cursor.get("ts", 0))
        floor = cursor_ts - self.overlap_ms
        seen = {event_id: ts for event_id, ts in cursor.get("seen", [])}
        new = sorted((event for event in events
                      if event["timestamp"] >= floor and event["eventId"] not in seen),
                     key=lambda event: (event["timestamp"], event["logStreamName"], event["eventId"]))
        if not new:
            return 0
        multi_instance = int(job.details.get("instance_count") or 1) > 1
        last_epoch = int(job.details.get("last_metric_epoch", 0))
        progress = None
        streams: dict[str, int] = {}
        for event in new:
            message = event["message"].rstrip("\r\n")
            ctx.log(f"[{_host(event['logStreamName'])}] {message}" if multi_instance else message)
            seen[event["eventId"]] = event["timestamp"]
            streams[event["logStreamName"]] = event["timestamp"]
            parsed = parse_metric_line(message)
            # Every instance of a distributed job may print the same epoch: record it once.
            if parsed and parsed[0] > last_epoch:
                epoch, epochs, metrics = parsed
                ctx.add_metrics(metrics, step=epoch, when=event["timestamp"] / 1000)
                last_epoch, progress = epoch, progress_of(epoch, epochs)
        newest = max(cursor_ts, max(streams.values()))
        keep = [[event_id, ts] for event_id, ts in seen.items() if ts >= newest - self.overlap_ms]
        ctx.merge_details(log_cursor={"ts": newest, "seen": keep}, log_streams=streams,
                          last_metric_epoch=last_epoch)
        if progress is not None:
            ctx.set_progress(**progress)
        return len(new)
