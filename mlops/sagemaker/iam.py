"""The IAM documents of SageMaker: the role's trust policy and a check of one, the execution role's
policy, and the executor's own identity policy.

The execution role gets one statement per job family it runs (training, AutoML, models and
endpoints, transforms), each scoped to the executor's bucket prefix, the AWS image repositories
of that family and the family's `/aws/sagemaker/*` log groups in both the group and the `:*`
stream form. The executor's own identity policy is written to docs/iam/executor-policy.json with
placeholders (`tests` keep the file equal to what this module makes), and /cloudconnect asks IAM's
policy simulator about each of its actions.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import unquote

SAGEMAKER_PRINCIPAL = "sagemaker.amazonaws.com"
ROLE_POLICY_NAME = "essedum-executor-jobs"
ECR_REPOSITORY = re.compile(r"^(\d{12})\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?/([a-z0-9._/-]+)$")
JOB_SECRET_PREFIX = "essedum/jobs/"
LOG_GROUPS = {"training": "TrainingJobs", "automl": "ProcessingJobs", "endpoints": "Endpoints",
              "transforms": "TransformJobs"}
# AWS's image tables in sagemaker-core: the registries (AWS accounts) whose repositories each
# family pulls from. AutoML runs scikit-learn processing, AutoGluon and XGBoost-style candidates.
IMAGE_TABLES = {"training": ("pytorch",), "automl": ("sklearn", "autogluon", "pytorch"),
                "endpoints": ("pytorch", "sklearn", "autogluon"), "transforms": ("pytorch", "sklearn", "autogluon")}
ECR_PULL = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"]
LOG_WRITE = ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]


def partition_of(region: str) -> str:
    """Return the AWS partition of a region."""
    if region.startswith("cn-"):
        return "aws-cn"
    return "aws-us-gov" if region.startswith("us-gov-") else "aws"


@lru_cache(maxsize=64)
def aws_image_accounts(region: str, frameworks: tuple[str, ...]) -> tuple[str, ...]:
    """Return the AWS accounts whose ECR repositories hold the frameworks' images in a region."""
    try:
        import sagemaker.core.image_uris as image_uris
    except ImportError:
        return ()
    folder = Path(image_uris.__file__).resolve().parent / "image_uri_config"
    accounts: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("registries"), dict) and region in node["registries"]:
                accounts.add(node["registries"][region])
            for value in node.values():
                walk(value)

    for framework in frameworks:
        path = folder / f"{framework}.json"
        if path.is_file():
            walk(json.loads(path.read_text(encoding="utf-8")))
    return tuple(sorted(accounts))


@dataclass(frozen=True)
class Scope:
    """Where the executor's jobs may act: region, account, bucket, key prefix, the role itself."""

    region: str
    account: str
    bucket: str
    prefix: str
    role_arn: str

    @property
    def partition(self) -> str:
        return partition_of(self.region)

    def arn(self, service: str, resource: str, *, region: bool = True, account: bool = True) -> str:
        return (f"arn:{self.partition}:{service}:{self.region if region else ''}:"
                f"{self.account if account else ''}:{resource}")

    def log_groups(self, family: str) -> list[str]:
        group = self.arn("logs", f"log-group:/aws/sagemaker/{LOG_GROUPS[family]}")
        return [group, f"{group}:*"]

    def repositories(self, family: str, images: Iterable[str] = ()) -> list[str]:
        accounts = aws_image_accounts(self.region, IMAGE_TABLES[family])
        resources = [f"arn:{self.partition}:ecr:{self.region}:{account}:repository/*" for account in accounts]
        for image in images:
            repository = image_repository_arn(image, self.partition)
            if repository and repository not in resources:
                resources.append(repository)
        return resources

    def job_secrets(self) -> str:
        return self.arn("secretsmanager", f"secret:{JOB_SECRET_PREFIX}*")


def image_repository_arn(image_uri: str, partition: str = "aws") -> str | None:
    """Return the ARN of an ECR image's repository, or None for an image outside ECR."""
    match = ECR_REPOSITORY.match(image_uri.split("@")[0].rsplit(":", 1)[0])
    if match is None:
        return None
    account, region, name = match.groups()
    return f"arn:{partition}:ecr:{region}:{account}:repository/{name}"


def sagemaker_trust_policy() -> dict[str, Any]:
    """Return a trust policy that lets only SageMaker assume the role."""
    return {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": SAGEMAKER_PRINCIPAL}, "Action": "sts:AssumeRole"}]}


def trusts_sagemaker(document: Any) -> bool:
    """True when a trust policy allows sagemaker.amazonaws.com to assume the role."""
    if isinstance(document, str):
        try:
            document = json.loads(unquote(document))
        except ValueError:
            return False
    if not isinstance(document, dict):
        return False
    statements = document.get("Statement", [])
    for statement in statements if isinstance(statements, list) else [statements]:
        services = statement.get("Principal", {}).get("Service", []) if isinstance(statement.get("Principal"), dict) else []
        actions = statement.get("Action", [])
        services = [services] if isinstance(services, str) else services
        actions = [actions] if isinstance(actions, str) else actions
        if (statement.get("Effect") == "Allow" and SAGEMAKER_PRINCIPAL in services
                and ("sts:AssumeRole" in actions or "sts:*" in actions)):
            return True
    return False


def execution_role_policy(scope: Scope, training_images: Iterable[str] = ()) -> dict[str, Any]:
    """Return the execution role's inline policy: shared data access, then one statement per job family."""
    objects = f"arn:{scope.partition}:s3:::{scope.bucket}/{scope.prefix + '/' if scope.prefix else ''}*"
    sagemaker_resources = scope.arn("sagemaker", "*")
    statements: list[dict[str, Any]] = [
        {"Sid": "ObjectsUnderThePrefix", "Effect": "Allow",
         "Action": ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
         "Resource": objects},
        {"Sid": "ListThePrefix", "Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketLocation"],
         "Resource": f"arn:{scope.partition}:s3:::{scope.bucket}",
         **({"Condition": {"StringLike": {"s3:prefix": [scope.prefix, f"{scope.prefix}/*"]}}} if scope.prefix else {})},
        # GetAuthorizationToken and PutMetricData name no resource; metrics are held to SageMaker's namespaces.
        {"Sid": "RegistryToken", "Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
        {"Sid": "JobMetrics", "Effect": "Allow", "Action": "cloudwatch:PutMetricData", "Resource": "*",
         "Condition": {"StringLike": {"cloudwatch:namespace": "/aws/sagemaker/*"}}},
        {"Sid": "TrainingJobs", "Effect": "Allow", "Action": [*ECR_PULL, *LOG_WRITE, "secretsmanager:GetSecretValue"],
         "Resource": [*scope.repositories("training", training_images), *scope.log_groups("training"),
                      scope.job_secrets()]},
        {"Sid": "AutoMLJobs", "Effect": "Allow",
         "Action": [*ECR_PULL, *LOG_WRITE, "sagemaker:CreateTrainingJob", "sagemaker:CreateProcessingJob",
                    "sagemaker:CreateTransformJob", "sagemaker:CreateModel", "sagemaker:CreateEndpointConfig",
                    "sagemaker:CreateEndpoint", "sagemaker:Describe*", "sagemaker:Delete*", "sagemaker:Stop*",
                    "sagemaker:List*", "sagemaker:AddTags"],
         "Resource": [*scope.repositories("automl"), *scope.log_groups("automl"), *scope.log_groups("training"),
                      sagemaker_resources]},
        {"Sid": "AutoMLPassesItsRole", "Effect": "Allow", "Action": "iam:PassRole", "Resource": scope.role_arn,
         "Condition": {"StringEquals": {"iam:PassedToService": SAGEMAKER_PRINCIPAL}}},
        {"Sid": "ModelsAndEndpoints", "Effect": "Allow", "Action": [*ECR_PULL, *LOG_WRITE],
         "Resource": [*scope.repositories("endpoints", training_images), *scope.log_groups("endpoints")]},
        {"Sid": "TransformJobs", "Effect": "Allow", "Action": [*ECR_PULL, *LOG_WRITE],
         "Resource": [*scope.repositories("transforms", training_images), *scope.log_groups("transforms")]},
    ]
    return {"Version": "2012-10-17", "Statement": statements}


# The executor's own calls, by what they act on: (Sid, actions, resource templates, condition).
# The ${...} placeholders are filled from a Scope, or left as they are in the documented file.
EXECUTOR_PERMISSIONS: list[tuple[str, list[str], list[str], dict[str, Any] | None]] = [
    ("RunAndFollowJobs", [
        "sagemaker:CreateTrainingJob", "sagemaker:DescribeTrainingJob", "sagemaker:StopTrainingJob",
        "sagemaker:CreateAutoMLJobV2", "sagemaker:DescribeAutoMLJobV2", "sagemaker:StopAutoMLJob",
        "sagemaker:CreateModel", "sagemaker:DescribeModel", "sagemaker:DeleteModel",
        "sagemaker:CreateEndpointConfig", "sagemaker:DescribeEndpointConfig", "sagemaker:DeleteEndpointConfig",
        "sagemaker:CreateEndpoint", "sagemaker:UpdateEndpoint", "sagemaker:DescribeEndpoint",
        "sagemaker:DeleteEndpoint", "sagemaker:InvokeEndpoint", "sagemaker:CreateTransformJob",
        "sagemaker:DescribeTransformJob", "sagemaker:StopTransformJob", "sagemaker:AddTags"],
     ["arn:${Partition}:sagemaker:${Region}:${Account}:*"], None),
    # The list operations and the price list name no resource.
    ("ListJobsAndPrices", ["sagemaker:ListTrainingJobs", "sagemaker:ListAutoMLJobs", "pricing:GetProducts"],
     ["*"], None),
    ("PassTheExecutionRole", ["iam:PassRole"], ["${ExecutionRoleArn}"],
     {"StringEquals": {"iam:PassedToService": SAGEMAKER_PRINCIPAL}}),
    ("ReadTheExecutionRole", ["iam:GetRole"], ["${ExecutionRoleArn}"], None),
    ("ReadJobLogs", ["logs:FilterLogEvents", "logs:GetLogEvents", "logs:DescribeLogStreams"],
     ["arn:${Partition}:logs:${Region}:${Account}:log-group:/aws/sagemaker/*",
      "arn:${Partition}:logs:${Region}:${Account}:log-group:/aws/sagemaker/*:*"], None),
    ("DataUnderThePrefix", ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
     ["arn:${Partition}:s3:::${Bucket}/${Prefix}*"], None),
    ("TheBucket", ["s3:ListBucket", "s3:GetBucketLocation"], ["arn:${Partition}:s3:::${Bucket}"], None),
    ("JobSecrets", ["secretsmanager:CreateSecret", "secretsmanager:PutSecretValue", "secretsmanager:DeleteSecret",
                    "secretsmanager:TagResource"],
     [f"arn:${{Partition}}:secretsmanager:${{Region}}:${{Account}}:secret:{JOB_SECRET_PREFIX}*"], None),
    ("CheckItsOwnPermissions", ["iam:SimulatePrincipalPolicy"], ["${ExecutorIdentityArn}"], None),
]


def _fill(template: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        template = template.replace("${" + key + "}", value)
    return template


def executor_identity_policy(values: dict[str, str] | None = None) -> dict[str, Any]:
    """Return the executor's own identity policy, its ${...} placeholders filled from values."""
    statements = []
    for sid, actions, resources, condition in EXECUTOR_PERMISSIONS:
        statement: dict[str, Any] = {"Sid": sid, "Effect": "Allow", "Action": actions,
                                     "Resource": [_fill(resource, values or {}) for resource in resources]}
        if condition:
            statement["Condition"] = condition
        statements.append(statement)
    return {"Version": "2012-10-17", "Statement": statements}


def scope_values(scope: Scope, identity_arn: str) -> dict[str, str]:
    """Return the placeholder values of the executor's identity policy for one deployment."""
    return {"Partition": scope.partition, "Region": scope.region, "Account": scope.account, "Bucket": scope.bucket,
            "Prefix": f"{scope.prefix}/" if scope.prefix else "", "ExecutionRoleArn": scope.role_arn,
            "ExecutorIdentityArn": identity_arn}


def required_permissions(scope: Scope, identity_arn: str) -> list[tuple[str, str]]:
    """Return (action, resource ARN) pairs the executor needs, for the policy simulator."""
    values = scope_values(scope, identity_arn)
    # A wildcard resource is asked about through one name it covers.
    return [(action, statement["Resource"][0] if statement["Resource"][0] == "*"
             else statement["Resource"][0].replace("*", "essedum-check"))
            for statement in executor_identity_policy(values)["Statement"] for action in statement["Action"]]
