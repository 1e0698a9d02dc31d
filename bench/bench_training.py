"""Benchmark the bundled training script on the digits dataset and print a table.

Each configuration runs training_scripts/train.py as a real process (optionally under torchrun)
with fresh SM_* folders, then reads its history.json. Throughput is the median of the per-epoch
training samples/s, leaving out the first epoch (warm-up: allocator, cuDNN autotuning, workers).

    python bench/bench_training.py                               # CPU, default hyperparameters
    python bench/bench_training.py --num-workers 0,2             # does a DataLoader worker help?
    python bench/bench_training.py --device cuda --amp both      # GPU, mixed precision on and off
    python bench/bench_training.py --device cuda --nproc-per-node 1   # the same under torchrun + DDP
    python bench/bench_training.py --device cuda --num-workers=-1,0,4 --ceiling --digits-copies 20 \
        -- --epochs 4 --image-size 64 --batch-size 256             # against the GPU-resident ceiling

`--ceiling` adds a row that trains the script's model with its optimiser, precision and batch size on
training images already standardised and held on the device, in a bare loop: the most the script
could reach on this model. Every script row then shows its share of it.
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

    feed: str
    device: str
    amp: str
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
    feed = "auto" if num_workers == -1 else f"{num_workers} workers"
    return Result(feed, device, amp, processes, wall, statistics.median(steady), final["val_accuracy"],
                  final["val_auc"], final["epochs"])


def run_ceiling(data: Path, device_name: str, amp: str, train_flags: Sequence[str]) -> Result:
    """Train the script's model, optimiser and precision on batches standardised on the device already."""
    sys.path.insert(0, str(TRAIN.parent))
    import torch
    from cores import torch_threads
    from dataset import load_dataset, split_dataset
    from hyperparameters import parse_hyperparameters
    from model import build_model
    from trainer import Normalizer, Precision

    args = parse_hyperparameters(train_flags)
    torch.set_num_threads(torch_threads())
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-ceiling-") as scratch:
        dataset = load_dataset(data, args.metadata_file, args.image_size, Path(scratch))
    split = split_dataset(dataset, args.val_split, args.seed)
    device = torch.device("cuda" if device_name != "cpu" and torch.cuda.is_available() else "cpu")
    precision = Precision.choose(amp == "on", device)
    mean = torch.tensor(split.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(split.std, device=device).view(1, -1, 1, 1)
    inputs = Normalizer(mean, std, device)(torch.from_numpy(dataset.images[split.train_indices]))
    targets = torch.from_numpy(dataset.targets[split.train_indices]).to(device)
    torch.manual_seed(args.seed)
    model = build_model(dataset.channels, len(dataset.labels)).to(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        model = model.to(memory_format=torch.channels_last)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    rates = []
    for _ in range(args.epochs):
        order = torch.randperm(len(targets), device=device)
        _synchronize(torch, device)
        epoch_started = time.perf_counter()
        for indices in order.split(args.batch_size):
            with precision.autocast():
                loss = torch.nn.functional.cross_entropy(model(inputs[indices]), targets[indices])
            optimizer.zero_grad(set_to_none=True)
            precision.scaler.scale(loss).backward()
            precision.scaler.step(optimizer)
            precision.scaler.update()
        _synchronize(torch, device)
        rates.append(len(targets) / (time.perf_counter() - epoch_started))
    wall = time.perf_counter() - started
    return Result("ceiling", device.type, amp, 0, wall, statistics.median(rates[1:] or rates), float("nan"),
                  None, args.epochs)


def _synchronize(torch, device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_digits(folder: Path, copies: int) -> Path:
    """Write the digits dataset (csv layout, every scan `copies` times) into `folder` and return it."""
    subprocess.run([sys.executable, str(MAKE_DIGITS), str(folder), "--repeat", str(copies)], check=True,
                   stdout=subprocess.DEVNULL)
    return folder


def print_table(results: list[Result]) -> None:
    """Print one row per run, flagging the default-run targets and each run's share of the ceiling."""
    ceilings = {result.amp: result.median_samples_per_second for result in results if result.feed == "ceiling"}
    header = (f"{'feed':<10} {'device':<6} {'amp':<4} {'procs':>5} {'epochs':>6} {'wall s':>7} "
              f"{'samples/s':>10} {'× ceiling':>9} {'val_acc':>8} {'val_auc':>8}  target")
    print(header)
    print("-" * len(header))
    for result in results:
        ceiling = ceilings.get(result.amp)
        share = f"{result.median_samples_per_second / ceiling:.2f}" if ceiling else "-"
        if result.feed == "ceiling":
            quality, target = f"{'-':>8} {'-':>8}", "-"
        else:
            auc = "nan" if result.val_auc is None else f"{result.val_auc:.4f}"
            quality = f"{result.val_accuracy:>8.4f} {auc:>8}"
            meets = result.val_accuracy >= TARGET_ACCURACY and result.wall_seconds < TARGET_SECONDS
            target = "ok" if meets else "MISSED"
        print(f"{result.feed:<10} {result.device:<6} {result.amp:<4} {result.processes or '-':>5} "
              f"{result.epochs:>6} {result.wall_seconds:>7.1f} {result.median_samples_per_second:>10.1f} "
              f"{share:>9} {quality}  {target}")
    print(f"(target: val_accuracy >= {TARGET_ACCURACY} in under {TARGET_SECONDS:.0f} s wall time; "
          "samples/s = training images per second over all processes, median of epochs 2..N; "
          "feed auto = images resident on the device when they fit)")


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
    parser.add_argument("--ceiling", action="store_true",
                        help="add the row of a bare loop over batches held on the device")
    parser.add_argument("--digits-copies", type=int, default=1, help="write every digit this many times")
    parser.add_argument("--json", type=Path, help="also write the results here as JSON")
    parser.add_argument("train_flags", nargs=argparse.REMAINDER,
                        help="extra train.py flags after --, e.g. -- --epochs 5 --image-size 64")
    args = parser.parse_args(argv)
    extra_flags = [flag for flag in args.train_flags if flag != "--"]
    amp_modes = ("on", "off") if args.amp == "both" else (args.amp,)
    worker_counts = [int(count) for count in args.num_workers.split(",")]

    with tempfile.TemporaryDirectory(prefix="bench-digits-") as scratch:
        data = args.data or make_digits(Path(scratch) / "digits", args.digits_copies)
        results = [run_configuration(data, args.device, amp, workers, args.nproc_per_node, extra_flags)
                   for amp, workers, _ in itertools.product(amp_modes, worker_counts, range(args.repeat))]
        if args.ceiling:
            results += [run_ceiling(data, args.device, amp, extra_flags) for amp in amp_modes]
    print_table(results)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([asdict(result) for result in results], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
