"""A SageMaker job's secret environment, kept in AWS Secrets Manager while the job runs.

DescribeTrainingJob and the console show Environment and HyperParameters in clear, so a job's
secret values never go there. They go to one secret per job (`essedum/jobs/<job name>`, tagged with
the executor's job id), the job gets the secret's ARN, and training_scripts/essedum_launch.py, added
to the job's code as its program, reads the secret and starts the real entry point with the values
in its environment. The secret is deleted, without a recovery window, when the job ends. An executor that
may not create secrets refuses such a job with the reason instead of sending its values in clear.
"""
from __future__ import annotations

import json
import logging
from typing import Any, Callable

from job import Job
from mlops.aws import ACCESS_DENIED_CODES, AWS_ERRORS, is_not_found
from mlops.errors import AccessDenied, error_code, error_text
from mlops.reporter import JobReporter
from mlops.sagemaker.iam import JOB_SECRET_PREFIX

logger = logging.getLogger(__name__)

# The variables training_scripts/essedum_launch.py reads (a program of its own in the container).
SECRET_ARN_VARIABLE = "ESSEDUM_SECRET_ARN"
ENTRY_POINT_VARIABLE = "ESSEDUM_ENTRY_POINT"


class JobSecrets:
    """Creates, hands over and deletes the Secrets Manager secret of each job that has secret values."""

    def __init__(self, client: Callable[[], Any]):
        self._client = client

    def hand_over(self, ctx: JobReporter, job_name: str) -> dict[str, str]:
        """Store the job's secret environment in Secrets Manager; return the job's Environment (its ARN)."""
        arn = self._put(ctx.job, job_name, dict(ctx.secrets["environment"]))
        ctx.merge_details(secret_arn=arn)
        ctx.log(f"[executor] the job's environment is kept in AWS Secrets Manager ({arn}), not in the job")
        return {SECRET_ARN_VARIABLE: arn}

    def _put(self, job: Job, job_name: str, environment: dict[str, str]) -> str:
        client = self._client()
        name = f"{JOB_SECRET_PREFIX}{job_name}"
        value = json.dumps(environment)
        try:
            try:
                return client.create_secret(
                    Name=name, SecretString=value, Description="Environment of one Essedum executor job",
                    Tags=[{"Key": "essedum:job-id", "Value": job.id}, {"Key": "essedum:kind", "Value": job.kind}],
                )["ARN"]
            except AWS_ERRORS as exc:
                if error_code(exc) != "ResourceExistsException":
                    raise
                # A worker died after creating it: the same job runs again with the same values.
                return client.put_secret_value(SecretId=name, SecretString=value)["ARN"]
        except AWS_ERRORS as exc:
            if error_code(exc) in ACCESS_DENIED_CODES:
                raise AccessDenied("environment", "this job has secret environment values, which are handed to "
                                                  "SageMaker jobs through AWS Secrets Manager, and the executor may "
                                                  f"not create secrets there ({error_text(exc)}); the job is "
                                                  "refused rather than sent with its secrets in clear") from exc
            raise

    def forget(self, ctx: JobReporter) -> None:
        """Delete the job's secret, if it has one; a failure is logged with the secret's ARN."""
        job = ctx.job
        arn = job.details.get("secret_arn")
        if not arn:
            return
        try:
            self._client().delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True)
        except AWS_ERRORS as exc:
            if not is_not_found(exc):
                logger.warning("job %s: cannot delete its secret %s: %s", job.id, arn, error_text(exc))
                return
        ctx.merge_details(secret_arn=None)
