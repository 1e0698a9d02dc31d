"""Dataset upload: 2,000 small files (about 25 MB) to a moto S3 server, against `aws s3 sync`.

    python bench/bench_upload.py [--files 2000] [--megabytes 25]

Both send the same folder to the same moto server on 127.0.0.1 in the same run: the executor
packs it into one content-addressed tar (mlops/sagemaker/dataset_upload.py, as the SageMaker backend uploads
a training dataset); `aws s3 sync` sends a PUT per file. Each runs three times: the first upload,
again with the folder unchanged, and again after one file changed.
"""
from __future__ import annotations

import argparse
import logging
import os
import random
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from common import header, table

REGION = "us-east-1"
BUCKET = "essedum-bench"


def write_folder(folder: Path, files: int, total_bytes: int, seed: int = 5) -> int:
    """Write `files` files of random sizes around total_bytes / files, incompressible; return the total."""
    rng = random.Random(seed)
    mean = total_bytes // files
    written = 0
    for index in range(files):
        size = rng.randint(mean // 2, mean * 3 // 2)
        sub = folder / f"class_{index % 10}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"img_{index:05d}.png").write_bytes(rng.randbytes(size))
        written += size
    return written


class RequestCount(logging.Handler):
    """Counts the moto server's request log lines for `aws s3 sync`'s keys, and prints none of them."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "sync/" in record.getMessage():
            self.count += 1


def aws_cli() -> str | None:
    """Return the aws command, or None when the AWS CLI is not installed."""
    return shutil.which("aws") or (str(Path("/root/.pyenv/shims/aws")) if Path("/root/.pyenv/shims/aws").exists()
                                   else None)


def sync(aws: str, endpoint: str, folder: Path) -> float:
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": REGION, "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
    began = time.perf_counter()
    subprocess.run([aws, "s3", "sync", str(folder), f"s3://{BUCKET}/sync/", "--endpoint-url", endpoint,
                    "--only-show-errors"], env=env, check=True, timeout=600)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--megabytes", type=float, default=25)
    args = parser.parse_args()
    from moto.server import ThreadedMotoServer

    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        os.environ.pop(name, None)
    requests = RequestCount()
    werkzeug = logging.getLogger("werkzeug")
    werkzeug.handlers[:] = [requests]
    werkzeug.setLevel(logging.INFO)
    werkzeug.propagate = False
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION=REGION,
                      AWS_ENDPOINT_URL=endpoint)
    from mlops.aws import ClientFactory
    from mlops.sagemaker.dataset_upload import dataset_entries, upload_dataset

    header(f"Dataset upload: {args.files:,} small files to a moto S3 server, against aws s3 sync")
    clients = ClientFactory(region=REGION)
    s3 = clients.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    aws = aws_cli()
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "dataset"
            total = write_folder(folder, args.files, int(args.megabytes * 1e6))
            for label in ("first upload", "unchanged", "one file changed"):
                if label == "one file changed":
                    (folder / "class_0" / "img_00000.png").write_bytes(b"changed" * 1000)
                before = clients.counter.total()
                began = time.perf_counter()
                upload = upload_dataset(s3, dataset_entries(folder), BUCKET, "bench")
                executor_s = time.perf_counter() - began
                calls = clients.counter.total() - before
                sync_before = requests.count
                sync_s = sync(aws, endpoint, folder) if aws else None
                rows.append([label, executor_s, calls, "sent" if upload.uploaded else "already there",
                             f"{upload.size / 1e6 / executor_s:.1f}" if upload.uploaded else "-",
                             sync_s if sync_s is not None else "no aws CLI", requests.count - sync_before,
                             f"{sync_s / executor_s:.1f}x" if sync_s else "-"])
            sync_objects = sum(page.get("KeyCount", 0) for page in s3.get_paginator("list_objects_v2").paginate(
                Bucket=BUCKET, Prefix="sync/"))
    finally:
        server.stop()
    table(["run", "executor s", "executor S3 calls", "executor archive", "executor MB/s", "aws s3 sync s",
           "aws s3 sync S3 calls", "sync / executor time"], rows)
    print(f"{args.files:,} files, {total / 1e6:.1f} MB; aws s3 sync left {sync_objects:,} objects (one PUT each); "
          f"the executor one {upload.size / 1e6:.1f} MB tar per content (multipart, 8 threads).")
    if not aws:
        print("The AWS CLI is not installed: the aws s3 sync column was skipped.")


if __name__ == "__main__":
    main()
