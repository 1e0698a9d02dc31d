"""ListTrainingJobs and ListAutoMLJobs answered the way AWS answers them, over moto's jobs and others.

AWS chooses a page first and filters it afterwards: it takes MaxResults jobs in CreationTime order
(newest first unless SortOrder says otherwise), among those CreationTimeAfter/CreationTimeBefore
admit, and only then applies StatusEquals, NameContains and LastModifiedTime*; a filtered page can
be short or empty and still carry a NextToken. Sources: botocore's documentation of StatusEquals
("the service first retrieves ... then filters"), aws/aws-cli#7596 and aws/aws-sdk#486
(LastModifiedTimeAfter pages through the whole history), boto/boto3#3347 (empty pages with a
NextToken). moto filters first and answers in one page, so a monitor tested only against moto
cannot show what a real account costs.

The fake answers through botocore's before-call event, so botocore still builds, signs-for and
checks the request, and moto still answers every other call (Describe*, logs). `calls` counts the
list calls; `throttle_next` makes the next N of them answer ThrottlingException.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from types import SimpleNamespace
from typing import Any, Callable

MAX_PAGE = 100


@dataclass(frozen=True)
class Family:
    """What differs between the listed job families."""

    operation: str
    summaries: str
    name_key: str
    status_key: str
    moto_jobs: str
    moto_status: str


TRAINING = Family("ListTrainingJobs", "TrainingJobSummaries", "TrainingJobName", "TrainingJobStatus",
                  "training_jobs", "training_job_status")
AUTOML = Family("ListAutoMLJobs", "AutoMLJobSummaries", "AutoMLJobName", "AutoMLJobStatus",
                "auto_ml_jobs", "auto_ml_job_status")


def _utc(value: datetime) -> datetime:
    # AWS's JSON answers carry times to the millisecond, in the list and in Describe* alike.
    value = value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def _when(value: Any) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(float(value), tz=timezone.utc)


class StrictJobList:
    """Answers one family's list operation like AWS: select a page by CreationTime, then filter it."""

    def __init__(self, family: Family, moto_backend: Callable[[], Any],
                 others: list[dict[str, Any]] | None = None):
        self.family = family
        self._moto_backend = moto_backend
        self.others = others or []
        self.calls = 0
        self.throttle_next = 0

    def install(self, client: Any) -> "StrictJobList":
        """Answer this family's list calls of a botocore client from now on."""
        client.meta.events.register(f"before-call.sagemaker.{self.family.operation}", self.answer)
        return self

    def summaries(self) -> list[dict[str, Any]]:
        """Return every job of the account as the list operation describes it: moto's and the others."""
        family = self.family
        own = [{family.name_key: name, family.status_key: getattr(job, family.moto_status),
                "CreationTime": _utc(job.creation_time), "LastModifiedTime": _utc(job.last_modified_time)}
               for name, job in getattr(self._moto_backend(), family.moto_jobs).items()]
        return own + self.others

    def answer(self, model: Any, params: dict[str, Any], **_: Any) -> tuple[Any, dict[str, Any]]:
        """botocore before-call handler: return (http, parsed) as AWS would have answered."""
        self.calls += 1
        if self.throttle_next:
            self.throttle_next -= 1
            return SimpleNamespace(status_code=400, headers={}), {
                "Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"},
                "ResponseMetadata": {"HTTPStatusCode": 400, "HTTPHeaders": {}, "RetryAttempts": 0}}
        request = json.loads(params["body"] or b"{}")
        return SimpleNamespace(status_code=200, headers={}), self._page(request)

    def _page(self, request: dict[str, Any]) -> dict[str, Any]:
        family = self.family
        after, before = _when(request.get("CreationTimeAfter")), _when(request.get("CreationTimeBefore"))
        scanned = sorted((job for job in self.summaries()
                          if (after is None or job["CreationTime"] > after)
                          and (before is None or job["CreationTime"] < before)),
                         key=lambda job: (job["CreationTime"], job[family.name_key]),
                         reverse=request.get("SortOrder", "Descending") == "Descending")
        start = int(request.get("NextToken") or 0)
        size = min(int(request.get("MaxResults") or MAX_PAGE), MAX_PAGE)
        page = scanned[start:start + size]
        modified_after = _when(request.get("LastModifiedTimeAfter"))
        modified_before = _when(request.get("LastModifiedTimeBefore"))
        kept = [dict(job) for job in page
                if (request.get("StatusEquals") in (None, job[family.status_key]))
                and request.get("NameContains", "").lower() in job[family.name_key].lower()
                and (modified_after is None or job["LastModifiedTime"] > modified_after)
                and (modified_before is None or job["LastModifiedTime"] < modified_before)]
        answer: dict[str, Any] = {family.summaries: kept,
                                  "ResponseMetadata": {"HTTPStatusCode": 200, "HTTPHeaders": {}, "RetryAttempts": 0}}
        if start + size < len(scanned):
            answer["NextToken"] = str(start + size)
        return answer


def finished_jobs_of_others(family: Family, count: int, newest: datetime, spacing_s: float = 240.0
                            ) -> list[dict[str, Any]]:
    """Return `count` finished jobs of other users, the newest created at `newest`, one every spacing_s before."""
    jobs = []
    for index in range(count):
        created = _utc(datetime.fromtimestamp(newest.timestamp() - index * spacing_s, tz=timezone.utc))
        jobs.append({family.name_key: f"other-team-job-{index:05d}", family.status_key: "Completed",
                     "CreationTime": created,
                     "LastModifiedTime": datetime.fromtimestamp(min(created.timestamp() + 3600, newest.timestamp()),
                                                                tz=timezone.utc)})
    return jobs
