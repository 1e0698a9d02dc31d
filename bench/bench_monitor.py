"""Monitor cost: AWS calls per monitor cycle in an account that holds 10,000 jobs of other users.

    python bench/bench_monitor.py [--counts 3,100,1000] [--others 10000]

The executor's cycle (SageMakerPlatform.follow) follows 3, 100 and 1,000 running training jobs in
an account that also holds 10,000 finished jobs of other users, created one every four minutes
over the 28 days before. ListTrainingJobs is answered as AWS answers it (tests/strict_job_list.py:
a page is chosen by CreationTime and filtered afterwards); moto answers everything else. Calls are
counted at botocore's provide-client-params event, once per API call.

Rows: the first cycle (every job described once), an unchanged cycle, a cycle after 5 jobs changed,
and a cycle whose first list call is throttled (how many jobs that cycle still brought up to date).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from common import header, median, table

from strict_job_list import TRAINING, StrictJobList, finished_jobs_of_others

REGION = "us-east-1"
ACCOUNT = "123456789012"
BUCKET = "essedum-bench"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/EssedumTrainingRole"
IMAGE = f"763104351884.dkr.ecr.{REGION}.amazonaws.com/pytorch-training:2.5-gpu-py311"
LOG_GROUP = "/aws/sagemaker/TrainingJobs"
CHANGED = 5


def _moto_backend() -> Any:
    from moto.sagemaker.models import sagemaker_backends

    return sagemaker_backends[ACCOUNT][REGION]


def _set_state(name: str, status: str, secondary: str) -> None:
    job = _moto_backend().training_jobs[name]
    job.training_job_status, job.secondary_status = status, secondary
    job.last_modified_time = datetime.now(timezone.utc).replace(tzinfo=None)


class CallTally:
    """Counts API calls of the clients it is attached to, by operation, once per call (retries aside)."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    def attach(self, client: Any) -> None:
        client.meta.events.register("provide-client-params", self._count)

    def _count(self, model: Any, **_: Any) -> None:
        self.calls[model.name] += 1

    def during(self, action: Callable[[], None]) -> tuple[int, Counter[str], float]:
        """Run action; return its call count, its calls by operation and its seconds."""
        before = Counter(self.calls)
        began = time.perf_counter()
        action()
        seconds = time.perf_counter() - began
        spent = self.calls - before
        return sum(spent.values()), spent, seconds


def measure(count: int, others: int, tmp: Path) -> dict[str, Any]:
    from config import load_config
    from db import SQLiteStore
    from job import JobStatus
    from mlops.sagemaker.training_service import training_job_name
    from mlops.aws import ClientFactory
    from mlops.records import RecordBook
    from mlops.reporter import JobReporter
    from mlops.sagemaker.platform import SageMakerPlatform

    data = tmp / f"data-{count}"
    config = load_config(environ={}, overrides={
        "data_dir": str(data), "backend": "sagemaker", "aws_region": REGION, "s3_bucket": BUCKET,
        "sagemaker_role_arn": ROLE_ARN, "training_image": IMAGE, "monitor_interval": "0"})
    clients = ClientFactory(region=REGION)
    store = SQLiteStore(data / "executor.sqlite3")
    platform = SageMakerPlatform(config, RecordBook(store), clients)
    sagemaker, logs = clients.client("sagemaker"), clients.client("logs")
    tally = CallTally()
    for client in (sagemaker, logs):
        tally.attach(client)
    listing = StrictJobList(TRAINING, _moto_backend, finished_jobs_of_others(
        TRAINING, others, newest=datetime.fromtimestamp(time.time() - 3600, tz=timezone.utc))).install(sagemaker)
    names = []
    for _ in range(count):
        job_id = str(uuid.uuid4())
        store.create_job(job_id, kind="training", backend="sagemaker", request={"name": "bulk"}, secrets=None,
                         log_path=str(data / "jobs" / job_id / "job.log"), output_dir=str(data / "jobs" / job_id))
        store.claim_next(["sagemaker"])
        name = training_job_name(job_id, "bulk")
        sagemaker.create_training_job(
            TrainingJobName=name, RoleArn=ROLE_ARN,
            AlgorithmSpecification={"TrainingImage": IMAGE, "TrainingInputMode": "File"},
            OutputDataConfig={"S3OutputPath": f"s3://{BUCKET}/o"}, StoppingCondition={"MaxRuntimeInSeconds": 3600},
            ResourceConfig={"InstanceType": "ml.g5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30})
        _set_state(name, "InProgress", "Training")
        store.update(job_id, external_id=name)
        names.append(name)
    logs.create_log_group(logGroupName=LOG_GROUP)
    logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=f"{names[0]}/algo-1-1700000000")
    logs.put_log_events(logGroupName=LOG_GROUP, logStreamName=f"{names[0]}/algo-1-1700000000",
                        logEvents=[{"timestamp": int(time.time() * 1000), "message": "epoch=1/3 train_loss=0.5"}])

    def cycle() -> None:
        running = [job for job in store.jobs_in_status(JobStatus.RUNNING, backend="sagemaker") if job.external_id]
        platform.follow([JobReporter(job, store, dict) for job in running])

    def phases() -> dict[str, str]:
        return {job.external_id: job.phase for job in store.jobs_in_status(JobStatus.RUNNING, backend="sagemaker")}

    first = tally.during(cycle)
    steady = [tally.during(cycle) for _ in range(3)]
    for name in names[:CHANGED]:
        _set_state(name, "InProgress", "Uploading")
    after_change = tally.during(cycle)
    assert all(phases()[name] == "Uploading" for name in names[:CHANGED]), "a changed job was not seen"
    for name in names[:CHANGED]:
        _set_state(name, "InProgress", "Downloading")
    listing.throttle_next = 1
    throttled = tally.during(cycle)
    seen_while_throttled = sum(phases()[name] == "Downloading" for name in names[:CHANGED])
    store.close()
    return {"count": count, "first": first, "steady": int(median([calls for calls, _, _ in steady])),
            "steady_ops": steady[-1][1], "steady_s": median([seconds for _, _, seconds in steady]),
            "after_change": after_change, "throttled": throttled, "seen_while_throttled": seen_while_throttled,
            "changed_while_throttled": len(names[:CHANGED])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="3,100,1000")
    parser.add_argument("--others", type=int, default=10_000)
    args = parser.parse_args()
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
        os.environ.pop(name, None)
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION=REGION)
    from moto import mock_aws

    header(f"Monitor cost: AWS calls per cycle, {args.others:,} finished jobs of others in the account")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for count in (int(text) for text in args.counts.split(",")):
            with mock_aws():  # a fresh account per row
                results.append(measure(count, args.others, Path(tmp)))
    rows = [[r["count"], r["first"][0], r["steady"], r["after_change"][0],
             f"{r['throttled'][0]} ({r['seen_while_throttled']}/{r['changed_while_throttled']} changes seen)",
             r["steady_s"] * 1000] for r in results]
    table(["followed jobs", "first cycle", "unchanged cycle", f"cycle after {CHANGED} changed",
           "cycle with its first list call throttled", "unchanged cycle ms (moto + fake list)"], rows)
    for r in results:
        print(f"- {r['count']} jobs: unchanged cycle {dict(r['steady_ops'])}; after changes "
              f"{dict(r['after_change'][1])}; throttled list {dict(r['throttled'][1])}")


if __name__ == "__main__":
    main()
