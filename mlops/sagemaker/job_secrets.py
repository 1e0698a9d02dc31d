"""A SageMaker job's secret environment, kept in AWS Secrets Manager while the job runs.

DescribeTrainingJob and the console show Environment and HyperParameters in clear, so a job's
secret values never go there. They go to one secret per job (`essedum/jobs/<job name>`, tagged with
the executor's job id), the job gets the secret's ARN, and secret_launcher.py, added to the job's
code as its program, reads the secret and starts the real entry point with the values in its
environment. The secret is deleted, without a recovery window, when the job ends. An executor that
may not create secrets refuses such a job with the reason instead of sending its values in clear.
"""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any, Callable

from db import Job, JobStore
from mlops.aws import ACCESS_DENIED_CODES, AWS_ERRORS, is_not_found
from mlops.base import JobContext
from mlops.errors import AccessDenied, Conflict, error_code, error_text
from mlops.sagemaker import secret_launcher
from mlops.sagemaker.iam import JOB_SECRET_PREFIX

logger = logging.getLogger(__name__)

LAUNCHER_NAME = "essedum_launcher.py"


class JobSecrets:
    """Creates, hands over and deletes the Secrets Manager secret of each job that has secret values."""

    def __init__(self, client: Callable[[], Any], store: JobStore):
        self._client = client
        self.store = store

    def hand_over(self, ctx: JobContext, job_name: str, code_dir: Path, entry_point: str) -> dict[str, str]:
        """Store the job's secret environment, add the launcher to its code; return the job's Environment."""
        launcher = code_dir / LAUNCHER_NAME
        if launcher.exists():
            raise Conflict("command", f"the pipeline's files contain {LAUNCHER_NAME}, the name the executor "
                                          "gives the program that hands a job its secrets; rename that file")
        arn = self._put(ctx.job, job_name, dict(ctx.secrets["environment"]))
        ctx.merge_details(secret_arn=arn)
        shutil.copyfile(secret_launcher.__file__, launcher)
        ctx.log(f"[executor] the job's environment is kept in AWS Secrets Manager ({arn}), not in the job")
        return {secret_launcher.SECRET_ARN: arn, secret_launcher.ENTRY_POINT: entry_point}

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

    def forget(self, job: Job) -> None:
        """Delete the job's secret, if it has one; a failure is logged with the secret's ARN."""
        arn = job.details.get("secret_arn")
        if not arn:
            return
        try:
            self._client().delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True)
        except AWS_ERRORS as exc:
            if not is_not_found(exc):
                logger.warning("job %s: cannot delete its secret %s: %s", job.id, arn, error_text(exc))
                return
        self.store.merge_details(job.id, secret_arn=None)
        job.details["secret_arn"] = None
