"""The IAM documents of SageMaker training: the role's trust policy, a check of one, and its least-privilege policy."""
from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import unquote

SAGEMAKER_PRINCIPAL = "sagemaker.amazonaws.com"
TRAINING_LOG_GROUP = "/aws/sagemaker/TrainingJobs"
ROLE_POLICY_NAME = "essedum-executor-training"
ECR_REPOSITORY = re.compile(r"^(\d{12})\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?/([a-z0-9._/-]+)$")


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


def least_privilege_policy(bucket: str, prefix: str, region: str, account: str, image_uri: str) -> dict[str, Any]:
    """Return the inline policy of a training role: one bucket prefix, its log group, its image."""
    partition = "aws-cn" if region.startswith("cn-") else "aws"
    objects = f"arn:{partition}:s3:::{bucket}/{prefix + '/' if prefix else ''}*"
    log_group = f"arn:{partition}:logs:{region}:{account}:log-group:{TRAINING_LOG_GROUP}"
    statements: list[dict[str, Any]] = [
        {"Sid": "ObjectsUnderThePrefix", "Effect": "Allow",
         "Action": ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
         "Resource": objects},
        {"Sid": "ListThePrefix", "Effect": "Allow", "Action": "s3:ListBucket",
         "Resource": f"arn:{partition}:s3:::{bucket}",
         **({"Condition": {"StringLike": {"s3:prefix": [prefix, f"{prefix}/*"]}}} if prefix else {})},
        {"Sid": "TrainingLogs", "Effect": "Allow",
         "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
         "Resource": [log_group, f"{log_group}:log-stream:*"]},
        {"Sid": "TrainingMetrics", "Effect": "Allow", "Action": "cloudwatch:PutMetricData", "Resource": "*",
         "Condition": {"StringEquals": {"cloudwatch:namespace": TRAINING_LOG_GROUP}}},
        # GetAuthorizationToken has no resource to scope to; pulls are limited to one repository.
        {"Sid": "RegistryToken", "Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
    ]
    repository = ECR_REPOSITORY.match(image_uri.split("@")[0].rsplit(":", 1)[0])
    if repository:
        repo_account, repo_region, name = repository.groups()
        statements.append({
            "Sid": "PullTheTrainingImage", "Effect": "Allow",
            "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"],
            "Resource": f"arn:{partition}:ecr:{repo_region}:{repo_account}:repository/{name}"})
    return {"Version": "2012-10-17", "Statement": statements}
