"""Write scikit-learn's handwritten digits (1,797 real 8x8 scans, shipped inside sklearn) as PNGs.

Runs on the host, not in the training container (which has no sklearn):

    python training_scripts/make_digits_dataset.py OUTDIR [--layout csv|folders] [--limit N]
                                                          [--classes 0,1,7] [--binary] [--repeat N]

`csv` writes `images/digit_00000.png` ... and `metadata.csv` (filename,label); `folders` writes
`<label>/digit_00000.png`. `--binary` labels digit 0 `zero` and every other digit `nonzero`.
`--repeat N` writes every scan N times under distinct names: a larger dataset for benchmarks.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

# The scans store ink intensity as 0..16.
DIGITS_MAX_INTENSITY = 16


def digits_samples(limit: int | None, classes: set[int] | None, binary: bool) -> list[tuple[np.ndarray, str]]:
    """Return (8x8 uint8 image, label) pairs of the digits, filtered, relabelled and truncated."""
    digits = load_digits()
    images = np.rint(digits.images * (255 / DIGITS_MAX_INTENSITY)).astype(np.uint8)
    samples = []
    for image, digit in zip(images, digits.target.tolist()):
        if classes is not None and digit not in classes:
            continue
        label = ("zero" if digit == 0 else "nonzero") if binary else str(digit)
        samples.append((image, label))
    return samples[:limit]


def write_dataset(out_dir: Path, samples: list[tuple[np.ndarray, str]], layout: str) -> None:
    """Write the samples as PNGs under `out_dir`, labelled by metadata.csv or class folders."""
    rows = []
    for number, (image, label) in enumerate(samples):
        name = f"images/digit_{number:05d}.png" if layout == "csv" else f"{label}/digit_{number:05d}.png"
        path = out_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path)
        rows.append((name, label))
    if layout == "csv":
        with (out_dir / "metadata.csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(("filename", "label"))
            writer.writerows(rows)


def main(argv: Sequence[str]) -> int:
    """Parse the command line and write the dataset."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path, help="folder to write (created if missing)")
    parser.add_argument("--layout", choices=("csv", "folders"), default="csv")
    parser.add_argument("--limit", type=int, help="write only the first N images")
    parser.add_argument("--classes", help="comma-separated digits to keep, e.g. 0,1,7")
    parser.add_argument("--binary", action="store_true", help="label digit 0 'zero' and the rest 'nonzero'")
    parser.add_argument("--repeat", type=int, default=1, help="write every scan this many times")
    args = parser.parse_args(argv)
    classes = {int(digit) for digit in args.classes.split(",")} if args.classes else None
    samples = digits_samples(args.limit, classes, args.binary) * args.repeat
    write_dataset(args.out_dir, samples, args.layout)
    print(f"wrote {len(samples)} images to {args.out_dir} ({args.layout} layout)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
