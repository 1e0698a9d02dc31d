"""The metric lines training scripts print, e.g. `epoch=3/10 train_loss=0.412 val_accuracy=0.913`.

The local backend parses them from the process output as they appear; the SageMaker backend
parses the same lines from CloudWatch, and its MetricDefinitions use the same names.
"""
from __future__ import annotations

import math
import re

# A launcher may prefix each line (torchrun's "[1,0]<stdout>:"), so the line may start anywhere
# after a separator; the name=value pairs must run to the end of the line.
EPOCH_LINE = re.compile(r"(?:^|[\s:>])epoch=(\d+)/(\d+)((?:\s+[A-Za-z_][A-Za-z0-9_.-]*=\S+)*)\s*$")
PAIR = re.compile(r"([A-Za-z_][A-Za-z0-9_.-]*)=(\S+)")


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
