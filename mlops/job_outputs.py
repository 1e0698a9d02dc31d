"""A job's outputs for download (listing, one file streamed, the model as a streamed tar.gz), never through a link.

A job's code is untrusted and writes into its own folder, so any name there may be a symbolic link
to a file of the executor (its secret key, its database). Every component of a path is opened
relative to the already opened folder above it with O_NOFOLLOW, and only a regular file is read:
a link, a device or a FIFO is refused whatever it points at, and a swap of a folder after the
check cannot redirect the open. (Windows has no dir_fd: there each component is checked with lstat.)
"""
from __future__ import annotations

import os
import stat
import tarfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Iterator

#: The folders of a job that hold what it produced (the /opt/ml names): the model and the outputs.
OUTPUT_FOLDERS = ("model", "output")
CHUNK_BYTES = 1 << 20
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
DIRECTORY = getattr(os, "O_DIRECTORY", 0)
BINARY = getattr(os, "O_BINARY", 0)
# A FIFO planted by the job would block a plain open until someone writes to it; a regular file ignores the flag.
NONBLOCK = getattr(os, "O_NONBLOCK", 0)
# Windows has neither dir_fd nor O_NOFOLLOW: there each component is checked with lstat before the open.
RELATIVE_OPEN = os.open in os.supports_dir_fd and bool(NOFOLLOW)


class NotAnOutputFile(LookupError):
    """The name is not a regular file among the job's outputs (missing, a link, a folder, outside them)."""


@dataclass(frozen=True)
class OutputFile:
    """One regular file of a job's outputs: its path relative to the job folder and its size."""

    path: str
    size: int


def output_path(name: str) -> PurePosixPath:
    """Return the relative path a download names; raise NotAnOutputFile if it leaves the output folders."""
    path = PurePosixPath(name)
    if (path.is_absolute() or not path.parts or path.parts[0] not in OUTPUT_FOLDERS
            or any(part in ("", ".", "..") or "\\" in part for part in path.parts)):
        raise NotAnOutputFile(f"{name!r} is not a file under {' or '.join(f'{f}/' for f in OUTPUT_FOLDERS)}")
    return path


@contextmanager
def _open_folder(root: Path, parts: tuple[str, ...]) -> Iterator[int | None]:
    """Open root, then each folder of parts below it, never through a link; yield the last folder's fd.

    Without dir_fd (Windows) the folders are checked with lstat instead, and None is yielded.
    """
    if not RELATIVE_OPEN:
        for depth in range(len(parts) + 1):
            if not stat.S_ISDIR(os.lstat(root.joinpath(*parts[:depth])).st_mode):
                raise NotAnOutputFile(f"{root.joinpath(*parts[:depth])} is not a folder")
        yield None
        return
    fd = os.open(root, os.O_RDONLY | DIRECTORY | NOFOLLOW)
    try:
        for part in parts:
            child = os.open(part, os.O_RDONLY | DIRECTORY | NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


def _open_child(folder_fd: int | None, folder: Path, name: str, flags: int) -> int:
    if folder_fd is not None:
        return os.open(name, flags | NOFOLLOW, dir_fd=folder_fd)
    if stat.S_ISLNK(os.lstat(folder / name).st_mode):
        raise NotAnOutputFile(f"{name!r} is a link")
    return os.open(folder / name, flags | BINARY)


def open_output(job_dir: Path, name: str) -> tuple[IO[bytes], int]:
    """Open one output file of a job for reading; return the file and its size."""
    path = output_path(name)
    try:
        with _open_folder(job_dir, path.parts[:-1]) as folder_fd:
            fd = _open_child(folder_fd, job_dir.joinpath(*path.parts[:-1]), path.parts[-1], os.O_RDONLY | NONBLOCK)
    except (OSError, NotAnOutputFile):
        raise NotAnOutputFile(f"{name!r} is not a regular file among the job's outputs") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise NotAnOutputFile(f"{name!r} is not a regular file")
    return os.fdopen(fd, "rb"), info.st_size


def list_outputs(job_dir: Path, folders: tuple[str, ...] = OUTPUT_FOLDERS) -> list[OutputFile]:
    """Return the regular files under the job's output folders, links and special files left out."""
    found: list[OutputFile] = []
    for folder in folders:
        try:
            with _open_folder(job_dir, (folder,)) as fd:
                found.extend(_walk(fd, job_dir / folder, PurePosixPath(folder)))
        except (OSError, NotAnOutputFile):
            continue
    return found


def _walk(folder_fd: int | None, folder: Path, relative: PurePosixPath) -> list[OutputFile]:
    entries = sorted(os.scandir(folder if folder_fd is None else folder_fd), key=lambda entry: entry.name)
    found = []
    for entry in entries:
        info = entry.stat(follow_symlinks=False)
        if stat.S_ISREG(info.st_mode):
            found.append(OutputFile(str(relative / entry.name), info.st_size))
        elif stat.S_ISDIR(info.st_mode):
            try:
                opened = (_open_folder(folder, (entry.name,)) if folder_fd is None
                          else _child_folder(folder_fd, entry.name))
                with opened as child:
                    found.extend(_walk(child, folder / entry.name, relative / entry.name))
            except (OSError, NotAnOutputFile):
                continue
    return found


@contextmanager
def _child_folder(folder_fd: int, name: str) -> Iterator[int]:
    fd = os.open(name, os.O_RDONLY | DIRECTORY | NOFOLLOW, dir_fd=folder_fd)
    try:
        yield fd
    finally:
        os.close(fd)


def model_archive(job_dir: Path) -> Iterator[bytes]:
    """Yield the job's model folder as a gzip'd tar in chunks: neither the archive nor a file sits whole in memory."""
    # The tar stream is written by hand (headers from TarInfo.tobuf, data, padding, end blocks), because
    # tarfile's addfile copies a whole file before a generator could hand any of it on.
    gzip = zlib.compressobj(6, zlib.DEFLATED, 31)
    for item in list_outputs(job_dir, ("model",)):
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
