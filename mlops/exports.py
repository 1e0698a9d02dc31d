"""Exports of local datasets and models as one downloadable file, with its size and SHA-256.

A model folder becomes `model.tar.gz` laid out as SageMaker serves it (model.pt, code/...), written
deterministically (sorted names, no times, no owners) so that the same model always has the same
hash. Files are listed and read by mlops.job_files, never through a link: a model folder holds
what a job wrote.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from mlops.job_files import open_file, regular_files

CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class Export:
    """A file ready for download."""

    path: Path
    filename: str
    size: int
    sha256: str


def file_export(path: Path) -> Export:
    """Describe one file for download: its size and SHA-256, read once without following links."""
    digest, size = hashlib.sha256(), 0
    handle, _size = open_file(path.parent, path.name)
    with handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(chunk)
            size += len(chunk)
    return Export(path, path.name, size, digest.hexdigest())


def folder_export(folder: Path, target: Path) -> Export:
    """Archive a folder's regular files as target (a .tar.gz) and describe it; links are left out."""
    entries, _more = regular_files(folder.parent, folder.name, None)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(dir=target.parent, prefix=".export-", delete=False)
    try:
        with handle:
            # mtime=0 in the gzip header too: the same files give the same bytes.
            with gzip.GzipFile(filename="", mode="wb", fileobj=handle, mtime=0) as compressed:
                with tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as archive:
                    for entry in entries:
                        name = PurePosixPath(entry.relative).relative_to(folder.name)
                        if "__pycache__" in name.parts:
                            continue
                        source, size = open_file(folder.parent, entry.relative)
                        with source:
                            info = tarfile.TarInfo(name.as_posix())
                            info.size, info.mode = size, 0o644
                            archive.addfile(info, source)
        os.replace(handle.name, target)
    finally:
        if os.path.exists(handle.name):
            os.unlink(handle.name)
    return file_export(target)
