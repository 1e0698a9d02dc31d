"""GPU counts per training instance type, and when a job needs torchrun."""
from __future__ import annotations

import json
from pathlib import Path

import sagemaker.core.image_uris as image_uris

from mlops.sagemaker.gpus import GPU_COUNTS, needs_torchrun
from mlops.sagemaker.validation import training_instance_types


def test_the_table_agrees_with_the_one_aws_maintains_in_sagemaker_core():
    table = json.loads((Path(image_uris.__file__).parent / "image_uri_config" / "instance_gpu_info.json").read_text())
    theirs = {name: info["Count"] for region in table.values() for name, info in region.items()}
    shared = set(theirs) & set(GPU_COUNTS)
    assert len(shared) >= 20
    assert {name: GPU_COUNTS[name] for name in shared} == {name: theirs[name] for name in shared}


def test_every_type_in_the_table_is_a_training_instance_type():
    assert set(GPU_COUNTS) <= training_instance_types()


def test_a_single_multi_gpu_instance_needs_torchrun():
    assert needs_torchrun("ml.g5.12xlarge", 1)
    assert needs_torchrun("ml.p4d.24xlarge", 1)


def test_one_gpu_on_one_instance_runs_plain_python():
    assert not needs_torchrun("ml.g5.xlarge", 1)
    assert not needs_torchrun("ml.m5.xlarge", 1)


def test_several_instances_need_torchrun_whatever_their_gpus():
    assert needs_torchrun("ml.g5.xlarge", 2)
