"""Run a pipeline script with its secrets in its environment and the exact command line it was given.

SageMaker hands an entry point only `--name value` hyperparameters, but the Essedum backend appends
arguments such as `"Last_Execution_Time":"-1"` to scheduled runs; such a pipeline's own argv comes
as a JSON list in one hyperparameter, `--essedum-argv`. Otherwise the script named by
ESSEDUM_ENTRY_POINT runs with this file's arguments.

SageMaker also shows a training job's Environment and HyperParameters in clear, so a job's secret
values are kept in one AWS Secrets Manager secret and only its ARN comes, as ESSEDUM_SECRET_ARN.
This file reads it with the job's execution role and puts the values into the environment before
the script starts. It runs on the container's Python: the standard library, and boto3 (which
AWS's framework images carry) only when there is a secret to read.
"""
from __future__ import annotations

import json
import os
import runpy
import sys

ARGUMENT = "--essedum-argv"
SECRET_ARN = "ESSEDUM_SECRET_ARN"
ENTRY_POINT = "ESSEDUM_ENTRY_POINT"


def secret_environment(arn: str) -> dict[str, str]:
    """Return the variables stored in a job's secret (a JSON object of names to text values)."""
    import boto3

    region = arn.split(":")[3]
    answer = boto3.client("secretsmanager", region_name=region).get_secret_value(SecretId=arn)
    values = json.loads(answer["SecretString"])
    if not isinstance(values, dict) or not all(isinstance(value, str) for value in values.values()):
        sys.exit(f"essedum_launch.py: secret {arn} does not hold an object of names to text values")
    return values


def command_line(args: list[str]) -> list[str]:
    """Return the script's argv: the JSON list after --essedum-argv, or ESSEDUM_ENTRY_POINT and args."""
    if ARGUMENT in args:
        if args.index(ARGUMENT) + 1 >= len(args):
            sys.exit(f"essedum_launch.py: expected {ARGUMENT} '<JSON list: script, arguments...>'")
        return [str(item) for item in json.loads(args[args.index(ARGUMENT) + 1])]
    entry_point = os.environ.pop(ENTRY_POINT, "")
    if not entry_point:
        sys.exit(f"essedum_launch.py: expected {ARGUMENT} or {ENTRY_POINT} naming the script to run")
    return [entry_point, *args]


def main(args: list[str]) -> None:
    """Resolve the job's secret into the environment, then run the script as __main__."""
    arn = os.environ.pop(SECRET_ARN, "")
    if arn:
        os.environ.update(secret_environment(arn))
    sys.argv = command_line(args)
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
