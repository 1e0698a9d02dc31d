"""Which followed SageMaker jobs a monitor cycle must describe, found with a bounded list scan.

ListTrainingJobs (and ListAutoMLJobs) choose a page by CreationTime first and filter it afterwards,
so the only parameter that narrows what AWS scans is CreationTimeAfter; LastModifiedTimeAfter or
NameContains alone page through the account's whole history (aws/aws-cli#7596, boto/boto3#3347).
A cycle therefore lists from the oldest followed job's creation, newest first, reads at most
MAX_LIST_PAGES pages, and compares each followed job's LastModifiedTime with the one it last
applied. What the list cannot vouch for is described one by one: jobs never described yet, jobs
the scan did not reach (the page cap, a throttled page, a job the list does not show yet), jobs
flagged by a stop, and jobs not described for RESYNC_SECONDS. A throttled list never stops the
cycle: its jobs are described instead, at most MAX_UNVOUCHED_DESCRIBES a cycle, the longest
unconfirmed first.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from job import Job
from mlops.aws import AWS_ERRORS, Pages, is_throttled
from mlops.errors import error_text

logger = logging.getLogger(__name__)

# CreationTimeAfter is exclusive and AWS's times are rounded to the millisecond; a minute more admits
# only the jobs created in that minute.
CREATION_MARGIN_SECONDS = 60.0
PAGE_SIZE = 100
MAX_LIST_PAGES = 20
MAX_UNVOUCHED_DESCRIBES = 50
RESYNC_SECONDS = 1800.0
RESYNC_PER_CYCLE = 5


@dataclass(frozen=True)
class Feed:
    """A SageMaker list operation over one job family."""

    operation: str
    summaries: str
    name_key: str


TRAINING_FEED = Feed("list_training_jobs", "TrainingJobSummaries", "TrainingJobName")
AUTOML_FEED = Feed("list_auto_ml_jobs", "AutoMLJobSummaries", "AutoMLJobName")


@dataclass
class Scan:
    """What one bounded list scan saw: the followed jobs it found changed, and the ones it vouched for."""

    changed: list[str]
    vouched: set[str]
    complete: bool


def _seen(job: Job) -> bool:
    return "last_modified" in job.details


def _confirmed_at(job: Job) -> float:
    return float(job.details.get("described_at", 0.0))


class JobFeed:
    """Chooses, each cycle, the followed jobs of one family to describe."""

    def __init__(self, sagemaker: Callable[[], Any], clock: Callable[[], float], name_prefix: str):
        self._sagemaker = sagemaker
        self.clock = clock
        self.name_prefix = name_prefix

    def to_describe(self, feed: Feed, by_name: dict[str, Job]) -> list[str]:
        """Return the names to describe this cycle, most urgent first."""
        known = {name: job for name, job in by_name.items() if _seen(job)}
        scan = self.scan(feed, known) if known else Scan([], set(), True)
        never = [name for name, job in by_name.items() if not _seen(job)]
        flagged = [name for name, job in by_name.items() if job.details.get("describe_next")]
        unvouched = sorted((name for name in known if name not in scan.vouched),
                           key=lambda name: _confirmed_at(known[name]))[:MAX_UNVOUCHED_DESCRIBES]
        now = self.clock()
        stale = sorted((name for name, job in known.items() if now - _confirmed_at(job) > RESYNC_SECONDS),
                       key=lambda name: _confirmed_at(known[name]))[:RESYNC_PER_CYCLE]
        return list(dict.fromkeys([*scan.changed, *flagged, *never, *unvouched, *stale]))

    def scan(self, feed: Feed, known: dict[str, Job]) -> Scan:
        """List the family from the oldest known job's creation on, within the page cap."""
        oldest = min(float(job.details.get("created_at", job.submitted)) for job in known.values())
        params: dict[str, Any] = {
            "CreationTimeAfter": datetime.fromtimestamp(oldest - CREATION_MARGIN_SECONDS, tz=timezone.utc),
            "SortBy": "CreationTime", "SortOrder": "Descending", "MaxResults": PAGE_SIZE}
        # User-named AutoML jobs need not carry the prefix; the filter only trims the answers.
        if all(name.startswith(self.name_prefix) for name in known):
            params["NameContains"] = self.name_prefix
        scan = Scan([], set(), False)
        pages = Pages(getattr(self._sagemaker(), feed.operation), params, limit=MAX_LIST_PAGES)
        try:
            for page in pages:
                for summary in page.get(feed.summaries, []):
                    job = known.get(summary[feed.name_key])
                    if job is None:
                        continue
                    scan.vouched.add(summary[feed.name_key])
                    if summary["LastModifiedTime"].timestamp() > float(job.details["last_modified"]):
                        scan.changed.append(summary[feed.name_key])
            if pages.complete:
                scan.complete = True
                return scan
            logger.warning("%s: stopped after %d pages; the jobs not reached are described one by one",
                           feed.operation, MAX_LIST_PAGES)
        except AWS_ERRORS as exc:
            if not is_throttled(exc):
                raise
            logger.warning("%s throttled (%s); the jobs it did not vouch for are described one by one",
                           feed.operation, error_text(exc))
        return scan
