"""The typed requests: built once from a body, read by attribute, stored as the same text."""
from __future__ import annotations

import json

import pytest

from job import PIPELINE, TRAINING
from mlops.errors import InvalidRequest, MalformedRequest
from mlops.job_requests import (AutoMLRequest, DeployRequest, JobRequest, PipelineRequest, TrainingRequest,
                                TransformRequest, request_to_show)
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


RECORD_ORIGIN = {"adapter": "aws-1", "project": "p"}


def test_a_deployment_takes_its_endpoint_from_the_path_and_its_origin_last():
    request = DeployRequest.from_body({"Tags": [{"Key": "team", "Value": "a"}]}, RECORD_ORIGIN, "ep1", "ep1")
    assert request.to_stored() == {"EndpointName": "ep1", "EndpointConfigName": "ep1",
                                   "Tags": [{"Key": "team", "Value": "a"}], "adapter": "aws-1", "project": "p"}
    assert list(request.to_stored()) == ["EndpointName", "EndpointConfigName", "Tags", "adapter", "project"]


def test_a_deployment_named_in_its_body_keeps_those_names_and_stores_no_empty_tags():
    body = {"EndpointName": "other", "EndpointConfigName": "cfg2", "Tags": []}
    request = DeployRequest.from_body(body, RECORD_ORIGIN, "ep1", "ep1")
    assert (request.EndpointName, request.EndpointConfigName, request.Tags) == ("other", "cfg2", None)
    assert "Tags" not in request.to_stored()


def test_a_deployment_without_a_configuration_named_or_its_own_is_refused_by_name():
    with pytest.raises(MalformedRequest, match="EndpointConfigName: is required"):
        DeployRequest.from_body({}, RECORD_ORIGIN, "ep1", None)
    named = DeployRequest.from_body({"EndpointConfigName": "cfg2"}, RECORD_ORIGIN, "ep1", None)
    assert named.EndpointConfigName == "cfg2"


def test_a_transform_keeps_its_body_in_order_with_its_origin_and_sagemakers_other_fields_aside():
    body = {"TransformJobName": "t1", "ModelName": "m1", "BatchStrategy": "MultiRecord",
            "TransformInput": {"DataSource": {"S3DataSource": {"S3Uri": "inputs/a"}}}}
    request = TransformRequest.from_body(body, RECORD_ORIGIN)
    assert json.dumps(request.to_stored()) == json.dumps({**body, **RECORD_ORIGIN})
    assert (request.input_uri, request.adapter, request.extra) == ("inputs/a", "aws-1", {"BatchStrategy": "MultiRecord"})


def test_a_request_without_some_keys_stores_the_others_in_their_order():
    request = TrainingRequest.from_stored({"parent": "job-1", "name": "t", "dataset": "d", "trial": 2,
                                           "source_dir": "s", "origin": {"project": "p"}})
    alone = request.without("parent", "trial", "origin")
    assert list(alone.to_stored().items()) == [("name", "t"), ("dataset", "d"), ("source_dir", "s")]
    assert (alone.parent, alone.trial, alone.extra) == (None, None, {})
    assert request.parent == "job-1"  # frozen: the copy is a new request


def test_a_required_field_cannot_be_left_out():
    with pytest.raises(ValueError, match="dataset"):
        TrainingRequest.from_stored({"dataset": "d", "source_dir": "s"}).without("dataset")


def test_a_row_holding_less_than_its_family_requires_is_shown_bare_with_its_name():
    shown = request_to_show(PIPELINE, {"name": "first", "pid": 7})
    assert type(shown) is JobRequest and shown.name == "first" and shown.extra == {"pid": 7}
    whole = request_to_show(TRAINING, {"name": "t", "dataset": "d", "source_dir": "s"})
    assert isinstance(whole, TrainingRequest) and whole.name == "t"


def test_a_pipeline_and_a_training_are_named_by_their_stored_name():
    pipeline, _ = PipelineRequest.from_body({"bucket": "b", "project_id": "p", "name": "pipe", "version": "1",
                                             "input_artifacts": "in", "command": "python a.py", "storage": "LOCAL",
                                             "credentials": {}})
    assert pipeline.name == "pipe" and pipeline.to_stored()["name"] == "pipe"


ORIGIN = {"adapter": "sagemaker-1", "project": "Demo"}
AUTOML_BODY = {"job_name": "churn-1", "input_data_config": {"s3_uri": "s3://bucket/data/churn.csv"},
               "output_data_config": {"s3_output_path": "s3://bucket/out"}, "target_attribute_name": "churned",
               "problem_type": "BinaryClassification", "objective": {"metric_name": "F1"},
               "tags": [{"Key": "team", "Value": "growth"}]}
TRAIN_BODY = {"RoleArn": "arn:aws:iam::123456789012:role/automl", "Bucket": "bucket", "S3Prefix": "/runs/",
              "inputs": "s3://bucket/data/churn.csv", "target_attribute_name": "churned"}


def test_an_automl_body_becomes_the_request_with_its_defaults_in_the_stored_order():
    request = AutoMLRequest.from_automl_body(AUTOML_BODY, ORIGIN)
    assert (request.input_s3_uri, request.output_s3_path, request.metric_name) == (
        "s3://bucket/data/churn.csv", "s3://bucket/out", "F1")
    # A CSV without a stated content type is read with its header; tags are kept as a map; the origin is kept.
    assert request.content_type == "text/csv;header=present" and request.tags == {"team": "growth"}
    assert request.origin == ORIGIN and request.generate_candidate_definitions_only is False
    assert list(request.to_stored()) == [
        "job_name", "input_s3_uri", "content_type", "output_s3_path", "target_attribute_name", "problem_type",
        "metric_name", "max_candidates", "max_runtime_per_training_job_in_seconds", "total_job_runtime_in_seconds",
        "role_arn", "mode", "tags", "generate_candidate_definitions_only", "origin"]


def test_a_train_body_writes_its_output_under_the_bucket_and_prefix():
    request = AutoMLRequest.from_train_body(TRAIN_BODY, ORIGIN)
    assert request.output_s3_path == "s3://bucket/runs/automl-output"
    assert (request.job_name, request.role_arn, request.tags) == (None, TRAIN_BODY["RoleArn"], {})
    without_prefix = {key: value for key, value in TRAIN_BODY.items() if key != "S3Prefix"}
    assert AutoMLRequest.from_train_body(without_prefix, ORIGIN).output_s3_path == "s3://bucket/automl-output"
    assert list(request.to_stored()) == ["job_name", "input_s3_uri", "output_s3_path", "content_type",
                                         "target_attribute_name", "problem_type", "role_arn", "tags", "origin"]


@pytest.mark.parametrize("name", ["has_underscore", "-starts-with-a-hyphen", "ends-with-a-hyphen-", "x" * 33])
def test_an_automl_name_sagemaker_would_refuse_is_refused_by_name(name):
    with pytest.raises(InvalidRequest) as refused:
        AutoMLRequest.from_automl_body({**AUTOML_BODY, "job_name": name}, ORIGIN)
    assert refused.value.field == "job_name"


def test_an_objective_needs_its_problem_type():
    body = {key: value for key, value in AUTOML_BODY.items() if key != "problem_type"}
    with pytest.raises(InvalidRequest) as refused:
        AutoMLRequest.from_automl_body(body, ORIGIN)
    assert (refused.value.field, refused.value.message) == ("problem_type",
                                                            "is required when objective.metric_name is given")


def test_a_blank_target_column_is_refused():
    with pytest.raises(InvalidRequest) as refused:
        AutoMLRequest.from_automl_body({**AUTOML_BODY, "target_attribute_name": "  "}, ORIGIN)
    assert (refused.value.field, refused.value.message) == ("target_attribute_name", "must name the column to predict")
