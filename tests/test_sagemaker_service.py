"""The seeds' SageMakerTrainingService and SageMakerContainerBuilder against moto."""
from __future__ import annotations

import base64
import dataclasses
import json
from datetime import datetime, timezone
from unittest import mock

import pytest
from aws_fixtures import (ACCOUNT, BUCKET, IMAGE, REGION, ROLE_ARN, ROLE_NAME, aws, aws_setup, clients,  # noqa: F401
                          config, docker_calls, fake_docker, make_config)
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from mlops.sagemaker.training_service import (SageMakerContainerBuilder, SageMakerJobConfig, SageMakerTrainingService,
                                              training_job_name)
from mlops.sagemaker.iam import Scope, execution_role_policy, executor_identity_policy
from mlops.errors import DockerContainerError, InvalidRequest, SageMakerConfigurationError, SageMakerJobError

ECR_REPO = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/essedum-training"


@pytest.fixture
def service(config, clients, aws_setup):  # noqa: F811
    return SageMakerTrainingService(config, clients)


def checks_of(result):
    return {check["name"]: check for check in result["checks"]}


def job_config(job_id: str) -> SageMakerJobConfig:
    return SageMakerJobConfig(job_name=training_job_name(job_id, "digits"), role_arn=ROLE_ARN, image_uri=IMAGE,
                              instance_type="ml.g5.xlarge", hyperparameters={"epochs": "2"},
                              entry_point="train.py", source_s3_uri=f"s3://{BUCKET}/code/x/sourcedir.tar.gz",
                              output_s3_uri=f"s3://{BUCKET}/o", region=REGION, executor_job_id=job_id)


# -- validate_configuration --------------------------------------------------------------------

def test_a_working_configuration_passes_every_check(service):
    result = service.validate_configuration()
    assert result["valid"] is True, result
    assert set(checks_of(result)) == {"region", "credentials", "bucket", "role", "instance_type", "permissions"}
    assert ACCOUNT in checks_of(result)["credentials"]["detail"]


def test_each_failing_check_says_why(tmp_path, clients):  # noqa: F811
    clients.client("iam").create_role(RoleName="NotForSageMaker", AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                "Principal": {"Service": "ec2.amazonaws.com"}}]}))
    config = make_config(tmp_path, s3_bucket="no-such-bucket-here",
                         sagemaker_role_arn=f"arn:aws:iam::{ACCOUNT}:role/NotForSageMaker")
    result = SageMakerTrainingService(config, clients).validate_configuration()
    checks = checks_of(result)
    assert result["valid"] is False
    assert checks["credentials"]["passed"] is True
    assert checks["bucket"]["passed"] is False and "no-such-bucket-here" in checks["bucket"]["detail"]
    assert checks["role"]["passed"] is False and "does not trust sagemaker.amazonaws.com" in checks["role"]["detail"]


def test_a_missing_role_and_unset_settings_fail_their_checks(tmp_path, clients):  # noqa: F811
    config = make_config(tmp_path, s3_bucket="", sagemaker_role_arn=f"arn:aws:iam::{ACCOUNT}:role/Missing")
    checks = checks_of(SageMakerTrainingService(config, clients).validate_configuration())
    assert checks["bucket"] == {"name": "bucket", "passed": False, "detail": "EXECUTOR_S3_BUCKET is not set"}
    assert checks["role"]["passed"] is False and "NoSuchEntity" in checks["role"]["detail"]


def test_bad_credentials_fail_the_credentials_check(service):
    with Stubber(service.clients.client("sts")) as stub:
        stub.add_client_error("get_caller_identity", "InvalidClientTokenId", "The security token is invalid.", 403)
        check = checks_of(service.validate_configuration())["credentials"]
    assert check["passed"] is False and "InvalidClientTokenId" in check["detail"]


def test_the_permission_check_names_what_the_identity_lacks(service):
    # moto lacks IAM's policy simulator: botocore's Stubber answers as IAM would for an identity
    # without iam:PassRole (one call per resource of docs/iam/executor-policy.json).
    iam = service.clients.client("iam")
    with Stubber(iam) as stub:
        for statement in executor_identity_policy()["Statement"]:
            if statement["Sid"] == "ReadTheExecutionRole":
                continue  # same resource as PassTheExecutionRole: asked in one call
            actions = statement["Action"] + (["iam:GetRole"] if statement["Sid"] == "PassTheExecutionRole" else [])
            stub.add_response("simulate_principal_policy", {"EvaluationResults": [
                {"EvalActionName": action, "EvalResourceName": "*",
                 "EvalDecision": "implicitDeny" if action == "iam:PassRole" else "allowed"} for action in actions]})
        missing = service.missing_permissions()
    assert missing == [("iam:PassRole", ROLE_ARN)]


def test_an_identity_that_may_not_simulate_is_reported_unchecked(service):
    with Stubber(service.clients.client("iam")) as stub:
        trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                         "Principal": {"Service": "sagemaker.amazonaws.com"}}]}
        stub.add_response("get_role", {"Role": {
            "Path": "/", "RoleName": "EssedumTrainingRole", "RoleId": "AROA1234567890EXAMPLE", "Arn": ROLE_ARN,
            "CreateDate": datetime(2026, 1, 1, tzinfo=timezone.utc), "AssumeRolePolicyDocument": json.dumps(trust)}})
        stub.add_client_error("simulate_principal_policy", "AccessDenied", "not authorized to perform: "
                              "iam:SimulatePrincipalPolicy", 403)
        check = checks_of(service.validate_configuration())["permissions"]
    assert check["passed"] is True and check["detail"].startswith("not checked") and "AccessDenied" in check["detail"]


# -- create_execution_role ---------------------------------------------------------------------

def test_the_execution_role_is_trusted_by_sagemaker_only_and_scoped_to_the_prefix(service, clients):  # noqa: F811
    arn = service.create_execution_role("EssedumNewRole")
    assert arn == f"arn:aws:iam::{ACCOUNT}:role/EssedumNewRole"
    iam = clients.client("iam")
    trust = iam.get_role(RoleName="EssedumNewRole")["Role"]["AssumeRolePolicyDocument"]
    assert trust["Statement"] == [{"Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"},
                                   "Action": "sts:AssumeRole"}]
    policy = iam.get_role_policy(RoleName="EssedumNewRole", PolicyName="essedum-executor-jobs")["PolicyDocument"]
    statements = {statement["Sid"]: statement for statement in policy["Statement"]}
    assert statements["ObjectsUnderThePrefix"]["Resource"] == f"arn:aws:s3:::{BUCKET}/essedum-executor/*"
    assert statements["ListThePrefix"]["Condition"]["StringLike"]["s3:prefix"] == [
        "essedum-executor", "essedum-executor/*"]
    assert f"arn:aws:ecr:{REGION}:763104351884:repository/pytorch-training" in statements["TrainingJobs"]["Resource"]
    assert f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/sagemaker/TrainingJobs:*" in \
        statements["TrainingJobs"]["Resource"]
    assert statements["AutoMLPassesItsRole"]["Resource"] == arn
    wildcard = [s["Sid"] for s in policy["Statement"] if s["Resource"] == "*"]
    assert sorted(wildcard) == ["JobMetrics", "RegistryToken"]
    assert statements["JobMetrics"]["Condition"]
    actions = [a for s in policy["Statement"] for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])]
    assert not [a for a in actions if a.endswith(":*") or a == "*"]


def test_creating_the_role_again_reuses_it(service, clients):  # noqa: F811
    first = service.create_execution_role("EssedumNewRole")
    assert service.create_execution_role("EssedumNewRole") == first
    assert len(clients.client("iam").list_roles()["Roles"]) == 2  # the fixture's role and this one


def test_an_existing_role_that_does_not_trust_sagemaker_is_refused(service, clients):  # noqa: F811
    clients.client("iam").create_role(RoleName="Ec2Role", AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                "Principal": {"Service": "ec2.amazonaws.com"}}]}))
    with pytest.raises(SageMakerConfigurationError, match="does not trust"):
        service.create_execution_role("Ec2Role")


@pytest.mark.parametrize("name", ["", "has space", "x;y", "$(rm -rf)", "r" * 65])
def test_bad_role_names_are_refused_before_any_aws_call(service, clients, name):  # noqa: F811
    before = clients.counter.total()
    with pytest.raises(InvalidRequest) as raised:
        service.create_execution_role(name)
    assert raised.value.field == "role_name"
    assert clients.counter.total() == before


def test_the_policy_without_a_prefix_covers_the_bucket_objects_only():
    scope = Scope(region="us-east-1", account=ACCOUNT, bucket="b-1", prefix="", role_arn=f"arn:aws:iam::{ACCOUNT}:role/r")
    sids = {s["Sid"]: s for s in execution_role_policy(scope, ["ubuntu:22.04"])["Statement"]}
    assert sids["ObjectsUnderThePrefix"]["Resource"] == "arn:aws:s3:::b-1/*"
    assert "Condition" not in sids["ListThePrefix"]
    assert not [r for r in sids["TrainingJobs"]["Resource"] if "ubuntu" in r]


# -- images ------------------------------------------------------------------------------------

def test_the_default_image_is_aws_pytorch_image_for_the_region(tmp_path, clients):  # noqa: F811
    service = SageMakerTrainingService(make_config(tmp_path, training_image=""), clients)
    assert service.resolve_image("ml.g5.xlarge") == \
        "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.5-gpu-py311"
    assert service.resolve_image("ml.m5.xlarge").endswith("pytorch-training:2.5-cpu-py311")
    assert service.resolve_image("ml.m5.xlarge", "my.registry.io/team/image:1") == "my.registry.io/team/image:1"


def test_an_image_aws_does_not_publish_is_a_configuration_error(tmp_path, clients):  # noqa: F811
    service = SageMakerTrainingService(make_config(tmp_path, training_image="", framework_version="0.1"), clients)
    with pytest.raises(SageMakerConfigurationError, match="EXECUTOR_TRAINING_IMAGE"):
        service.resolve_image("ml.g5.xlarge")


# -- create, describe, stop (what the SageMaker platform calls) ----------------------------------

def test_creating_a_training_job_sends_the_configuration_and_describe_finds_it(service, clients):  # noqa: F811
    from aws_fixtures import capture_params
    created = capture_params(clients.client("sagemaker"), "CreateTrainingJob")
    config = job_config("2f1c6d1e-8a51-4d8e-9a2b-5b0c1f3e7a90")
    arn = service.create_training_job(config)
    assert arn.endswith(f"training-job/{config.job_name}")
    assert created == [config.to_sagemaker_config()]
    assert service.describe_training_job(config.job_name)["TrainingJobArn"] == arn
    assert service.describe_training_job("essedum-no-such-job") is None


def test_resource_in_use_means_already_submitted(service):
    config = job_config("2f1c6d1e-8a51-4d8e-9a2b-5b0c1f3e7a90")
    arn = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:training-job/{config.job_name}"
    # Stubbed: moto silently overwrites a duplicate name where AWS answers ResourceInUse.
    with Stubber(service.sagemaker) as stub:
        stub.add_client_error("create_training_job", "ResourceInUse", "Training job names must be unique.")
        stub.add_response("describe_training_job", {"TrainingJobArn": arn, **_minimal_description(config.job_name)})
        assert service.create_training_job(config) == arn
        stub.assert_no_pending_responses()


def test_a_quota_error_is_explained(service):
    with Stubber(service.sagemaker) as stub:
        stub.add_client_error("create_training_job", "ResourceLimitExceeded", "The account-level service limit "
                              "'ml.g5.xlarge for training job usage' is 0 Instances")
        with pytest.raises(SageMakerJobError, match="ResourceLimitExceeded.*Service Quotas"):
            service.create_training_job(job_config("2f1c6d1e-8a51-4d8e-9a2b-5b0c1f3e7a90"))


def _minimal_description(name: str) -> dict:
    now = datetime.now(timezone.utc)
    return {"TrainingJobName": name, "ModelArtifacts": {"S3ModelArtifacts": ""}, "TrainingJobStatus": "InProgress",
            "SecondaryStatus": "Starting", "AlgorithmSpecification": {"TrainingInputMode": "File"},
            "ResourceConfig": {"InstanceType": "ml.g5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
            "StoppingCondition": {"MaxRuntimeInSeconds": 60}, "CreationTime": now}


def test_a_running_job_is_stopped_once_and_an_ended_or_stopping_one_not_at_all(service):
    from aws_fixtures import set_training_state
    config = job_config("2f1c6d1e-8a51-4d8e-9a2b-5b0c1f3e7a90")
    service.create_training_job(config)
    set_training_state(config.job_name, "InProgress", "Training")
    # moto has no StopTrainingJob: patch the client call and count it.
    with mock.patch.object(service.sagemaker, "stop_training_job", return_value={}) as stop:
        assert service.stop_training_job(config.job_name) == "InProgress"
        set_training_state(config.job_name, "InProgress", "Stopping")
        assert service.stop_training_job(config.job_name) == "InProgress"
        set_training_state(config.job_name, "Completed", "Completed")
        assert service.stop_training_job(config.job_name) == "Completed"
        assert service.stop_training_job("essedum-no-such-job") is None
    stop.assert_called_once_with(TrainingJobName=config.job_name)


def test_stop_races_with_the_end_of_the_job(service):
    from aws_fixtures import set_training_state
    config = job_config("2f1c6d1e-8a51-4d8e-9a2b-5b0c1f3e7a90")
    service.create_training_job(config)
    set_training_state(config.job_name, "InProgress", "Uploading")
    error = ClientError({"Error": {"Code": "ValidationException", "Message": "already stopped"}}, "StopTrainingJob")
    with mock.patch.object(service.sagemaker, "stop_training_job", side_effect=error):
        assert service.stop_training_job(config.job_name) == "InProgress"


# -- container builder -------------------------------------------------------------------------

def test_build_installs_the_requirements_and_leaves_the_code_folder_empty(clients, tmp_path, monkeypatch):  # noqa: F811
    record = fake_docker(tmp_path, monkeypatch)
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "train.py").write_text("print('baked')\n")
    (scripts / "requirements.txt").write_text("scikit-learn==1.9.1\n")
    builder = SageMakerContainerBuilder(clients, context_dir=scripts)
    assert builder.build_training_container("python:3.11-slim", "essedum/train:1") == "essedum/train:1"
    [call] = docker_calls(record)
    assert call["argv"][:5] == ["build", "--tag", "essedum/train:1", "--file", "-"]
    assert call["argv"][5] != str(scripts)  # a context holding requirements.txt only: no code is sent
    assert call["stdin"] == ("FROM python:3.11-slim\nCOPY requirements.txt /opt/essedum/requirements.txt\n"
                             "RUN python -m pip install --no-cache-dir -r /opt/essedum/requirements.txt\n")
    # The toolkit unpacks the submitted sourcedir.tar.gz only into an empty /opt/ml/code.
    assert "/opt/ml/code" not in call["stdin"] and "SAGEMAKER_PROGRAM" not in call["stdin"]


def test_building_on_an_aws_image_logs_in_to_its_registry_first(clients, tmp_path, monkeypatch):  # noqa: F811
    record = fake_docker(tmp_path, monkeypatch)
    SageMakerContainerBuilder(clients, context_dir=tmp_path).build_training_container(IMAGE, "essedum/train:1")
    login, build = docker_calls(record)
    assert login["argv"][:4] == ["login", "--username", "AWS", "--password-stdin"]
    assert login["argv"][4] == "https://763104351884.dkr.ecr.us-east-1.amazonaws.com"
    assert build["argv"][0] == "build" and build["docker_config"] == login["docker_config"]


def test_push_logs_in_with_the_password_on_stdin_tags_and_pushes(clients, tmp_path, monkeypatch):  # noqa: F811
    record = fake_docker(tmp_path, monkeypatch)
    token = clients.client("ecr").get_authorization_token()["authorizationData"][0]["authorizationToken"]
    password = base64.b64decode(token).decode().split(":", 1)[1]
    uri = SageMakerContainerBuilder(clients).push_to_ecr("essedum/train:v2", ECR_REPO)
    assert uri == f"{ECR_REPO}:v2"
    login, tag, push = docker_calls(record)
    assert login["argv"] == ["login", "--username", "AWS", "--password-stdin",
                             f"https://{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"]
    assert login["stdin"] == password
    assert all(password not in " ".join(call["argv"]) for call in (login, tag, push))
    assert tag["argv"] == ["tag", "essedum/train:v2", f"{ECR_REPO}:v2"]
    assert push["argv"] == ["push", f"{ECR_REPO}:v2"]
    assert login["docker_config"] and login["docker_config"] == push["docker_config"]


def test_an_image_without_a_tag_is_pushed_as_latest(clients, tmp_path, monkeypatch):  # noqa: F811
    fake_docker(tmp_path, monkeypatch)
    assert SageMakerContainerBuilder(clients).push_to_ecr("localhost:5000/train", ECR_REPO) == f"{ECR_REPO}:latest"


def test_a_failing_docker_is_a_docker_container_error_with_its_message(clients, tmp_path, monkeypatch):  # noqa: F811
    fake_docker(tmp_path, monkeypatch, exit_code=3)
    with pytest.raises(DockerContainerError, match="exit code 3: fake docker: simulated failure"):
        SageMakerContainerBuilder(clients, context_dir=tmp_path).build_training_container("ubuntu", "x/y:1")


def test_a_missing_docker_is_a_clear_error(clients, tmp_path):  # noqa: F811
    builder = SageMakerContainerBuilder(clients, docker=str(tmp_path / "no-docker-here"))
    with pytest.raises(DockerContainerError, match="docker is not installed"):
        builder.build_training_container("ubuntu", "x/y:1")


@pytest.mark.parametrize("image_tag, repository, field", [
    ("", ECR_REPO, "image_tag"), ("x;rm -rf /", ECR_REPO, "image_tag"),
    ("x/y:1", "", "ecr_repository_uri"), ("x/y:1", "docker.io/library/x", "ecr_repository_uri"),
    ("x/y:1", ECR_REPO + " && echo", "ecr_repository_uri")])
def test_bad_push_arguments_are_refused_before_docker_runs(clients, tmp_path, monkeypatch, image_tag,  # noqa: F811
                                                          repository, field):
    record = fake_docker(tmp_path, monkeypatch)
    with pytest.raises(InvalidRequest) as raised:
        SageMakerContainerBuilder(clients).push_to_ecr(image_tag, repository)
    assert raised.value.field == field and docker_calls(record) == []


@pytest.mark.parametrize("base_image, tag, field", [("", "x/y:1", "base_image"), ("$(id)", "x/y:1", "base_image"),
                                                    ("ubuntu", "", "tag"), ("ubuntu", "a b", "tag")])
def test_bad_build_arguments_are_refused(clients, tmp_path, monkeypatch, base_image, tag, field):  # noqa: F811
    record = fake_docker(tmp_path, monkeypatch)
    with pytest.raises(InvalidRequest) as raised:
        SageMakerContainerBuilder(clients).build_training_container(base_image, tag)
    assert raised.value.field == field and docker_calls(record) == []


def test_role_fixture_name_matches(service):
    assert ROLE_ARN.endswith(ROLE_NAME)


SPECIAL = "a b;$(rm -rf /)`|&<>\"'\\é"


@pytest.mark.parametrize("field, value", [
    ("input_data_s3_uri", SPECIAL), ("input_data_s3_uri", "s3://UPPER/x"), ("output_s3_uri", ""),
    ("output_s3_uri", SPECIAL), ("role_arn", ""), ("role_arn", SPECIAL), ("image_uri", ""), ("image_uri", SPECIAL),
    ("job_name", ""), ("job_name", SPECIAL)])
def test_create_refuses_each_bad_field_before_any_aws_call(service, clients, field, value):  # noqa: F811
    config = dataclasses.replace(job_config("2f1c6d1e-8a51-4d8e-9a2b-5b0c1f3e7a90"), **{field: value})
    before = clients.counter.total()
    with pytest.raises(InvalidRequest) as raised:
        service.create_training_job(config)
    assert raised.value.field == field
    assert clients.counter.total() == before


def test_an_empty_input_uri_means_a_job_without_an_input_channel(service, clients):  # noqa: F811
    from aws_fixtures import capture_params
    created = capture_params(clients.client("sagemaker"), "CreateTrainingJob")
    service.create_training_job(dataclasses.replace(job_config("2f1c6d1e-8a51-4d8e-9a2b-5b0c1f3e7a90"),
                                                    input_data_s3_uri=""))
    assert "InputDataConfig" not in created[0]


def test_invoke_endpoint_is_sent_once_and_waits_longer_than_an_endpoint_may_take(clients):  # noqa: F811
    runtime = clients.client("sagemaker-runtime")
    assert runtime.meta.config.retries["total_max_attempts"] == 1
    assert runtime.meta.config.read_timeout > 60  # SageMaker's invocation timeout is 60 s
    sent = []
    runtime.meta.events.register("before-send.sagemaker-runtime.InvokeEndpoint",
                                 lambda request, **_: sent.append(request) or _timeout(request))
    with pytest.raises(Exception, match="Read timeout"):
        runtime.invoke_endpoint(EndpointName="slow-endpoint", Body=b"{}", ContentType="application/json")
    assert len(sent) == 1
    assert clients.client("sagemaker").meta.config.retries["total_max_attempts"] > 1  # the others keep retrying


def _timeout(request):
    from botocore.exceptions import ReadTimeoutError
    raise ReadTimeoutError(endpoint_url=request.url)
