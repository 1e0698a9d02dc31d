"""The bundled script started by AWS's own training toolkit, as the SageMaker PyTorch training image starts it.

The image runs the `train` console script of `sagemaker-training`, which imports the module named by
SAGEMAKER_TRAINING_MODULE (`sagemaker_pytorch_container.training:main` in the PyTorch images' Dockerfiles,
from `sagemaker-pytorch-training`). The toolkit reads /opt/ml/input/config/*.json (here below
SAGEMAKER_BASE_DIR), unpacks `sagemaker_submit_directory` into /opt/ml/code, turns every other
hyperparameter into a `--name value` flag, and relays the script's stdout line by line: the lines
SageMaker's MetricDefinitions are matched against.

Tuned values are written as SageMaker's tuner writes them for a framework estimator: a continuous or
integer value as its decimal text, a categorical one as one of the range's JSON-encoded `Values`
(sagemaker-python-sdk, `sagemaker/parameter.py` `CategoricalParameter.as_json_range`, used by
`sagemaker/tuner.py` for `Framework` estimators); the static ones as the executor sends them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mlops.sagemaker.training_service import SageMakerJobConfig
from mlops.metric_lines import parse_metric_line
from mlops.sagemaker.dataset_upload import pack_source, source_entries
from mlops.sagemaker.tuning import CHECKPOINTS_PER_JOB
from config import load_config
from mlops.sandbox import sandbox_for
from mlops.script_contract import BUNDLED_ENTRY_POINT, BUNDLED_SCRIPTS, describe
from test_training_script import write_digits

# The PyTorch training images set this (deep-learning-containers, pytorch/training/docker/*/Dockerfile.cpu).
PYTORCH_TRAINING_MODULE = "sagemaker_pytorch_container.training:main"
TUNED = {"learning-rate": "0.0123", "image-size": "12", "lr-decay": json.dumps(0.5)}
STATIC = {"epochs": 2, "batch-size": 16, "checkpoint-dir": None}
TRIAL_NAME = "essedum-tune-0123456789abcdef-003-1a2b3c4d"
TRIAL_ENVIRONMENT = {CHECKPOINTS_PER_JOB: "1"}
# A run takes about 15 s of CPU (two torch imports under torchrun); the bound leaves room for a busy machine.
TOOLKIT_SECONDS = 120


def toolkit_train_command() -> list[str]:
    """Return the toolkit's `train` console script of this interpreter's environment."""
    script = Path(sys.executable).with_name("train")
    assert script.is_file(), "sagemaker-training's `train` entry point is missing: install requirements-dev.txt"
    return [str(script)]


def executor_hyperparameters(instance_type: str, checkpoints: Path, metrics: list[dict[str, str]]) -> dict[str, str]:
    """Return the HyperParameters the executor sends for the bundled script on this instance type."""
    config = SageMakerJobConfig(
        job_name="toolkit-check", role_arn="arn:aws:iam::123456789012:role/executor", instance_type=instance_type,
        image_uri="763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.5-cpu-py311",
        output_s3_uri="s3://bucket/output", entry_point=BUNDLED_ENTRY_POINT,
        source_s3_uri="s3://bucket/code/sourcedir.tar.gz", region="us-east-1",
        hyperparameters={**STATIC, "checkpoint-dir": str(checkpoints)},
        metric_definitions=metrics)
    return config.to_sagemaker_config()["HyperParameters"]


def sagemaker_base_dir(base: Path, hyperparameters: dict[str, str], channel: Path) -> Path:
    """Lay out /opt/ml as SageMaker does before it starts the image, with the code as a local sourcedir."""
    config = base / "input" / "config"
    config.mkdir(parents=True)
    shutil.copytree(channel, base / "input" / "data" / "training")
    source = base / "sourcedir.tar.gz"
    source.write_bytes(pack_source(source_entries(BUNDLED_SCRIPTS)))
    # The toolkit downloads an s3:// sourcedir and unpacks a local one alike; the machine has no S3.
    hyperparameters = {**hyperparameters, "sagemaker_submit_directory": json.dumps(str(source))}
    (config / "hyperparameters.json").write_text(json.dumps(hyperparameters), encoding="utf-8")
    # localhost resolves without DNS; the toolkit looks every host up before it starts.
    (config / "resourceconfig.json").write_text(json.dumps({
        "current_host": "localhost", "hosts": ["localhost"], "current_group_name": "homogeneousCluster",
        "current_instance_type": "ml.m5.xlarge", "network_interface_name": "lo",
        "instance_groups": [{"instance_group_name": "homogeneousCluster", "instance_type": "ml.m5.xlarge",
                             "hosts": ["localhost"]}]}), encoding="utf-8")
    (config / "inputdataconfig.json").write_text(json.dumps({"training": {
        "TrainingInputMode": "File", "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}}),
        encoding="utf-8")
    return base


def run_toolkit(base: Path, **environment: str) -> subprocess.CompletedProcess:
    """Start the toolkit's `train` on a SAGEMAKER_BASE_DIR layout, as the image's entry point."""
    env = {name: value for name, value in os.environ.items()
           if name not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(SAGEMAKER_BASE_DIR=str(base), SAGEMAKER_TRAINING_MODULE=PYTORCH_TRAINING_MODULE, **environment)
    # The toolkit starts `torchrun` by name: the environment's programs come first, as in the image.
    env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", "")))
    return subprocess.run(toolkit_train_command(), env=env, cwd=base, capture_output=True, text=True,
                          timeout=TOOLKIT_SECONDS)


def metric_series(stdout: str, definitions: list[dict[str, str]]) -> dict[str, list[float]]:
    """Apply MetricDefinitions to each relayed line, as SageMaker does to each log line."""
    series: dict[str, list[float]] = {definition["Name"]: [] for definition in definitions}
    for line in stdout.splitlines():
        for definition in definitions:
            match = re.search(definition["Regex"], line)
            if match:
                series[definition["Name"]].append(float(match.group(1)))
    return series


@pytest.fixture(scope="module")
def metrics(tmp_path_factory) -> list[dict[str, str]]:
    """The MetricDefinitions the SageMaker backend sends: the bundled script's own, described in the sandbox."""
    config = load_config(overrides={"data_dir": str(tmp_path_factory.mktemp("data"))})
    return describe(BUNDLED_SCRIPTS, BUNDLED_ENTRY_POINT, sandbox_for(config))["metrics"]


@pytest.fixture(scope="module")
def channel(tmp_path_factory) -> Path:
    return write_digits(tmp_path_factory.mktemp("toolkit") / "channel", 60, binary=True)


@pytest.mark.parametrize("instance_type, hyperparameters, ranks", [
    ("ml.m5.xlarge", {}, 1),
    # A multi-GPU type makes the executor ask for torchrun; on this CPU host the toolkit would start one
    # process (one per GPU), so the toolkit's own processes-per-host parameter asks for two.
    ("ml.g5.12xlarge", {"sagemaker_mpi_num_of_processes_per_host": "2"}, 2),
], ids=["single-process", "torchrun"])
def test_the_toolkit_passes_tuned_values_as_flags_and_the_metric_definitions_read_its_output(
        tmp_path, channel, metrics, instance_type, hyperparameters, ranks):
    sent = executor_hyperparameters(instance_type, tmp_path / "checkpoints", metrics)
    assert (sent.get("sagemaker_torch_distributed_enabled") == "true") == (ranks > 1)
    base = sagemaker_base_dir(tmp_path / "ml", {**sent, **TUNED, **hyperparameters}, channel)

    # A tuning's trial: SageMaker sets TRAINING_JOB_NAME in the container (the toolkit reads it as the
    # job's name: sagemaker-training, params.TRAINING_JOB_ENV), the executor the trials' Environment.
    process = run_toolkit(base, TRAINING_JOB_NAME=TRIAL_NAME, **TRIAL_ENVIRONMENT)

    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-3000:]
    assert (base / "output" / "success").exists()
    if ranks > 1:
        assert "Invoking TorchDistributed" in process.stdout + process.stderr
        assert f"{ranks} process(es)" in process.stdout
    # The script took the tuned values from its command line: they shaped what it wrote.
    # Trials share the tuning's one CheckpointConfig.S3Uri: each keeps its checkpoint in its own folder.
    assert [path.name for path in (tmp_path / "checkpoints").iterdir()] == [TRIAL_NAME]
    checkpoint = torch.load(tmp_path / "checkpoints" / TRIAL_NAME / "checkpoint.pt", weights_only=True)
    assert checkpoint["optimizer"]["param_groups"][0]["initial_lr"] == pytest.approx(0.0123)
    assert checkpoint["scheduler"]["gamma"] == 0.5
    assert json.loads((base / "model" / "labels.json").read_text())["image_size"] == 12
    # What SageMaker would chart, read from the toolkit's relayed stdout, one value per epoch.
    series = metric_series(process.stdout, metrics)
    assert series["epoch"] == [1.0, 2.0]
    assert len(series["val_auc"]) == 2 and all(0.0 <= value <= 1.0 for value in series["val_auc"])
    read_locally = [parsed for parsed in map(parse_metric_line, process.stdout.splitlines()) if parsed]
    assert [metrics["val_auc"] for _, _, metrics in read_locally] == series["val_auc"]
