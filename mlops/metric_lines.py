"""The metric lines training scripts print, e.g. `epoch=3/10 train_loss=0.412 val_accuracy=0.913`.

The local backend parses them from the process output as they appear; the SageMaker backend
parses the same lines from CloudWatch, and its MetricDefinitions use the same names. The format
and its regexes are declared once, beside the scripts that print it (training_scripts/metric_lines.py).
"""
from __future__ import annotations

import math
import re

from training_scripts.metric_lines import EPOCH_LINE_REGEX, METRIC_PAIR_REGEX

EPOCH_LINE = re.compile(EPOCH_LINE_REGEX)
PAIR = re.compile(METRIC_PAIR_REGEX)


def parse_metric_line(line: str) -> tuple[int, int, dict[str, float | None]] | None:
    """Return (epoch, epochs, metrics) for a metric line, None for any other line."""
    match = EPOCH_LINE.search(line.strip())
    if not match:
        return None
    epoch, epochs = int(match.group(1)), int(match.group(2))
    metrics: dict[str, float | None] = {}
    for name, text in PAIR.findall(match.group(3)):
        try:
            value = float(text)
        except ValueError:
            continue
        metrics[name] = None if math.isnan(value) or math.isinf(value) else value
    return epoch, epochs, metrics


def progress_of(epoch: int, epochs: int) -> dict[str, float | int]:
    """Return the progress object for an epoch count."""
    percent = round(100.0 * min(epoch, epochs) / epochs, 1) if epochs > 0 else 0.0
    return {"epoch": epoch, "epochs": epochs, "percent": percent}
