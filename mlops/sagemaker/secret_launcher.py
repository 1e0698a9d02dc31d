"""Put this job's secrets into its environment, then run its script (added to the code by the Essedum executor).

SageMaker shows a training job's Environment and HyperParameters in clear, so the executor keeps a
job's secret values in one AWS Secrets Manager secret and passes only its ARN. The training
container runs this file as the program; it reads the secret with the job's execution role (which
may read the executor's job secrets only), sets each value as an environment variable and replaces
itself with `python <entry point> <the same arguments>`, so the script sees the same flags, the same
process id and the same environment it would have had. Runs on the Python of the container: the
standard library and boto3, which AWS's framework images carry.
"""
from __future__ import annotations

import json
import os
import sys

SECRET_ARN = "ESSEDUM_SECRET_ARN"
ENTRY_POINT = "ESSEDUM_ENTRY_POINT"


def secret_environment(arn: str) -> dict[str, str]:
    """Return the variables stored in a job's secret (a JSON object of names to values)."""
    import boto3

    region = arn.split(":")[3]
    answer = boto3.client("secretsmanager", region_name=region).get_secret_value(SecretId=arn)
    values = json.loads(answer["SecretString"])
    if not isinstance(values, dict) or not all(isinstance(value, str) for value in values.values()):
        raise SystemExit(f"secret {arn} does not hold an object of names to text values")
    return values


def main() -> None:
    """Resolve the secret into the environment and run the entry point in this process's place."""
    entry_point = os.environ.pop(ENTRY_POINT, "")
    if not entry_point:
        raise SystemExit(f"{ENTRY_POINT} is not set: the executor names the script to run there")
    arn = os.environ.pop(SECRET_ARN, "")
    if arn:
        os.environ.update(secret_environment(arn))
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), entry_point)
    os.execv(sys.executable, [sys.executable, script, *sys.argv[1:]])


if __name__ == "__main__":
    main()
