"""Run a pipeline script with the exact command line the Essedum backend gave it.

SageMaker hands an entry point only `--name value` hyperparameters, but the backend appends
arguments such as `"Last_Execution_Time":"-1"` to scheduled runs. The executor then makes this file
the entry point and passes the pipeline's own argv, as a JSON list, in one hyperparameter.
"""
from __future__ import annotations

import json
import runpy
import sys

ARGUMENT = "--essedum-argv"


def main(args: list[str]) -> None:
    """Run argv[0] as __main__ with sys.argv set to the argv this command line carries."""
    if ARGUMENT not in args or args.index(ARGUMENT) + 1 >= len(args):
        sys.exit(f"essedum_launch.py: expected {ARGUMENT} '<JSON list: script, arguments...>'")
    argv = json.loads(args[args.index(ARGUMENT) + 1])
    sys.argv = [str(item) for item in argv]
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
