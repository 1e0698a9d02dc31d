"""Fetching a job's inputs into its folder: pipeline files from Essedum storage, datasets.

Storage endpoints are never taken on trust from a request: an S3 request may only name an AWS S3
endpoint, and a MinIO request only an endpoint the operator listed in EXECUTOR_STORAGE_ENDPOINTS.
"""
from __future__ import annotations

import os
import re
import shlex
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Callable, Iterable
from urllib.parse import urlsplit

from config import Config
from mlops.aws import ClientFactory
from mlops.errors import BackendError, InvalidRequest, error_text
from mlops.job_files import (Snapshot, TooManyEntries, UnsafeFile, copyable_tree, regular_files,
                             resolve_storage_path, snapshot_tree, tree_digest)
from mlops.shapes import S3_URI

if TYPE_CHECKING:
    from mlops.job_requests import PipelineRequest, TrainingRequest

AWS_S3_HOST = re.compile(r"^s3(?:[.-][a-z0-9-]+)*\.amazonaws\.com(?:\.cn)?$")
PYTHON_PROGRAMS = frozenset({"python", "python3"})
MAX_PUBLISHED_FILES = 100_000
# A rerun request reads a pipeline's files up to this size to compare them with what its job ran
# (about a second); past it the rerun compares them when it stages them.
REQUEST_DIGEST_BYTES = 64 << 20


def parse_command(command: str) -> list[str]:
    """Split an Essedum command into an argument list: a Python interpreter, a script, its arguments."""
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise InvalidRequest("command", f"cannot be split into arguments: {exc}") from None
    if len(argv) < 2:
        raise InvalidRequest("command", "must be 'python <script> [arguments]'")
    if argv[0] not in PYTHON_PROGRAMS:
        raise InvalidRequest("command", f"program must be python or python3, not {argv[0]!r}")
    script = PurePosixPath(argv[1])
    if script.is_absolute() or ".." in script.parts or not argv[1].endswith(".py"):
        raise InvalidRequest("command", "script must be a relative .py path inside the pipeline's files")
    return argv


def check_storage_endpoint(storage: str, endpoint: str, config: Config) -> str | None:
    """Return the endpoint URL to use for a storage request, or raise InvalidRequest."""
    parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest("credentials.endpoint", "must be an http(s) URL or host name")
    allowed = {_normalise_endpoint(item) for item in config.storage_endpoints.split(",") if item.strip()}
    normalised = _normalise_endpoint(endpoint)
    if normalised in allowed:
        return f"{parts.scheme}://{parts.netloc}"
    if storage == "s3" and parts.scheme == "https" and AWS_S3_HOST.match(parts.hostname):
        return f"https://{parts.netloc}"
    raise InvalidRequest("credentials.endpoint",
                         "is not an AWS S3 endpoint and not among the operator's EXECUTOR_STORAGE_ENDPOINTS")


def check_pipeline_inputs(request: PipelineRequest, secrets: dict[str, Any], config: Config) -> list[str]:
    """Check a pipeline's command, and that its script is among its files or its storage endpoint is allowed; return the command's arguments."""
    argv = parse_command(request.command)
    if request.storage == "local":
        folder = resolve_storage_path(config.storage_root, request.input_artifacts, "input_artifacts")
        if not folder.is_dir():
            raise InvalidRequest("input_artifacts", f"no folder {request.input_artifacts!r} in the storage root")
        if not (folder / argv[1]).is_file():
            raise InvalidRequest("command", f"script {argv[1]!r} is not among the files under input_artifacts")
    else:
        check_storage_endpoint(request.storage, (secrets.get("credentials") or {}).get("endpoint", ""), config)
    return argv


def check_training_inputs(training: TrainingRequest, config: Config) -> Path | None:
    """Check that a training's dataset folder (with its metadata file) and entry point exist; return the folder, None for S3."""
    folder = None
    if not S3_URI.match(training.dataset):
        folder = Path(training.dataset_path or resolve_storage_path(config.storage_root, training.dataset, "dataset"))
        if not folder.is_dir():
            raise InvalidRequest("dataset", f"no folder {training.dataset!r} in the storage root ({config.storage_root})")
        if training.metadata_file and not (folder / training.metadata_file).is_file():
            raise InvalidRequest("metadata_file", f"{training.metadata_file!r} is not a file in the dataset")
    if not (Path(training.source_dir) / training.entry_point).is_file():
        raise InvalidRequest("entry_point", f"{training.entry_point!r} is not a file in the source folder")
    return folder


def _normalise_endpoint(endpoint: str) -> str:
    endpoint = endpoint.strip()
    parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
    return f"{parts.scheme}://{(parts.hostname or '').lower()}:{parts.port or (443 if parts.scheme == 'https' else 80)}"


def pipeline_storage_client(request: PipelineRequest, secrets: dict[str, Any], config: Config,
                            clients: ClientFactory) -> Any:
    """Return an S3 client for a pipeline's Essedum storage, with the request's own credentials."""
    credentials = secrets.get("credentials") or {}
    endpoint = check_storage_endpoint(request.storage, credentials.get("endpoint", ""), config)
    return clients.storage_client(endpoint_url=endpoint, access_key=credentials.get("access_key", ""),
                                  secret_key=credentials.get("secret_key", ""),
                                  region=request.configs.get("region_name"))


def output_prefix(request: PipelineRequest) -> str:
    """Return the key prefix where Essedum expects a pipeline's outputs."""
    return f"{request.project_id}/remote/{request.name}/{request.version}/outputartifacts"


def remote_log_uri(request: PipelineRequest) -> str | None:
    """Return where the log of an s3/minio pipeline is published, as the Essedum backend names it."""
    if request.storage not in ("s3", "minio"):
        return None
    return f"{request.storage}://{request.bucket}/{output_prefix(request)}/logs/log.txt"


def publish_outputs(client: Any, request: PipelineRequest, log_path: Path, folders: Iterable[Path]) -> int:
    """Upload the job log and output files to the pipeline's outputartifacts prefix; return the count."""
    prefix = output_prefix(request)
    uploads = [(log_path, f"{prefix}/logs/log.txt")] if log_path.is_file() else []
    for folder in folders:
        uploads += [(path, f"{prefix}/{folder.name}/{path.relative_to(folder).as_posix()}")
                    for path in files_under(folder)] if folder.is_dir() else []
    try:
        for path, key in uploads:
            client.upload_file(str(path), request.bucket, key)
    except Exception as exc:  # botocore raises many unrelated types; the reason is what matters
        raise BackendError(f"cannot upload outputs to s3://{request.bucket}/{prefix}: {error_text(exc)}") from exc
    return len(uploads)


def stage_pipeline_files(request: PipelineRequest, secrets: dict[str, Any], dest: Path, config: Config,
                         clients: ClientFactory) -> Path:
    """Copy or download a pipeline's files into dest and return it; the command's script must be there."""
    dest.mkdir(parents=True, exist_ok=True)
    if request.storage == "local":
        source = resolve_storage_path(config.storage_root, request.input_artifacts, "input_artifacts")
        if not source.is_dir():
            raise BackendError(f"input_artifacts {request.input_artifacts!r} is not a folder in the storage root")
        stage_folder(source, dest, config, "input_artifacts")
    else:
        client = pipeline_storage_client(request, secrets, config, clients)
        download_prefix(client, request.bucket, request.input_artifacts, dest)
    script = parse_command(request.command)[1]
    if not (dest / script).is_file():
        raise BackendError(f"command names {script!r}, which is not among the pipeline's files "
                           f"under {request.input_artifacts!r}")
    return dest


def download_prefix(client: Any, bucket: str, prefix: str, dest: Path) -> int:
    """Download every object under an S3 prefix into dest, keeping relative paths; return the count."""
    prefix = prefix.strip("/")
    key_prefix = f"{prefix}/" if prefix else ""
    count = 0
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key_prefix):
            for item in page.get("Contents", []):
                relative = item["Key"][len(key_prefix):]
                if not relative or relative.endswith("/"):
                    continue
                target = _inside(dest, relative)
                target.parent.mkdir(parents=True, exist_ok=True)
                client.download_file(bucket, item["Key"], str(target))
                count += 1
    except BackendError:
        raise
    except Exception as exc:  # botocore raises many unrelated types; the reason is what matters
        raise BackendError(f"cannot download s3://{bucket}/{key_prefix}: {error_text(exc)}") from exc
    if count == 0:
        raise BackendError(f"no files under s3://{bucket}/{key_prefix}")
    return count


def never_link(_info: os.stat_result) -> bool:
    """Link no file: every file a job may write must be a copy of its own."""
    return False


def stage_dataset(dataset: str, dest: Path, config: Config, clients: ClientFactory,
                  may_link: Callable[[os.stat_result], bool] = never_link) -> str:
    """Put a dataset (a folder in the storage root, or an s3:// URI) into a training channel folder.

    A folder of the storage root is snapshotted (mlops.job_files.snapshot_tree): hard links where
    may_link allows, else reflinks or copies. Return how its files were placed, for the job's log.
    """
    dest.mkdir(parents=True, exist_ok=True)
    match = S3_URI.match(dataset)
    if match:
        count = download_prefix(clients.client("s3"), match.group(1), match.group(2) or "", dest)
        return f"downloaded: {count}"
    source = resolve_storage_path(config.storage_root, dataset, "dataset")
    return stage_folder(source, dest, config, "dataset", may_link).describe()


def local_inputs_digest(request: PipelineRequest, config: Config) -> str | None:
    """Return the digest of what a pipeline of local storage would stage now (tree_digest).

    None where it is not compared now: other storage, or more than REQUEST_DIGEST_BYTES to read in
    a request; the run compares what it stages.
    """
    if request.storage != "local":
        return None
    source = resolve_storage_path(config.storage_root, request.input_artifacts, "input_artifacts")
    try:
        if copyable_tree(source.parent, source.name).size > REQUEST_DIGEST_BYTES:
            return None
        return tree_digest(source.parent, source.name)
    except TooManyEntries as exc:
        raise InvalidRequest("input_artifacts", f"cannot be read whole: {exc}") from None


def stage_folder(source: Path, dest: Path, config: Config, field: str,
                 may_link: Callable[[os.stat_result], bool] = never_link) -> Snapshot:
    """Place a folder in a job's folder (mlops.job_files.snapshot_tree: no links followed, bounded).

    Only the files may_link allows are hard-linked; BackendError when it cannot be placed. What an
    interrupted attempt left at dest gives way: a restaged job runs what its source holds now.
    """
    try:
        return snapshot_tree(source, dest, config.max_copy_bytes, may_link, replace=True)
    except TooManyEntries as exc:
        raise BackendError(f"{field} cannot be staged: {exc}") from None
    except UnsafeFile as exc:
        raise BackendError(f"{field} changed while it was staged: {exc}") from None


def _inside(root: Path, relative: str) -> Path:
    target = (root / relative).resolve()
    if root.resolve() not in target.parents:
        raise BackendError(f"refusing object key {relative!r}: it leaves the job folder")
    return target


def files_under(root: Path) -> Iterable[Path]:
    """Return the regular files below a folder in a stable order; links are neither followed nor listed."""
    entries, _more = regular_files(root.parent, root.name, MAX_PUBLISHED_FILES)
    return [root.parent / entry.relative for entry in entries]
