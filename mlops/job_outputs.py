"""A job's outputs for download (listing, one file streamed, the model as a streamed tar.gz), never through a link.

A job's code is untrusted and writes into its own folder, so any name there may be a symbolic link
to a file of the executor (its secret key, its database): files are listed and opened by
mlops.job_files, which refuses a link anywhere in the path, a device or a FIFO.
"""
from __future__ import annotations

import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Iterator

from mlops.job_files import open_file, regular_files

#: The folders of a job that hold what it produced (the /opt/ml names): the model and the outputs.
OUTPUT_FOLDERS = ("model", "output")
#: The most files one listing holds. A job decides how many files it writes, and a listing is walked and
#: answered whole in a request thread, or stored in a local job's artifacts record: a thousand files is
#: more than a person reads on a page, and the walk stops at the first file past it.
MAX_LISTED_FILES = 1000
CHUNK_BYTES = 1 << 20


class NotAnOutputFile(LookupError):
    """The name is not a regular file among the job's outputs (missing, a link, a folder, outside them)."""


@dataclass(frozen=True)
class OutputFile:
    """One regular file of a job's outputs: its path relative to the job folder and its size."""

    path: str
    size: int


@dataclass(frozen=True)
class OutputListing:
    """The first files of a job's outputs, and whether more were left out."""

    files: list[OutputFile]
    truncated: bool


def output_path(name: str) -> PurePosixPath:
    """Return the relative path a download names; raise NotAnOutputFile if it leaves the output folders."""
    path = PurePosixPath(name)
    if (path.is_absolute() or not path.parts or path.parts[0] not in OUTPUT_FOLDERS
            or any(part in ("", ".", "..") or "\\" in part for part in path.parts)):
        raise NotAnOutputFile(f"{name!r} is not a file under {' or '.join(f'{f}/' for f in OUTPUT_FOLDERS)}")
    return path


def open_output(job_dir: Path, name: str) -> tuple[IO[bytes], int]:
    """Open one output file of a job for reading; return the file and its size."""
    try:
        return open_file(job_dir, output_path(name))
    except OSError:
        raise NotAnOutputFile(f"{name!r} is not a regular file among the job's outputs") from None


def list_outputs(job_dir: Path, folders: tuple[str, ...] = OUTPUT_FOLDERS,
                 limit: int | None = MAX_LISTED_FILES) -> OutputListing:
    """List up to `limit` (None: all) regular files of the job's output folders; links and special files left out."""
    found: list[OutputFile] = []
    for folder in folders:
        # A folder whose turn comes once the bound is reached is still asked for one file (limit 0):
        # the listing says it was cut only when a file was in fact left out.
        entries, more = regular_files(job_dir, folder, None if limit is None else limit - len(found))
        found += [OutputFile(entry.relative, entry.size) for entry in entries]
        if more:
            return OutputListing(found, truncated=True)
    return OutputListing(found, truncated=False)


def model_archive(job_dir: Path) -> Iterator[bytes]:
    """Return the job's model folder as a gzip'd tar in chunks: neither the archive nor a file sits whole in memory."""
    # Listed before the first chunk, so that a model too large to list whole (TooManyEntries) is refused
    # with an answer of its own rather than cut off in the middle of a download.
    # Every file of the model belongs in its archive: the listing is not bounded by a file count here.
    return _archive_chunks(job_dir, list_outputs(job_dir, ("model",), limit=None).files)


def _archive_chunks(job_dir: Path, files: list[OutputFile]) -> Iterator[bytes]:
    # The tar stream is written by hand (headers from TarInfo.tobuf, data, padding, end blocks), because
    # tarfile's addfile copies a whole file before a generator could hand any of it on.
    gzip = zlib.compressobj(6, zlib.DEFLATED, 31)
    for item in files:
        try:
            handle, size = open_output(job_dir, item.path)
        except NotAnOutputFile:
            continue  # it changed since the listing: leave it out rather than send something else
        with handle:
            info = tarfile.TarInfo(str(PurePosixPath(item.path).relative_to("model")))
            info.size, info.mode = size, 0o644  # no time, owner or group: the same model gives the same bytes
            yield gzip.compress(info.tobuf(tarfile.PAX_FORMAT))
            left = size
            while left:
                # A file that shrinks while it is sent is padded, one that grows is cut: the header's size holds.
                chunk = handle.read(min(CHUNK_BYTES, left)) or bytes(min(CHUNK_BYTES, left))
                left -= len(chunk)
                yield gzip.compress(chunk)
        yield gzip.compress(bytes(-size % tarfile.BLOCKSIZE))
    yield gzip.compress(bytes(2 * tarfile.BLOCKSIZE)) + gzip.flush()
