"""The execution role's policy covers every job family; the executor's own policy is documented."""
from __future__ import annotations

import json
from pathlib import Path

from mlops.sagemaker.iam import Scope, execution_role_policy, executor_identity_policy

from aws_fixtures import ACCOUNT, BUCKET, IMAGE, REGION, ROLE_ARN, aws, clients  # noqa: F401 - fixtures

ROOT = Path(__file__).resolve().parents[1]
SCOPE = Scope(region=REGION, account=ACCOUNT, bucket=BUCKET, prefix="team/essedum", role_arn=ROLE_ARN)


def _statements() -> dict[str, dict]:
    return {statement["Sid"]: statement for statement in execution_role_policy(SCOPE, [IMAGE])["Statement"]}


def test_one_statement_per_job_family():
    assert {"TrainingJobs", "AutoMLJobs", "ModelsAndEndpoints", "TransformJobs"} <= set(_statements())


def test_log_groups_are_named_in_the_group_and_stream_forms():
    group = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/sagemaker/"
    for sid, name in (("TrainingJobs", "TrainingJobs"), ("ModelsAndEndpoints", "Endpoints"),
                      ("TransformJobs", "TransformJobs"), ("AutoMLJobs", "ProcessingJobs")):
        resources = _statements()[sid]["Resource"]
        assert f"{group}{name}" in resources and f"{group}{name}:*" in resources, sid


def test_data_access_stays_under_the_prefix():
    statements = _statements()
    assert statements["ObjectsUnderThePrefix"]["Resource"] == f"arn:aws:s3:::{BUCKET}/team/essedum/*"
    assert statements["ListThePrefix"]["Condition"] == {"StringLike": {"s3:prefix": ["team/essedum",
                                                                                      "team/essedum/*"]}}


def test_images_come_from_aws_repositories_and_the_training_image():
    resources = _statements()["TrainingJobs"]["Resource"]
    assert f"arn:aws:ecr:{REGION}:763104351884:repository/pytorch-training" in resources
    assert all(":repository/" not in resource or resource.split(":")[4].isdigit() for resource in resources)


def test_automl_may_pass_only_its_own_role_and_only_to_sagemaker():
    statement = _statements()["AutoMLPassesItsRole"]
    assert statement["Resource"] == ROLE_ARN
    assert statement["Condition"] == {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}


def test_jobs_read_only_the_executors_job_secrets():
    secrets = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:essedum/jobs/*"
    assert secrets in _statements()["TrainingJobs"]["Resource"]


def test_the_policy_fits_an_inline_role_policy_and_iam_takes_it(clients):
    document = json.dumps(execution_role_policy(SCOPE, [IMAGE]))
    assert len(document) <= 10240  # IAM's limit for a role's inline policies
    iam = clients.client("iam")
    iam.create_role(RoleName="EssedumTrainingRole", AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                "Principal": {"Service": "sagemaker.amazonaws.com"}}]}))
    iam.put_role_policy(RoleName="EssedumTrainingRole", PolicyName="p", PolicyDocument=document)


def test_the_documented_executor_policy_is_the_one_the_code_states():
    documented = json.loads((ROOT / "docs" / "iam" / "executor-policy.json").read_text(encoding="utf-8"))
    assert documented == executor_identity_policy()


def test_the_executor_may_pass_the_role_to_sagemaker_only():
    statement = next(s for s in executor_identity_policy()["Statement"] if "iam:PassRole" in s["Action"])
    assert statement["Condition"] == {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}
    assert statement["Resource"] == ["${ExecutionRoleArn}"]
