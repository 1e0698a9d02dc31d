"""The training script's hyperparameters: declared once, parsed from `--name value` flags.

SageMaker hands every hyperparameter to the entry script as a string flag, so each one has a
declared type, default and range; `describe()` publishes the same table so the executor can
reject a bad request before it pays for an instance.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

TRUE_WORDS = ("true", "1")
FALSE_WORDS = ("false", "0")


class HyperparameterError(ValueError):
    """A flag is unknown or its value is malformed or out of range."""


@dataclass(frozen=True)
class Hyperparameter:
    """One hyperparameter: its flag name, type, default, range and help text."""

    name: str
    type: type
    default: Any
    help: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] | None = None

    @property
    def attribute(self) -> str:
        """Return the attribute name the parsed namespace uses."""
        return self.name.replace("-", "_")

    def describe(self) -> dict[str, Any]:
        """Return this hyperparameter as the JSON object `--describe` prints."""
        description: dict[str, Any] = {
            "type": self.type.__name__,
            "default": self.default,
            "help": self.help,
        }
        if self.minimum is not None:
            description["minimum"] = self.minimum
        if self.maximum is not None:
            description["maximum"] = self.maximum
        if self.choices is not None:
            description["choices"] = list(self.choices)
        return description

    def convert(self, text: str) -> Any:
        """Convert a flag's text to this hyperparameter's type and check its range."""
        value = _CONVERTERS[self.type](text)
        if self.minimum is not None and value < self.minimum:
            raise argparse.ArgumentTypeError(f"{text} is below the minimum {self.minimum}")
        if self.maximum is not None and value > self.maximum:
            raise argparse.ArgumentTypeError(f"{text} is above the maximum {self.maximum}")
        if self.choices is not None and value not in self.choices:
            raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(self.choices)}")
        return value


def _to_bool(text: str) -> bool:
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not a boolean (true, false, 1 or 0)")


def _to_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def _to_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


_CONVERTERS: dict[type, Callable[[str], Any]] = {int: _to_int, float: _to_float, str: str, bool: _to_bool}

HYPERPARAMETERS: tuple[Hyperparameter, ...] = (
    Hyperparameter("epochs", int, 12, "Passes over the training split.", 1, 1000),
    Hyperparameter("batch-size", int, 64, "Images per optimizer step on each process.", 1, 4096),
    Hyperparameter("learning-rate", float, 0.002, "AdamW learning rate.", 1e-6, 1.0),
    Hyperparameter("weight-decay", float, 0.0001, "AdamW weight decay.", 0.0, 1.0),
    Hyperparameter(
        "lr-decay", float, 0.8,
        "Learning-rate factor applied after every epoch (1 keeps it constant).", 0.01, 1.0,
    ),
    Hyperparameter("image-size", int, 32, "Images are resized to image-size x image-size pixels.", 8, 512),
    Hyperparameter("val-split", float, 0.2, "Share of each class held out for validation.", 0.05, 0.5),
    Hyperparameter("seed", int, 42, "Seed for the split, initialisation and shuffling.", 0, 2**31 - 1),
    Hyperparameter(
        "metadata-file", str, "metadata.csv",
        "CSV with columns filename,label in the training channel; without it, class sub-folders.",
    ),
    Hyperparameter(
        "checkpoint-dir", str, "/opt/ml/checkpoints",
        "Folder for the per-epoch checkpoint; training resumes from it when present.",
    ),
    Hyperparameter(
        "num-workers", int, -1,
        "DataLoader worker processes per process; -1 keeps the training images on the device when they fit "
        "(else batches from this process, pinned on a GPU).", -1, 64,
    ),
    Hyperparameter("amp", bool, True, "Mixed precision (bf16, or fp16 with loss scaling) on CUDA."),
    Hyperparameter("device", str, "auto", "Where to train: auto picks CUDA when present.",
                   choices=("auto", "cpu", "cuda")),
)


class _RaisingParser(argparse.ArgumentParser):
    """An ArgumentParser that raises instead of printing usage and exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise HyperparameterError(message)


def build_parser() -> argparse.ArgumentParser:
    """Build the parser of train.py's flags from the hyperparameter table."""
    # Abbreviations would let a typo such as --epoch pass as --epochs.
    parser = _RaisingParser(prog="train.py", allow_abbrev=False,
                            description="Train a small image classifier under the SageMaker contract.")
    parser.add_argument("--describe", action="store_true",
                        help="Print the hyperparameters and metric definitions as JSON and exit.")
    for hyperparameter in HYPERPARAMETERS:
        # SageMaker users often spell hyperparameters with underscores; accept both.
        flags = dict.fromkeys([f"--{hyperparameter.name}", f"--{hyperparameter.attribute}"])
        parser.add_argument(*flags, dest=hyperparameter.attribute, type=hyperparameter.convert,
                            default=hyperparameter.default, help=hyperparameter.help,
                            metavar=hyperparameter.type.__name__.upper())
    return parser


def parse_hyperparameters(argv: Sequence[str]) -> argparse.Namespace:
    """Parse train.py's command line, raising HyperparameterError on a bad flag."""
    return build_parser().parse_args(list(argv))


def describe_hyperparameters() -> dict[str, dict[str, Any]]:
    """Return the table as the `hyperparameters` object of `--describe`."""
    return {hyperparameter.name: hyperparameter.describe() for hyperparameter in HYPERPARAMETERS}
