"""What 30% injected AWS faults cost: 20 SageMaker pipeline jobs end to end on a moto server, with and without.

    python bench/bench_faults.py [--jobs 20] [--rate 0.3]

The executor (in this process, the sagemaker backend, 4 workers, monitor every 0.1 s) talks to a moto
server on 127.0.0.1. The fault injector of tests/test_reliability.py fails a seeded share of attempts
before they are sent: half throttled, half a dropped connection. The client's adaptive retries must
absorb them; CreateTrainingJob is counted at moto, by name.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import boto3
from botocore.config import Config as BotoConfig

from common import header, pipeline_body, table, write_pipeline

REGION = "us-east-1"


def run(jobs: int, rate: float, url: str, created: Counter, retry_mode: str) -> dict[str, object]:
    from app import create_app
    from mlops.aws import ClientFactory
    from test_reliability import BUCKET, ROLE_ARN, FaultInjector, sagemaker_env

    urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"), timeout=10).close()
    boto3.client("s3", endpoint_url=url, region_name=REGION).create_bucket(Bucket=BUCKET)
    faults = FaultInjector(rate=rate)
    clients = ClientFactory(region=REGION, session_factory=faults.session)
    # The executor's own setting is adaptive; standard shows what its client-side rate limiter costs.
    clients.boto_config = clients.boto_config.merge(BotoConfig(retries={"mode": retry_mode, "max_attempts": 8}))
    created.clear()
    with tempfile.TemporaryDirectory() as tmp:
        storage = Path(tmp) / "storage"
        write_pipeline(storage, "Demo/pipe", "print('pipeline')\n")
        app = create_app({"data_dir": str(Path(tmp) / "data"), "local_storage_root": str(storage),
                          "backend": "sagemaker", "workers": "4", "s3_bucket": BUCKET, "sagemaker_role_arn": ROLE_ARN,
                          "aws_region": REGION, "training_image": sagemaker_env(url)["EXECUTOR_TRAINING_IMAGE"],
                          "monitor_interval": "0.1", "shutdown_timeout": "5"}, clients=clients)
        executor = app.config["EXECUTOR"]
        began = time.monotonic()
        executor.queue.start()
        try:
            client = app.test_client()
            ids = [client.post("/execute", json=pipeline_body("Demo/pipe", f"python pipe1.py --run {n}"))
                   .get_json()["task_id"] for n in range(jobs)]
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                found = [executor.store.get(job_id) for job_id in ids]
                if all(job.status.is_final for job in found):
                    break
                time.sleep(0.1)
            seconds = time.monotonic() - began
        finally:
            executor.queue.stop(timeout=5)
            executor.store.close()
    return {"rate": rate, "mode": retry_mode, "seconds": seconds, "statuses": Counter(job.status.value for job in found),
            "attempts": sum(faults.attempts.values()), "injected": sum(faults.injected.values()),
            "creates": sum(created.values()), "max_creates": max(created.values(), default=0),
            "throttles": sum(clients.counter.snapshot()["throttles"].values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--rate", type=float, default=0.3)
    parser.add_argument("--retry-modes", default="adaptive,standard",
                        help="botocore retry modes to run (the executor uses adaptive)")
    args = parser.parse_args()
    from moto.sagemaker.models import SageMakerModelBackend
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    os.environ.pop("AWS_PROFILE", None)
    os.environ.update(AWS_ENDPOINT_URL=url, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                      AWS_DEFAULT_REGION=REGION)
    created: Counter = Counter()
    lock = threading.Lock()
    original = SageMakerModelBackend.create_training_job

    def counting(self, *call_args, **kwargs):
        with lock:
            created[kwargs.get("training_job_name")] += 1
        return original(self, *call_args, **kwargs)

    SageMakerModelBackend.create_training_job = counting
    header(f"{args.jobs} SageMaker jobs end to end with {args.rate:.0%} of AWS attempts failed, and with none")
    results = []
    try:
        for mode in args.retry_modes.split(","):
            for rate in (0.0, args.rate):
                results.append(run(args.jobs, rate, url, created, mode))
    finally:
        server.stop()
    table(["retry mode", "faults", "jobs ended", "seconds to all ended", "AWS attempts", "injected faults", "throttles seen",
           "CreateTrainingJob at moto", "most creates of one name"],
          [[r["mode"], f"{r['rate']:.0%}", dict(r["statuses"]), r["seconds"], r["attempts"], r["injected"], r["throttles"],
            r["creates"], r["max_creates"]] for r in results])


if __name__ == "__main__":
    main()
