"""Uploads to S3 of a job's inputs: the dataset as one tar archive, the code as sourcedir.tar.gz.

A dataset folder of thousands of small images would cost thousands of sequential PUTs if sent
file by file; packed into one uncompressed tar it costs what its bytes cost, sent with boto3's
managed multipart transfer. The archive is deterministic (sorted names, zero mtimes, uids and
gids, fixed modes), so its sha256 addresses its content: the key is
`<prefix>/datasets/<sha256>/dataset.tar`, and a dataset already there is not sent again.

The archive is streamed twice from the files, never written to disk: once to hash it, once to
upload it; the upload is hashed again and removed if the files changed in between. The S3 calls
are the adapter's (mlops/aws.py); this module decides what is sent and under which key.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import logging
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from mlops.aws import delete_quietly, object_exists, upload_stream
from mlops.errors import SageMakerError
from mlops.sagemaker import validation as v

logger = logging.getLogger(__name__)

DATASET_ARCHIVE = "dataset.tar"
SOURCE_ARCHIVE = "sourcedir.tar.gz"
READ_CHUNK = 1024 * 1024
MAX_SOURCE_BYTES = 256 * 1024 * 1024
SOURCE_EXCLUDED_DIRS = frozenset({"__pycache__", ".git", ".venv", ".pytest_cache", ".ipynb_checkpoints"})
SOURCE_EXCLUDED_SUFFIXES = (".pyc", ".pyo")


@dataclass(frozen=True)
class Entry:
    """One file of an archive: its name inside the archive and where to read it."""

    name: str
    path: Path
    size: int


@dataclass(frozen=True)
class Upload:
    """Where an archive is in S3, its sha256, its size, and whether this call sent it."""

    uri: str
    key: str
    sha256: str
    size: int
    uploaded: bool


def dataset_entries(dataset_folder: Path, metadata_file: Path | None = None) -> list[Entry]:
    """List the regular files of a dataset folder, plus a metadata file from elsewhere at the root.

    Symbolic links are skipped: following them could send files from outside the dataset.
    """
    if not dataset_folder.is_dir():
        raise SageMakerError(f"dataset folder {dataset_folder} does not exist or is not a folder")
    entries = []
    for path in dataset_folder.rglob("*"):
        if path.is_symlink() or not path.is_file():
            continue
        entries.append(Entry(path.relative_to(dataset_folder).as_posix(), path, path.stat().st_size))
    if metadata_file is not None:
        if not metadata_file.is_file():
            raise SageMakerError(f"metadata file {metadata_file} does not exist")
        resolved_root = dataset_folder.resolve()
        if resolved_root not in metadata_file.resolve().parents:
            names = {entry.name for entry in entries}
            if metadata_file.name in names:
                raise SageMakerError(f"metadata file name {metadata_file.name!r} clashes with a file at the "
                                     "root of the dataset folder")
            entries.append(Entry(metadata_file.name, metadata_file, metadata_file.stat().st_size))
    if not entries:
        raise SageMakerError(f"dataset folder {dataset_folder} holds no files")
    return sorted(entries, key=lambda entry: entry.name)


def source_entries(source_dir: Path) -> list[Entry]:
    """List the files of a code folder, without caches, virtual environments and VCS folders."""
    if not source_dir.is_dir():
        raise SageMakerError(f"code folder {source_dir} does not exist")
    entries = []
    for path in source_dir.rglob("*"):
        relative = path.relative_to(source_dir)
        if (path.is_symlink() or not path.is_file() or SOURCE_EXCLUDED_DIRS & set(relative.parts)
                or path.name.endswith(SOURCE_EXCLUDED_SUFFIXES)):
            continue
        entries.append(Entry(relative.as_posix(), path, path.stat().st_size))
    return sorted(entries, key=lambda entry: entry.name)


def _header(entry: Entry) -> bytes:
    info = tarfile.TarInfo(entry.name)
    info.size = entry.size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="surrogateescape")


def tar_chunks(entries: Iterable[Entry]) -> Iterator[bytes]:
    """Yield a deterministic uncompressed tar archive of the entries, a chunk at a time."""
    for entry in entries:
        yield _header(entry)
        remaining = entry.size
        with open(entry.path, "rb") as handle:
            while remaining:
                chunk = handle.read(min(READ_CHUNK, remaining))
                if not chunk:
                    raise SageMakerError(f"{entry.path} shrank while it was being read")
                remaining -= len(chunk)
                yield chunk
        padding = -entry.size % tarfile.BLOCKSIZE
        if padding:
            yield b"\0" * padding
    yield b"\0" * (2 * tarfile.BLOCKSIZE)


def tar_size(entries: Iterable[Entry]) -> int:
    """Return the byte size of the archive tar_chunks produces."""
    total = 2 * tarfile.BLOCKSIZE
    for entry in entries:
        total += len(_header(entry)) + entry.size + (-entry.size % tarfile.BLOCKSIZE)
    return total


class ChunkReader(io.RawIOBase):
    """A read-only, non-seekable file over an iterator of byte chunks, hashing what it yields."""

    def __init__(self, chunks: Iterator[bytes]):
        self._chunks = chunks
        self._buffer = bytearray()
        self.sha256 = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._buffer += chunk
        end = len(self._buffer) if size < 0 else size
        data = bytes(self._buffer[:end])
        del self._buffer[:end]
        self.sha256.update(data)
        self.size += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


def archive_sha256(entries: list[Entry]) -> str:
    """Return the sha256 of the deterministic tar archive of the entries."""
    digest = hashlib.sha256()
    for chunk in tar_chunks(entries):
        digest.update(chunk)
    return digest.hexdigest()


def upload_dataset(s3: Any, entries: list[Entry], bucket: str, prefix: str) -> Upload:
    """Upload the dataset archive under its content address unless it is there already."""
    sha256 = archive_sha256(entries)
    size = tar_size(entries)
    key = v.s3_key(prefix, "datasets", sha256, DATASET_ARCHIVE)
    uri_prefix = f"s3://{bucket}/{key.rsplit('/', 1)[0]}/"
    if object_exists(s3, bucket, key):
        logger.info("dataset %s is already in s3://%s/%s; not uploading it again", sha256[:12], bucket, key)
        return Upload(uri_prefix, key, sha256, size, uploaded=False)
    reader = ChunkReader(tar_chunks(entries))
    upload_stream(s3, reader, bucket, key, size)
    if reader.sha256.hexdigest() != sha256:
        delete_quietly(s3, bucket, key)
        raise SageMakerError("the dataset changed while it was being uploaded; submit the job again")
    logger.info("uploaded dataset %s (%d files, %d bytes) to s3://%s/%s", sha256[:12], len(entries), size,
                bucket, key)
    return Upload(uri_prefix, key, sha256, size, uploaded=True)


def pack_source(entries: list[Entry]) -> bytes:
    """Return a deterministic sourcedir.tar.gz of the entries (gzip without a name or time stamp)."""
    total = sum(entry.size for entry in entries)
    if total > MAX_SOURCE_BYTES:
        raise SageMakerError(f"the code folder holds {total} bytes, more than the {MAX_SOURCE_BYTES} "
                             "a code archive may have; put data in the dataset instead")
    raw = b"".join(tar_chunks(entries))
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0) as handle:
        handle.write(raw)
    return buffer.getvalue()


def upload_source(s3: Any, source_dir: Path, bucket: str, prefix: str) -> Upload:
    """Upload a code folder as sourcedir.tar.gz under its content address unless it is there already."""
    entries = source_entries(source_dir)
    if not entries:
        raise SageMakerError(f"code folder {source_dir} holds no files")
    archive = pack_source(entries)
    sha256 = hashlib.sha256(archive).hexdigest()
    key = v.s3_key(prefix, "code", sha256, SOURCE_ARCHIVE)
    uri = f"s3://{bucket}/{key}"
    if object_exists(s3, bucket, key):
        return Upload(uri, key, sha256, len(archive), uploaded=False)
    upload_stream(s3, io.BytesIO(archive), bucket, key, len(archive))
    return Upload(uri, key, sha256, len(archive), uploaded=True)
