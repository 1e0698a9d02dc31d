"""Benchmark decoding the training channel: images per second against the number of processes.

Writes the digits (repeated, as the GPU benchmarks use them) as PNGs, then times the training
script's own `load_dataset` with SM_NUM_CPUS set to each process count, beside a plain serial Pillow
loop (open, convert, resize) as the single-core reference. Every run must produce the same bytes.

    python bench/bench_decode.py                          # digits x20, 64 px, 1..all cores
    python bench/bench_decode.py --repeat 1 --image-size 32 --processes 1,2
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "training_scripts"
sys.path.insert(0, str(SCRIPTS))
sys.path.insert(0, str(ROOT / "bench"))

from common import header, table  # noqa: E402
from dataset import load_dataset  # noqa: E402
from make_digits_dataset import digits_samples, write_dataset  # noqa: E402


def serial_pillow(folder: Path, image_size: int) -> np.ndarray:
    """Decode every PNG of the folder with a bare Pillow loop: the single-core reference."""
    arrays = []
    for path in sorted((folder / "images").iterdir()):
        with Image.open(path) as image:
            arrays.append(np.asarray(image.convert("L").resize((image_size, image_size), Image.BILINEAR)))
    return np.stack(arrays)[:, np.newaxis]


def timed(function: Callable[[], np.ndarray], repeats: int) -> tuple[float, np.ndarray]:
    """Return the median seconds of `repeats` calls and the last result."""
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), result


def load_with(folder: Path, image_size: int, processes: int) -> np.ndarray:
    """Run the script's load_dataset as a job with `processes` cores would."""
    os.environ["SM_NUM_CPUS"] = str(processes)
    with tempfile.TemporaryDirectory(prefix="bench-decode-scratch-") as scratch:
        return load_dataset(folder, "metadata.csv", image_size, Path(scratch)).images


def main(argv: Sequence[str]) -> int:
    """Write the dataset, time every process count and print the table."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=20, help="copies of the 1,797 digits")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--processes", default=",".join(str(count) for count in sorted({1, 2, cores // 2, cores} - {0})),
                        help="comma-separated process counts (default: 1, 2, half and all cores)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per row (median)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-decode-") as scratch:
        folder = Path(scratch) / "digits"
        write_dataset(folder, digits_samples(None, None, False) * args.repeat, "csv")
        count = len(list((folder / "images").iterdir()))
        header(f"Decoding {count:,} PNGs to {args.image_size} px")
        reference_seconds, reference = timed(lambda: serial_pillow(folder, args.image_size), args.runs)
        rows = [("serial Pillow loop (reference)", 1, reference_seconds, count / reference_seconds, 1.0, "-", "-")]
        one_process = None
        for processes in (int(text) for text in args.processes.split(",")):
            seconds, images = timed(lambda: load_with(folder, args.image_size, processes), args.runs)
            one_process = one_process or seconds
            rows.append(("load_dataset", processes, seconds, count / seconds, reference_seconds / seconds,
                         f"{one_process / seconds:.2f}", "yes" if np.array_equal(images, reference) else "NO"))
    table(("decoder", "processes", "median s", "images/s", "× serial Pillow", "× 1 process", "same bytes"), rows)
    print(f"median of {args.runs} runs; {cores} usable cores; SM_NUM_CPUS set to the process count")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
