"""The one-line-per-epoch metric format on stdout, and the regexes that read it back.

The line is `epoch=3/10 train_loss=0.4120 val_loss=0.3880 val_accuracy=0.9130 val_auc=0.9510`:
names and order are fixed, floats carry four or more decimals or read `nan`. SageMaker's
MetricDefinitions and the executor's log reader both parse it with the regexes below. The module
stands alone (the container has no executor): the executor imports its regexes from here.
"""

from __future__ import annotations

import math
import re

METRIC_NAMES = ("train_loss", "val_loss", "val_accuracy", "val_auc")

# Used only inside a group: the alternation must not leak into the surrounding pattern.
_NUMBER = r"-?[0-9]+\.[0-9]+(?:[eE][-+]?[0-9]+)?|nan"

# The whole line, for readers of the script's own stdout (the executor's local backend).
METRIC_LINE_REGEX = (
    r"^epoch=(?P<epoch>[0-9]+)/(?P<epochs>[0-9]+)"
    + "".join(rf" {name}=(?P<{name}>{_NUMBER})" for name in METRIC_NAMES)
    + r"$"
)

# Any script's metric line as the executor reads it, from the job's output or CloudWatch: `epoch=N/M`
# and name=value pairs of any names (a pipeline's own script may report its own metrics). A launcher
# may prefix each line (torchrun's "[1,0]<stdout>:"), so the line may start anywhere after a
# separator; the pairs must run to the end of the line.
EPOCH_LINE_REGEX = r"(?:^|[\s:>])epoch=(\d+)/(\d+)((?:\s+[A-Za-z_][A-Za-z0-9_.-]*=\S+)*)\s*$"
METRIC_PAIR_REGEX = r"([A-Za-z_][A-Za-z0-9_.-]*)=(\S+)"

# SageMaker MetricDefinitions. Each needs the `epoch=N/M ` token first, so info lines that mention
# a metric never match, but no `^`: a launcher may prefix log lines (MPI writes `[1,0]<stdout>:`).
METRIC_DEFINITIONS: tuple[dict[str, str], ...] = (
    {"Name": "epoch", "Regex": r"\bepoch=([0-9]+)/[0-9]+ "},
    *({"Name": name, "Regex": rf"\bepoch=[0-9]+/[0-9]+ .*\b{name}=({_NUMBER})"} for name in METRIC_NAMES),
)


def format_metric_line(epoch: int, epochs: int, metrics: dict[str, float]) -> str:
    """Format one epoch's metrics as the documented metric line."""
    values = " ".join(f"{name}={_format_number(metrics[name])}" for name in METRIC_NAMES)
    return f"epoch={epoch}/{epochs} {values}"


def parse_metric_line(line: str) -> dict[str, float] | None:
    """Return the metrics of a metric line (epoch included), or None for any other line."""
    match = re.match(METRIC_LINE_REGEX, line.rstrip("\r\n"))
    if match is None:
        return None
    return {name: float(text) for name, text in match.groupdict().items()}


def _format_number(value: float) -> str:
    # A diverged loss (inf) reads as nan: the line's number pattern has no infinity.
    return f"{value:.4f}" if math.isfinite(value) else "nan"
