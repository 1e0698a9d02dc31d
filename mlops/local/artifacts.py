"""A local job's output files: listed without following links, redacted, and served within bounds.

The files are the job's: any of them may be a link to /etc/passwd or to the job database, a FIFO,
or one of thousands of large files. Only regular files are listed (mlops.job_files), only small
text files are served inline, and one answer holds at most INLINE_TOTAL_BYTES of content.
"""
from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any, Callable

from mlops import job_outputs
from mlops.job_files import read_bounded, write_bytes
from mlops.job_outputs import MAX_LISTED_FILES

OUTPUT_FOLDERS = ("model", "output/data")
INLINE_FILE_BYTES = 64 << 10
INLINE_TOTAL_BYTES = 1 << 20


def list_outputs(root: Path) -> dict[str, Any]:
    """Return the artifacts record of a job folder: its output folders and up to MAX_LISTED_FILES files."""
    listing = job_outputs.list_outputs(root, OUTPUT_FOLDERS)
    artifacts: dict[str, Any] = {"model_dir": str(root / "model"), "output_data_dir": str(root / "output" / "data"),
                                 "files": [item.path for item in listing.files]}
    if listing.truncated:
        artifacts["files_left_out"] = f"more than {MAX_LISTED_FILES} files; only the first are listed"
    return artifacts


def _inline_candidates(root: Path, files: list[str]) -> list[tuple[str, bytes | None, int]]:
    """Return (relative path, content or None, size) for each listed file still a regular file."""
    found, budget = [], INLINE_TOTAL_BYTES
    for relative in files[:MAX_LISTED_FILES]:
        try:
            data, size = read_bounded(root, relative, min(INLINE_FILE_BYTES, budget))
        except OSError:
            continue  # gone, or no longer a regular file: not served
        inline = size <= min(INLINE_FILE_BYTES, budget)
        if inline:
            budget -= size
        found.append((relative, data if inline else None, size))
    return found


def redact_outputs(root: Path, files: list[str], redact: Callable[[str], str]) -> int:
    """Rewrite the small text files the API would serve with the job's secrets removed; return how many."""
    rewritten = 0
    for relative, data, _size in _inline_candidates(root, files):
        text = _text(data)
        if text is None:
            continue
        clean = redact(text)
        if clean != text:
            write_bytes(root, relative, clean.encode("utf-8"))
            rewritten += 1
    return rewritten


def read_outputs(root: Path, files: list[str]) -> dict[str, Any]:
    """Return {file stem: {path, size, content[, note]}}: content inline for small text files only."""
    result: dict[str, Any] = {}
    for relative, data, size in _inline_candidates(root, files):
        path = PurePosixPath(relative)
        entry: dict[str, Any] = {"path": path.name, "size": size, "content": None}
        text = _text(data)
        if data is None:
            entry["note"] = (f"larger than {INLINE_FILE_BYTES} bytes, or over this answer's "
                             f"{INLINE_TOTAL_BYTES} bytes of content; fetch it from the job folder")
        elif text is None:
            entry["note"] = "binary file"
        else:
            entry["content"] = _parsed(text) if path.suffix == ".json" else text
        result[path.stem if path.stem not in result else relative] = entry
    return result


def _text(data: bytes | None) -> str | None:
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _parsed(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text
