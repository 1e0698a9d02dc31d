"""What a training script declares with `--describe`, and checking hyperparameters against it.

Checking before launch is what keeps a misspelt or out-of-range hyperparameter from becoming a
failed (and billed) training job.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Mapping

from mlops.errors import InvalidRequest, MalformedRequest
from mlops.sandbox import Sandbox

BUNDLED_SCRIPTS = Path(__file__).resolve().parent.parent / "training_scripts"
BUNDLED_ENTRY_POINT = "train.py"
# Read at request time: long enough for the interpreter and the script's imports, short of a client's patience.
DESCRIBE_TIMEOUT_S = 30
_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})

_cache: dict[str, dict[str, Any] | None] = {}
_cache_lock = threading.Lock()


def is_bundled(source_dir: Path, entry_point: str | None) -> bool:
    """True when a request runs the bundled training script (which resumes from its checkpoints)."""
    return Path(source_dir).resolve() == BUNDLED_SCRIPTS and (entry_point or BUNDLED_ENTRY_POINT) == BUNDLED_ENTRY_POINT


def describe(source_dir: Path, entry_point: str, sandbox: Sandbox, python: str | None = None) -> dict[str, Any] | None:
    """Return the bundled script's `--describe` declaration, read in the sandbox; None for any other script.

    A user's own script is never run to describe it: that would execute uploaded code at every
    request. The bundled folder's scripts run as user code does (mlops.sandbox: the sandbox's user,
    no network, the folder bound read-only, writes only to a /tmp of its own), without bytecode
    writes and within DESCRIBE_TIMEOUT_S: an entry point naming any of them at request time cannot
    change the executor's code. Cached by the script's content, so an edited script is described again.
    """
    if Path(source_dir).resolve() != BUNDLED_SCRIPTS:
        return None
    script = source_dir / entry_point
    digest = hashlib.sha256(script.read_bytes()).hexdigest()
    with _cache_lock:
        if digest in _cache:
            return _cache[digest]
    description = _run_describe(source_dir, entry_point, sandbox, python or sys.executable)
    with _cache_lock:
        _cache[digest] = description
    return description


def _run_describe(source_dir: Path, entry_point: str, sandbox: Sandbox, python: str) -> dict[str, Any] | None:
    # The script by its full path from a working folder of its own: a script that writes where it runs
    # (make_digits_dataset.py would make a folder named --describe) writes nowhere that lasts.
    argv = [python, "-B", str(Path(source_dir, entry_point)), "--describe"]
    with tempfile.TemporaryDirectory(prefix="describe-") as scratch:
        cwd = Path("/tmp") if sandbox.isolating else Path(scratch)
        try:
            completed = subprocess.run(sandbox.wrap(argv, cwd=cwd, readable=[Path(source_dir)]), cwd=scratch,
                                       capture_output=True, text=True, stdin=subprocess.DEVNULL,
                                       timeout=DESCRIBE_TIMEOUT_S, env=_describe_env(sandbox))
            description = json.loads(completed.stdout) if completed.returncode == 0 else None
        except (subprocess.TimeoutExpired, ValueError, RecursionError):
            description = None
    if not isinstance(description, dict) or not isinstance(description.get("hyperparameters"), dict):
        return None
    return description


def _describe_env(sandbox: Sandbox) -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", "SYSTEMROOT", "TMP", "TEMP", "TMPDIR")
    env = {key: os.environ[key] for key in keep if key in os.environ}
    if sandbox.isolating:
        # The executor's home and temporary folders are not there: the sandbox's own /tmp is.
        env.update(HOME="/tmp", TMPDIR="/tmp")
        env.pop("TMP", None)
        env.pop("TEMP", None)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def canonical_name(name: str) -> str:
    """Return the declared spelling of a hyperparameter name (underscores read as dashes)."""
    return name.replace("_", "-")


def check_hyperparameters(values: Mapping[str, Any], description: dict[str, Any] | None,
                          field: str = "hyperparameters") -> dict[str, str]:
    """Check hyperparameters against a script's declaration and return them as strings."""
    if not isinstance(values, Mapping):
        raise MalformedRequest(field, "must be an object of name: value")
    declared = (description or {}).get("hyperparameters")
    result: dict[str, str] = {}
    for name, value in values.items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        if not isinstance(value, (str, int, float)):
            raise MalformedRequest(f"{field}.{name}", "must be a string or a number")
        text = str(value)
        if declared is None:
            result[name] = text
            continue
        key = canonical_name(name)
        if key not in declared:
            raise InvalidRequest(f"{field}.{name}",
                                 f"is not a hyperparameter of the script; it takes {', '.join(sorted(declared))}")
        result[key] = check_value(f"{field}.{name}", text, declared[key])
    return result


def check_value(field: str, text: str, spec: dict[str, Any]) -> str:
    """Check one hyperparameter value against its declaration and return it as text."""
    kind = spec.get("type", "str")
    try:
        if kind == "int":
            value: Any = int(text)
        elif kind == "float":
            value = float(text)
            if value != value or value in (float("inf"), float("-inf")):
                raise ValueError
        elif kind == "bool":
            if text.lower() not in _TRUE | _FALSE:
                raise ValueError
            return "true" if text.lower() in _TRUE else "false"
        else:
            value = text
    except ValueError:
        raise InvalidRequest(field, f"must be of type {kind}, got {text!r}") from None
    if "minimum" in spec and value < spec["minimum"]:
        raise InvalidRequest(field, f"must be at least {spec['minimum']}, got {text}")
    if "maximum" in spec and value > spec["maximum"]:
        raise InvalidRequest(field, f"must be at most {spec['maximum']}, got {text}")
    if spec.get("choices") and value not in spec["choices"]:
        raise InvalidRequest(field, f"must be one of {', '.join(map(str, spec['choices']))}, got {text!r}")
    return text


def _flag_name(flag: str) -> str | None:
    """Return the name of a --name or -x flag (one letter after a single dash), else None."""
    if flag.startswith("--") and len(flag) > 2:
        return flag[2:]
    if len(flag) >= 2 and flag[0] == "-" and flag[1].isalpha() and (len(flag) == 2 or flag[2] == "="):
        return flag[1:]
    return None


def flag_pairs(args: list[str]) -> dict[str, str]:
    """Read a script's arguments as --name value (or --name=value, -x value) pairs: its hyperparameters."""
    pairs: dict[str, str] = {}
    index = 0
    while index < len(args):
        name = _flag_name(args[index])
        if name is None:
            raise InvalidRequest("command", f"argument {args[index]!r}: on SageMaker the script's arguments must be "
                                            "--name value pairs (they become hyperparameters)")
        if "=" in name:
            name, value = name.split("=", 1)
            index += 1
        elif index + 1 < len(args) and _flag_name(args[index + 1]) is None:
            value = args[index + 1]
            index += 2
        else:
            raise InvalidRequest("command", f"argument {args[index]!r} has no value; on SageMaker the script's "
                                            "arguments must be --name value pairs")
        if name in pairs:
            raise InvalidRequest("command", f"argument {name} is given twice")
        pairs[name] = value
    return pairs


def script_flags(hyperparameters: Mapping[str, str]) -> list[str]:
    """Return hyperparameters as the SageMaker training toolkit passes them: sorted, -x for one-letter names."""
    # sagemaker_training.mapping.to_cmd_args: sorted keys, "--%s" if len(name) > 1 else "-%s".
    return [item for name in sorted(hyperparameters)
            for item in (f"--{name}" if len(name) > 1 else f"-{name}", hyperparameters[name])]


def pipeline_arguments(args: list[str]) -> list[str]:
    """Return a pipeline's arguments as SageMaker would pass them, so both platforms pass them alike.

    Arguments that are name-value pairs come back sorted, in the toolkit's form; any others can run
    only on this machine (SageMaker refuses them at submission) and stay as written.
    """
    try:
        return script_flags(flag_pairs(args))
    except InvalidRequest:
        return list(args)
