"""The executor reads the metric lines the bundled script prints."""
from __future__ import annotations

import json
import re
import subprocess
import sys

from conftest import ROOT
from mlops.metric_lines import parse_metric_line, progress_of


def test_a_metric_line_gives_epoch_progress_and_values():
    parsed = parse_metric_line("epoch=3/10 train_loss=0.4120 val_loss=0.3880 val_accuracy=0.9130 val_auc=nan")
    assert parsed == (3, 10, {"train_loss": 0.412, "val_loss": 0.388, "val_accuracy": 0.913, "val_auc": None})
    assert progress_of(3, 10) == {"epoch": 3, "epochs": 10, "percent": 30.0}


def test_a_launcher_prefix_is_tolerated_and_other_lines_are_not_metrics():
    assert parse_metric_line("[1,0]<stdout>:epoch=1/2 train_loss=0.5")[0:2] == (1, 2)
    for line in ("loading 1797 images", "best epoch=3 of 10", "epoch=x/2 a=1", "myepoch=1/2 a=1", ""):
        assert parse_metric_line(line) is None


def test_the_bundled_scripts_metric_definitions_match_what_the_executor_parses():
    described = json.loads(subprocess.run([sys.executable, "train.py", "--describe"], cwd=ROOT / "training_scripts",
                                          capture_output=True, text=True, check=True).stdout)
    line = "epoch=3/10 train_loss=0.4120 val_loss=0.3880 val_accuracy=0.9130 val_auc=0.9510"
    _, _, parsed = parse_metric_line(line)
    for definition in described["metrics"]:
        match = re.search(definition["Regex"], line)
        assert match, definition
        if definition["Name"] != "epoch":
            assert float(match.group(1)) == parsed[definition["Name"]]
