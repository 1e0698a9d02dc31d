"""SageMaker request fields are refused before any AWS call, each error naming its field."""
from __future__ import annotations

import json

import botocore.session
import pytest
from botocore.validate import ParamValidator

from api import status_of
from mlops.sagemaker import validation as v
from mlops.sagemaker.training_service import SageMakerJobConfig, training_job_name
from mlops.errors import InvalidRequest, SageMakerConfigurationError, SageMakerError

ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.5-gpu-py311"
SPECIAL = "a b;$(rm -rf /)`|&<>\"'\\é\n"


def job_config(**changes):
    values = dict(job_name="essedum-digits-0123456789abcdef01234567", role_arn=ROLE, image_uri=IMAGE,
                  instance_type="ml.g5.xlarge", input_data_s3_uri="s3://bucket-a/datasets/abc/",
                  output_s3_uri="s3://bucket-a/jobs/1/output", hyperparameters={"epochs": "3"},
                  entry_point="train.py", source_s3_uri="s3://bucket-a/code/abc/sourcedir.tar.gz",
                  region="us-east-1", metric_definitions=[{"Name": "train_loss", "Regex": "train_loss=(\\S+)"}],
                  tags={"team": "vision"})
    values.update(changes)
    return SageMakerJobConfig(**values)


def field_of(call, *args):
    with pytest.raises(InvalidRequest) as raised:
        call(*args)
    return raised.value.field


def test_an_invalid_field_is_both_a_4xx_naming_it_and_a_configuration_error():
    with pytest.raises(v.InvalidSageMakerField) as raised:
        v.validate_job_name("", "job_name")
    assert isinstance(raised.value, InvalidRequest) and status_of(raised.value) == 422
    assert isinstance(raised.value, SageMakerConfigurationError) and isinstance(raised.value, SageMakerError)
    assert raised.value.field == "job_name"


@pytest.mark.parametrize("name", ["", "has_underscore", "has.dot", "-leading", "trailing-", "x" * 64, SPECIAL])
def test_bad_sagemaker_job_names_are_refused(name):
    assert field_of(v.validate_job_name, name, "sagemaker_job_name") == "sagemaker_job_name"


def test_derived_job_names_are_valid_stable_and_short_whatever_the_request_name():
    job_id = "5f0c6a8e-2a44-4c51-9a51-1f1d2b3c4d5e"
    for name in ["digits run", SPECIAL, "", "ü" * 300, "--", "a" * 500]:
        derived = training_job_name(job_id, name)
        assert v.JOB_NAME.match(derived) and len(derived) <= 63
        assert derived == training_job_name(job_id, name)
        assert derived.endswith("5f0c6a8e2a444c519a511f1d")
    assert training_job_name(job_id, "digits run") == "essedum-digits-r-5f0c6a8e2a444c519a511f1d"


@pytest.mark.parametrize("arn", ["", "arn:aws:iam::123:role/x", "arn:aws:iam::123456789012:user/x",
                                 "arn:aws:iam::123456789012:role/has space", SPECIAL])
def test_bad_role_arns_are_refused(arn):
    assert field_of(v.validate_role_arn, arn, "role_arn") == "role_arn"


@pytest.mark.parametrize("name", ["", "has space", "semi;colon", "x" * 65, SPECIAL])
def test_bad_role_names_are_refused(name):
    assert field_of(v.validate_role_name, name, "role_name") == "role_name"


@pytest.mark.parametrize("bucket", ["", "ab", "Upper", "under_score", "a..b", "192.168.1.1", "xn--abc",
                                    "bucket-s3alias", "-start", "end-", SPECIAL])
def test_bad_bucket_names_are_refused(bucket):
    assert field_of(v.validate_bucket_name, bucket, "s3_bucket") == "s3_bucket"


@pytest.mark.parametrize("uri", ["", "s3://", "http://bucket/key", "s3://UPPER/key", "s3://bucket/a\\b",
                                 "s3://bucket/a#b", "s3://bucket//x", "s3://bucket/" + "k" * 1020, SPECIAL])
def test_bad_s3_uris_are_refused(uri):
    assert field_of(v.validate_s3_uri, uri, "s3_output_uri") == "s3_output_uri"


def test_a_good_s3_uri_gives_bucket_and_key():
    assert v.validate_s3_uri("s3://bucket-a/some/prefix/", "x") == ("bucket-a", "some/prefix/")


@pytest.mark.parametrize("key", ["date=2026-01-01/part+1,2.csv", "my data/file (1).csv", "a@b:c;d&e$f?g.csv",
                                 "données/é.csv"])
def test_keys_with_characters_s3_takes_are_accepted(key):
    # S3's object key guide: any UTF-8; & $ @ = ; : + , ? and space need special handling but are valid.
    assert v.validate_s3_uri(f"s3://bucket-a/{key}", "x") == ("bucket-a", key)


def test_keys_are_joined_without_empty_segments():
    assert v.s3_key("", "jobs", "1") == "jobs/1"
    assert v.s3_key("/team/", "jobs/", "1") == "team/jobs/1"


@pytest.mark.parametrize("prefix", ["a#b", "a\\b", "a/../b", "a//b", "a{b}", SPECIAL])
def test_bad_s3_prefixes_are_refused(prefix):
    assert field_of(v.validate_s3_prefix, prefix, "s3_prefix") == "s3_prefix"


def test_an_empty_s3_prefix_means_the_bucket_root_and_slashes_are_trimmed():
    assert v.validate_s3_prefix("", "s3_prefix") == ""
    assert v.validate_s3_prefix("/team/runs/", "s3_prefix") == "team/runs"


@pytest.mark.parametrize("image", ["", "UPPER/repo:tag", "repo:tag with space", "repo@sha256:zz", SPECIAL])
def test_bad_image_uris_are_refused(image):
    assert field_of(v.validate_image_uri, image, "image_uri") == "image_uri"


def test_instance_types_come_from_botocores_service_model():
    model = botocore.session.get_session().get_service_model("sagemaker")
    assert v.training_instance_types() == frozenset(model.shape_for("TrainingInstanceType").enum)
    assert v.validate_instance_type("ml.g5.xlarge") == "ml.g5.xlarge"
    assert field_of(v.validate_instance_type, "ml.g5.huge", "instance_type") == "instance_type"
    assert field_of(v.validate_instance_type, "ml.m5.large ", "configs.instance_type") == "configs.instance_type"


@pytest.mark.parametrize("call, value", [
    (v.validate_instance_count, 0), (v.validate_instance_count, True), (v.validate_instance_count, "2"),
    (v.validate_max_runtime, 0), (v.validate_max_runtime, 28 * 24 * 3600 + 1), (v.validate_volume_size, 0)])
def test_counts_and_limits_are_checked(call, value):
    with pytest.raises(InvalidRequest):
        call(value)


def test_hyperparameter_map_limits_come_from_botocore():
    assert field_of(v.validate_hyperparameter_map, {str(i): "1" for i in range(101)}) == "hyperparameters"
    assert field_of(v.validate_hyperparameter_map, {"x": "y" * 2501}) == "hyperparameters.x"
    assert field_of(v.validate_hyperparameter_map, {"x": 1}) == "hyperparameters.x"


def test_a_bad_environment_entry_is_named_without_echoing_its_value():
    with pytest.raises(InvalidRequest) as raised:
        v.validate_environment({"1BAD": "topsecret-value"})
    assert "topsecret-value" not in str(raised.value)
    with pytest.raises(InvalidRequest) as raised:
        v.validate_environment({"TOKEN": "s" * 513})
    assert raised.value.field == "environment.TOKEN" and "sss" not in str(raised.value)


def test_tags_are_checked_with_room_for_the_executors_own():
    assert field_of(v.validate_tags, {"aws:owner": "x"}) == "tags"
    assert field_of(v.validate_tags, {"ok": "semi;colon"}) == "tags.ok"
    with pytest.raises(InvalidRequest):
        v.validate_tags({str(i): "v" for i in range(49)}, reserved=2)
    assert v.validate_tags({"team": "vision", "cost center": "a/b:c"}) == {"team": "vision", "cost center": "a/b:c"}


def test_metric_definitions_must_compile():
    assert field_of(v.validate_metric_definitions, [{"Name": "x", "Regex": "("}]) == "metric_definitions"
    assert field_of(v.validate_metric_definitions, [{"Name": "x", "Regex": "a"}] * 41) == "metric_definitions"


def test_the_job_config_becomes_a_create_training_job_request_botocore_accepts():
    request = job_config(instance_count=2, spot=True, max_runtime_seconds=3600, max_wait_seconds=7200,
                         checkpoint_s3_uri="s3://bucket-a/jobs/1/checkpoints",
                         environment_variables={"MY_FLAG": "1"}).to_sagemaker_config()
    shape = botocore.session.get_session().get_service_model("sagemaker").operation_model(
        "CreateTrainingJob").input_shape
    report = ParamValidator().validate(request, shape)
    assert not report.has_errors(), report.generate_report()
    hyperparameters = request["HyperParameters"]
    # JSON-encoded, as the SageMaker SDK sends them to framework containers
    assert hyperparameters["epochs"] == '"3"'
    assert hyperparameters["sagemaker_program"] == '"train.py"'
    assert hyperparameters["sagemaker_submit_directory"] == '"s3://bucket-a/code/abc/sourcedir.tar.gz"'
    assert hyperparameters["sagemaker_torch_distributed_enabled"] == "true"
    assert request["EnableManagedSpotTraining"] is True
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200}
    assert request["CheckpointConfig"] == {"S3Uri": "s3://bucket-a/jobs/1/checkpoints", "LocalPath": "/opt/ml/checkpoints"}
    assert request["InputDataConfig"][0]["ChannelName"] == "training"
    assert request["AlgorithmSpecification"]["MetricDefinitions"] == [{"Name": "train_loss", "Regex": "train_loss=(\\S+)"}]
    assert request["ResourceConfig"]["InstanceCount"] == 2


@pytest.mark.parametrize("instance_type, count, distributed", [
    ("ml.g5.12xlarge", 1, True),    # 4 GPUs on one instance: torchrun, else 1 of 4 is used
    ("ml.p4d.24xlarge", 1, True),
    ("ml.g5.xlarge", 2, True),
    ("ml.g5.xlarge", 1, False)])
def test_torchrun_whenever_more_than_one_gpu_or_instance(instance_type, count, distributed):
    hyperparameters = job_config(instance_type=instance_type, instance_count=count).to_sagemaker_config()[
        "HyperParameters"]
    assert ("sagemaker_torch_distributed_enabled" in hyperparameters) is distributed


def test_the_job_names_itself_and_keeps_its_metrics_as_time_series():
    request = job_config().to_sagemaker_config()
    assert request["HyperParameters"]["sagemaker_job_name"] == json.dumps(request["TrainingJobName"])
    assert request["AlgorithmSpecification"]["EnableSageMakerMetricsTimeSeries"] is True


def test_one_instance_is_not_distributed_and_on_demand_has_no_wait_time():
    request = job_config().to_sagemaker_config()
    assert "sagemaker_torch_distributed_enabled" not in request["HyperParameters"]
    assert "EnableManagedSpotTraining" not in request and "CheckpointConfig" not in request
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 86400}


@pytest.mark.parametrize("changes, field", [
    ({"job_name": ""}, "job_name"), ({"job_name": SPECIAL}, "job_name"),
    ({"role_arn": ""}, "role_arn"), ({"role_arn": SPECIAL}, "role_arn"),
    ({"image_uri": ""}, "image_uri"), ({"image_uri": SPECIAL}, "image_uri"),
    ({"input_data_s3_uri": SPECIAL}, "input_data_s3_uri"),
    ({"output_s3_uri": ""}, "output_s3_uri"), ({"output_s3_uri": SPECIAL}, "output_s3_uri"),
    ({"instance_type": "ml.nope.large"}, "instance_type"),
    ({"hyperparameters": {"sagemaker_program": "x.py"}}, "hyperparameters.sagemaker_program"),
    ({"spot": True, "max_wait_seconds": 10, "checkpoint_s3_uri": "s3://bucket-a/c"}, "max_wait_seconds"),
    ({"spot": True, "max_wait_seconds": 90000, "checkpoint_s3_uri": None}, "checkpoint_s3_uri"),
])
def test_the_job_config_refuses_each_bad_field_by_name(changes, field):
    assert field_of(job_config(**changes).to_sagemaker_config) == field
