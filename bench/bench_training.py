"""Benchmark the bundled training script on the digits dataset and print a table.

Each configuration runs training_scripts/train.py as a real process (optionally under torchrun)
with fresh SM_* folders, then reads its history.json. Throughput is the median of the per-epoch
training samples/s, leaving out the first epoch (warm-up: allocator, cuDNN autotuning, workers).

    python bench/bench_training.py                               # CPU, default hyperparameters
    python bench/bench_training.py --num-workers 0,2             # does a DataLoader worker help?
    python bench/bench_training.py --device cuda --amp both      # GPU, mixed precision on and off
    python bench/bench_training.py --device cuda --nproc-per-node 1   # the same under torchrun + DDP
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parent.parent
TRAIN = ROOT / "training_scripts" / "train.py"
MAKE_DIGITS = ROOT / "training_scripts" / "make_digits_dataset.py"

# The acceptance bar for the default hyperparameters on the digits (see training_scripts/README.md).
TARGET_ACCURACY = 0.97
TARGET_SECONDS = 120.0


@dataclass(frozen=True)
class Result:
    """One benchmarked training run."""

    device: str
    amp: str
    num_workers: int
    processes: int
    wall_seconds: float
    median_samples_per_second: float
    val_accuracy: float
    val_auc: float | None
    epochs: int


def run_configuration(data: Path, device: str, amp: str, num_workers: int, processes: int,
                      extra_flags: Sequence[str]) -> Result:
    """Train once with fresh output folders and return the measurements."""
    with tempfile.TemporaryDirectory(prefix="bench-training-") as scratch:
        work = Path(scratch)
        env = {**os.environ, "SM_CHANNEL_TRAINING": str(data), "SM_MODEL_DIR": str(work / "model"),
               "SM_OUTPUT_DATA_DIR": str(work / "data"), "SM_OUTPUT_DIR": str(work / "output")}
        launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
                    if processes else [sys.executable])
        command = [*launcher, str(TRAIN), "--device", device, "--amp", "true" if amp == "on" else "false",
                   "--num-workers", str(num_workers), "--checkpoint-dir", str(work / "checkpoints"), *extra_flags]
        started = time.perf_counter()
        process = subprocess.run(command, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - started
        if process.returncode != 0:
            raise SystemExit(f"training failed ({' '.join(command)}):\n{process.stdout[-3000:]}{process.stderr[-3000:]}")
        history = json.loads((work / "data" / "history.json").read_text())
        final = json.loads((work / "model" / "metrics.json").read_text())
    steady = [epoch["samples_per_second"] for epoch in history[1:]] or [history[0]["samples_per_second"]]
    return Result(device, amp, num_workers, processes, wall, statistics.median(steady), final["val_accuracy"],
                  final["val_auc"], final["epochs"])


def make_digits(folder: Path) -> Path:
    """Write the full digits dataset (csv layout) into `folder` and return it."""
    subprocess.run([sys.executable, str(MAKE_DIGITS), str(folder)], check=True, stdout=subprocess.DEVNULL)
    return folder


def print_table(results: list[Result]) -> None:
    """Print one row per run, flagging the default-run targets."""
    header = (f"{'device':<6} {'amp':<4} {'workers':>7} {'procs':>5} {'epochs':>6} {'wall s':>7} "
              f"{'samples/s':>10} {'val_acc':>8} {'val_auc':>8}  target")
    print(header)
    print("-" * len(header))
    for result in results:
        meets = result.val_accuracy >= TARGET_ACCURACY and result.wall_seconds < TARGET_SECONDS
        auc = "nan" if result.val_auc is None else f"{result.val_auc:.4f}"
        print(f"{result.device:<6} {result.amp:<4} {result.num_workers:>7} {result.processes or '-':>5} "
              f"{result.epochs:>6} {result.wall_seconds:>7.1f} {result.median_samples_per_second:>10.1f} "
              f"{result.val_accuracy:>8.4f} {auc:>8}  {'ok' if meets else 'MISSED'}")
    print(f"(target: val_accuracy >= {TARGET_ACCURACY} in under {TARGET_SECONDS:.0f} s wall time; "
          "samples/s = training images per second over all processes, median of epochs 2..N)")


def main(argv: Sequence[str]) -> int:
    """Parse the command line, run every configuration and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="training channel to use (default: write the digits)")
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu")
    parser.add_argument("--amp", choices=("on", "off", "both"), default="on",
                        help="mixed precision on CUDA (ignored on the CPU)")
    parser.add_argument("--num-workers", default="-1", help="comma-separated DataLoader worker counts (-1: auto)")
    parser.add_argument("--nproc-per-node", type=int, default=0,
                        help="launch under torchrun with this many processes (0: plain python)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per configuration")
    parser.add_argument("--json", type=Path, help="also write the results here as JSON")
    parser.add_argument("train_flags", nargs=argparse.REMAINDER,
                        help="extra train.py flags after --, e.g. -- --epochs 5 --image-size 64")
    args = parser.parse_args(argv)
    extra_flags = [flag for flag in args.train_flags if flag != "--"]
    amp_modes = ("on", "off") if args.amp == "both" else (args.amp,)
    worker_counts = [int(count) for count in args.num_workers.split(",")]

    with tempfile.TemporaryDirectory(prefix="bench-digits-") as scratch:
        data = args.data or make_digits(Path(scratch) / "digits")
        results = [run_configuration(data, args.device, amp, workers, args.nproc_per_node, extra_flags)
                   for amp, workers, _ in itertools.product(amp_modes, worker_counts, range(args.repeat))]
    print_table(results)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([asdict(result) for result in results], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
