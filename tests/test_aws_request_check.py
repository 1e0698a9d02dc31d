"""The suite's AWS request check refuses what AWS would refuse, even where moto accepts it."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

import aws_request_check
from aws_fixtures import BUCKET, IMAGE, ROLE_ARN, aws, clients  # noqa: F401 - fixtures


def _training_request(**changes):
    request = {"TrainingJobName": "essedum-check-1", "RoleArn": ROLE_ARN,
               "AlgorithmSpecification": {"TrainingImage": IMAGE, "TrainingInputMode": "File"},
               "OutputDataConfig": {"S3OutputPath": f"s3://{BUCKET}/out"},
               "ResourceConfig": {"InstanceType": "ml.g5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
               "StoppingCondition": {"MaxRuntimeInSeconds": 3600}}
    request.update(changes)
    return request


def _refused(call) -> str:
    with pytest.raises(aws_request_check.RequestAWSWouldRefuse) as refused:
        call()
    assert aws_request_check.take_refusals()  # recorded, then cleared so this test itself passes
    return str(refused.value)


def test_a_valid_request_passes(clients):
    clients.client("sagemaker").create_training_job(**_training_request())
    assert aws_request_check.take_refusals() == []


def test_a_name_against_the_model_pattern_is_refused_though_moto_accepts_it(clients):
    # botocore's model: TrainingJobName ^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}; botocore itself checks no patterns.
    message = _refused(lambda: clients.client("sagemaker").create_training_job(
        **_training_request(TrainingJobName="has_underscore")))
    assert "TrainingJobName" in message and "does not match" in message


def test_too_many_hyperparameters_are_refused(clients):
    hyperparameters = {f"h{index}": "1" for index in range(101)}
    message = _refused(lambda: clients.client("sagemaker").create_training_job(
        **_training_request(HyperParameters=hyperparameters)))
    assert "HyperParameters: 101 entries, at most 100" in message


def test_an_automl_problem_type_without_an_objective_is_refused(clients):
    # CreateAutoMLJobV2's documentation (AutoMLJobObjective): both or neither for tabular problems.
    message = _refused(lambda: clients.client("sagemaker").create_auto_ml_job_v2(
        AutoMLJobName="essedum-automl-1", RoleArn=ROLE_ARN,
        AutoMLJobInputDataConfig=[{"ChannelType": "training", "ContentType": "text/csv;header=present",
                                   "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix",
                                                                   "S3Uri": f"s3://{BUCKET}/data.csv"}}}],
        OutputDataConfig={"S3OutputPath": f"s3://{BUCKET}/automl"},
        AutoMLProblemTypeConfig={"TabularJobConfig": {"TargetAttributeName": "y", "ProblemType": "Regression",
                                                      "CompletionCriteria": {"MaxCandidates": 2}}}))
    assert "AutoMLJobObjective" in message and "both" in message


def test_a_child_process_checks_its_requests_too(clients, tmp_path):
    script = ("import boto3\n"
              "boto3.client('sagemaker', region_name='us-east-1', aws_access_key_id='a', aws_secret_access_key='b')"
              ".describe_training_job(TrainingJobName='bad_name')\n")
    child = subprocess.run([sys.executable, "-c", script], env=dict(os.environ), capture_output=True, text=True,
                           timeout=60)
    assert "RequestAWSWouldRefuse" in child.stderr
    refusals = aws_request_check.take_refusals()
    assert len(refusals) == 1 and "bad_name" in refusals[0]
