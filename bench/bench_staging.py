"""Staging a local job's dataset: a snapshot (hard links) against the full copy every job used to make.

    python bench/bench_staging.py [--megabytes 1024] [--files 1000] [--jobs 3] [--folder PATH]

Writes a dataset of `files` incompressible files in a folder on the disk that holds `--folder` (default:
a temporary folder), then stages it into job channel folders beside it with mlops.job_files.snapshot_tree
as the local backend does (every file may be linked: a sandboxed job), and once with copy_tree. Prints
each staging's wall time and the bytes it added to the disk (blocks of inodes the dataset does not own).
Goal: a 1 GB dataset staged in at most 1 s, and the trials of a tuning adding no dataset bytes.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from common import header, table

from mlops.job_files import copy_tree, snapshot_tree


def write_dataset(folder: Path, files: int, total_bytes: int) -> int:
    """Write `files` files of random bytes adding up to total_bytes; return the total written."""
    (folder / "images").mkdir(parents=True)
    size = total_bytes // files
    written = 0
    for number in range(files):
        with open(folder / "images" / f"image_{number:06d}.png", "wb") as handle:
            handle.write(os.urandom(size))
        written += size
    (folder / "metadata.csv").write_text("filename,label\n" + "".join(
        f"images/image_{number:06d}.png,{number % 2}\n" for number in range(files)))
    os.sync()
    return written


def new_bytes(source: Path, dest: Path) -> int:
    """Return the disk blocks of dest's files that are not the source's own inodes (the disk's free space
    is no measure here: other writers share the disk)."""
    shared = {os.stat(path).st_ino for path in source.rglob("*") if path.is_file()}
    return sum(info.st_blocks * 512 for info in (os.stat(path) for path in dest.rglob("*") if path.is_file())
               if info.st_ino not in shared)


def staged(place, source: Path, dest: Path) -> tuple[float, int, str]:
    """Return the seconds a staging took, the bytes it added to the disk and how it placed the files."""
    started = time.perf_counter()
    result = place(source, dest)
    seconds = time.perf_counter() - started
    how = result.describe() if hasattr(result, "describe") else f"copy: {len(result.files)}"
    return seconds, new_bytes(source, dest), how


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--megabytes", type=int, default=1024)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=3, help="snapshots of the same dataset (trials of a tuning)")
    parser.add_argument("--folder", type=Path, help="where to write (default: a temporary folder)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-staging-", dir=args.folder))
    try:
        source = work / "storage" / "dataset"
        total = write_dataset(source, args.files, args.megabytes << 20)
        header(f"Staging a dataset of {args.files:,} files, {total / 2**30:.2f} GiB")
        rows = []
        for job in range(args.jobs):
            seconds, added, how = staged(lambda s, d: snapshot_tree(s, d, 1 << 40, lambda _info: True),
                                         source, work / "jobs" / f"trial-{job}" / "training")
            rows.append((f"snapshot, job {job + 1}", how, seconds, added / 2**20))
        seconds, added, how = staged(lambda s, d: copy_tree(s, d, 1 << 40), source, work / "jobs" / "copy" / "training")
        rows.append(("full copy (before)", how, seconds, added / 2**20))
        table(("staging", "files placed", "seconds", "disk added (MiB)"), rows)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
