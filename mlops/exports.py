"""Exports of local datasets and models as one downloadable file, with its size and SHA-256.

A model folder becomes `model.tar.gz` laid out as SageMaker serves it (model.pt, code/...), written
deterministically (sorted names, no times, no owners) so that the same model always has the same
hash. Files are read without following links: a model folder holds what a job wrote.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import stat
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class Export:
    """A file ready for download."""

    path: Path
    filename: str
    size: int
    sha256: str


def open_no_follow(path: Path) -> BinaryIO:
    """Open a regular file for reading; refuse a link or anything else that is not a plain file."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    descriptor = os.open(path, flags)
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise OSError(f"{path.name} is not a regular file")
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def file_export(path: Path) -> Export:
    """Describe one file for download: its size and SHA-256, read once without following links."""
    digest, size = hashlib.sha256(), 0
    with open_no_follow(path) as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(chunk)
            size += len(chunk)
    return Export(path, path.name, size, digest.hexdigest())


def folder_export(folder: Path, target: Path) -> Export:
    """Archive a folder's regular files as target (a .tar.gz) and describe it; links are left out."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(dir=target.parent, prefix=".export-", delete=False)
    try:
        with handle:
            # mtime=0 in the gzip header too: the same files give the same bytes.
            with gzip.GzipFile(filename="", mode="wb", fileobj=handle, mtime=0) as compressed:
                with tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as archive:
                    for path in sorted(folder.rglob("*")):
                        if path.is_symlink() or not path.is_file() or "__pycache__" in path.parts:
                            continue
                        with open_no_follow(path) as source:
                            info = tarfile.TarInfo(path.relative_to(folder).as_posix())
                            info.size = os.fstat(source.fileno()).st_size
                            info.mode = 0o644
                            archive.addfile(info, source)
        os.replace(handle.name, target)
    finally:
        if os.path.exists(handle.name):
            os.unlink(handle.name)
    return file_export(target)
