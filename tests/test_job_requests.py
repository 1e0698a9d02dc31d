"""The typed training request: built once from a body, read by attribute, stored as the same text."""
from __future__ import annotations

import json

import pytest

from mlops.errors import InvalidRequest
from mlops.job_requests import TrainingRequest
from mlops.script_contract import BUNDLED_ENTRY_POINT, BUNDLED_SCRIPTS


def test_a_body_becomes_the_stored_request_with_its_defaults_in_their_order(tmp_path):
    (tmp_path / "digits").mkdir()
    request = TrainingRequest.from_body({"name": "t1", "dataset": "digits", "tags": {"team": "a"}}, tmp_path, 600)
    assert request.dataset_path == str(tmp_path / "digits") and request.source_dir == str(BUNDLED_SCRIPTS)
    assert list(request.to_stored()) == ["name", "dataset", "metadata_file", "hyperparameters", "instance_type",
                                         "instance_count", "max_runtime_seconds", "spot", "entry_point", "tags",
                                         "retry_on_restart", "dataset_path", "source_dir"]
    assert request.to_stored()["max_runtime_seconds"] == 600 and request.entry_point == BUNDLED_ENTRY_POINT


def test_an_s3_dataset_has_no_folder(tmp_path):
    request = TrainingRequest.from_body({"name": "t1", "dataset": "s3://bucket/digits/"}, tmp_path, 600)
    assert request.dataset_path is None and "dataset_path" not in request.to_stored()


def test_a_path_out_of_the_dataset_is_refused_by_name(tmp_path):
    (tmp_path / "digits").mkdir()
    with pytest.raises(InvalidRequest, match="metadata_file"):
        TrainingRequest.from_body({"name": "t1", "dataset": "digits", "metadata_file": "../x.csv"}, tmp_path, 600)


def test_a_stored_request_of_any_shape_is_written_back_as_the_same_text():
    stored = {"dataset": "digits", "name": "t-trial-2", "source_dir": "/scripts", "origin": {"project": "p"},
              "hyperparameters": {"epochs": "3"}, "parent": "job-1", "trial": 2}
    request = TrainingRequest.from_stored(json.loads(json.dumps(stored)))
    assert (request.parent, request.trial, request.extra["origin"]) == ("job-1", 2, {"project": "p"})
    assert json.dumps(request.to_stored()) == json.dumps(stored)


def test_a_change_keeps_a_key_in_its_place_and_stores_a_new_one_last():
    request = TrainingRequest.from_stored({"name": "t", "entry_point": "a.py", "dataset": "d", "source_dir": "s"})
    changed = request.with_changes(entry_point="b.py", dataset_path="/d")
    assert list(changed.to_stored().items()) == [("name", "t"), ("entry_point", "b.py"), ("dataset", "d"),
                                                 ("source_dir", "s"), ("dataset_path", "/d")]
    assert request.entry_point == "a.py"  # frozen: the change is a new request


def test_a_stored_request_without_its_dataset_is_refused_by_name():
    with pytest.raises(InvalidRequest, match="dataset"):
        TrainingRequest.from_stored({"name": "t", "source_dir": "s"})


def test_a_tuning_without_its_search_is_refused_by_name():
    with pytest.raises(InvalidRequest, match="tuning"):
        TrainingRequest.from_stored({"dataset": "d", "source_dir": "s"}).search()
