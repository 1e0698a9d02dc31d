"""What the data folder keeps: the files of jobs that ended long ago go (EXECUTOR_RETENTION_DAYS); its size, now and then.

A job that ended before the cut-off loses its staged inputs, code, checkpoints, model and outputs;
its record, events, metrics and the tail of its log stay, and its details say what was removed and
when. Kept whatever their age: registered models (copies of their own under the storage root), and
every job a waiting or running job names (a rerun's source, a model being copied from it).
"""
from __future__ import annotations

import logging
import os
import re
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from job import FINAL_STATUSES, Job, JobStatus
from mlops.aws_statuses import CREATING
from mlops.job_files import UnsafeFile, read_tail, remove_tree, write_bytes
from mlops.records import MODEL

logger = logging.getLogger(__name__)

DAY_SECONDS = 86400
# What stays of a cleaned job's log: its last lines, where a failure says why.
LOG_TAIL_KEPT_BYTES = 64 << 10
# How often the service sweeps when EXECUTOR_RETENTION_DAYS is set.
SWEEP_INTERVAL_S = 3600.0
# The data folder's size is measured at most this often: a walk of a large folder takes a while.
SIZE_MAX_AGE_S = 60.0
CLEANED_DETAIL = "files_removed"
_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([dhm]?)\s*$")
_AGE_UNITS = {"d": DAY_SECONDS, "": DAY_SECONDS, "h": 3600, "m": 60}


@dataclass(frozen=True)
class Cleaned:
    """One ended job whose files were (or, in a dry run, would be) removed, and the bytes that frees."""

    job_id: str
    finished: float
    freed_bytes: int


def parse_age(text: str) -> float:
    """Read an age such as 30d, 12h, 90m or 30 (days) as seconds; ValueError when it is none."""
    match = _AGE.match(text)
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"{text!r} is not an age such as 30d, 12h or 90m")
    return float(match.group(1)) * _AGE_UNITS[match.group(2)]


def clean_ended_jobs(store: Any, older_than_s: float, *, dry_run: bool = False,
                     clock: Callable[[], float] = time.time) -> list[Cleaned]:
    """Remove the files of jobs that ended more than older_than_s ago; return what was (or would be) removed."""
    cutoff = clock() - older_than_s
    needed = jobs_still_needed(store)
    cleaned = []
    for job in _ended_before(store, cutoff):
        if job.id in needed or job.details.get(CLEANED_DETAIL):
            continue
        folder = Path(job.output_dir)
        if not folder.is_dir():
            continue
        entries = [entry for entry in _entries(folder) if entry != Path(job.log_path)]
        freed = sum(_freed_bytes(entry) for entry in entries)
        if not dry_run:
            for entry in entries:
                remove_tree(entry)
            _keep_log_tail(Path(job.log_path))
            store.merge_details(job.id, **{CLEANED_DETAIL: {"time": clock(), "bytes": freed}})
            logger.info("job %s ended %s: removed its files (%d bytes)", job.id,
                        time.strftime("%Y-%m-%d", time.gmtime(job.finished)), freed)
        cleaned.append(Cleaned(job.id, job.finished, freed))
    return cleaned


def jobs_still_needed(store: Any) -> set[str]:
    """Return the ids of jobs that a waiting or running job, or a model being copied, names."""
    needed: set[str] = set()
    for status in (JobStatus.WAITING, JobStatus.RUNNING):
        for job in store.jobs_in_status(status):
            needed.update(_strings(job.request))
            needed.update(_strings(job.details))
    for record in store.list_records(MODEL):
        if record.status == CREATING and record.payload.get("training_job"):
            needed.add(record.payload["training_job"])
    return needed


def _ended_before(store: Any, cutoff: float) -> Iterator[Job]:
    for status in sorted(FINAL_STATUSES, key=lambda item: item.value):
        for job in store.jobs_in_status(status):
            if job.finished is not None and job.finished < cutoff:
                yield job


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)


def _entries(folder: Path) -> list[Path]:
    with os.scandir(folder) as listing:
        return [Path(entry.path) for entry in listing]


def _freed_bytes(path: Path) -> int:
    # Only a file's last name frees its blocks: a dataset snapshot's hard links free nothing.
    return sum(info.st_blocks * 512 for info in _stats(path) if stat.S_ISDIR(info.st_mode) or info.st_nlink == 1)


def _stats(path: Path) -> Iterator[os.stat_result]:
    try:
        info = os.lstat(path)
    except OSError:
        return
    yield info
    if stat.S_ISDIR(info.st_mode):
        for folder, folders, files in os.walk(path):
            for name in (*folders, *files):
                try:
                    yield os.lstat(os.path.join(folder, name))
                except OSError:
                    continue


def _keep_log_tail(log: Path) -> None:
    try:
        tail, size = read_tail(log.parent, log.name, LOG_TAIL_KEPT_BYTES)
    except (FileNotFoundError, UnsafeFile):
        return
    if size > len(tail):
        cut = tail.find(b"\n") + 1  # from the first whole line on
        write_bytes(log.parent, log.name, b"[executor] earlier lines removed by retention\n" + tail[cut:])


def folder_size(folder: Path) -> int:
    """Return the bytes a folder takes on disk, links not followed, each hard-linked file counted once."""
    used, seen = 0, set()
    for info in _stats(folder):
        if info.st_nlink > 1 and not stat.S_ISDIR(info.st_mode):
            if (info.st_dev, info.st_ino) in seen:
                continue
            seen.add((info.st_dev, info.st_ino))
        used += info.st_blocks * 512
    return used


class FolderSize:
    """A folder's size measured at most once a minute; readers between measurements get the last one."""

    def __init__(self, folder: Path, max_age_s: float = SIZE_MAX_AGE_S, clock: Callable[[], float] = time.monotonic):
        self.folder = folder
        self.max_age_s = max_age_s
        self._clock = clock
        self._lock = threading.Lock()
        self._measured: tuple[float, int] | None = None

    def bytes(self) -> int:
        """Return the folder's size; measure it when the last measurement is older than max_age_s."""
        measured = self._measured
        if measured is not None and self._clock() - measured[0] < self.max_age_s:
            return measured[1]
        # One walk at a time: a scrape that arrives meanwhile answers the last figure, if there is one.
        if not self._lock.acquire(blocking=measured is None):
            return measured[1]  # type: ignore[index]
        try:
            if self._measured is None or self._clock() - self._measured[0] >= self.max_age_s:
                self._measured = (self._clock(), folder_size(self.folder))
            return self._measured[1]
        finally:
            self._lock.release()


class RetentionSweeper:
    """Cleans jobs that ended more than EXECUTOR_RETENTION_DAYS ago, at start and then once an hour."""

    def __init__(self, store: Any, retention_days: float, interval_s: float = SWEEP_INTERVAL_S):
        self.store = store
        self.older_than_s = retention_days * DAY_SECONDS
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="retention", daemon=True)

    def start(self) -> None:
        """Start sweeping in a thread of its own."""
        self._thread.start()

    def stop(self) -> None:
        """Stop sweeping; a sweep under way ends first."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                cleaned = clean_ended_jobs(self.store, self.older_than_s)
                if cleaned:
                    logger.info("retention: removed the files of %d ended job(s), %d bytes", len(cleaned),
                                sum(item.freed_bytes for item in cleaned))
            except Exception:  # a sweep that fails is tried again at the next interval
                logger.exception("retention sweep failed")
            self._stop.wait(self.interval_s)


def describe(cleaned: Iterable[Cleaned], dry_run: bool) -> str:
    """Say in one line what a clean removed, or would remove."""
    cleaned = list(cleaned)
    verb = "would remove" if dry_run else "removed"
    total = sum(item.freed_bytes for item in cleaned)
    return f"{verb} the files of {len(cleaned)} ended job(s), {total / 2**20:.1f} MiB"
