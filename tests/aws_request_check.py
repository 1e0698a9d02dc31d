"""A check of every AWS request the test suite sends, against what AWS itself would accept.

moto accepts requests AWS refuses: it checks little beyond the JSON shape. botocore's own
ParamValidator checks types, required members and minimums, but not maximum lengths, patterns or
enums, and nothing across fields. This check adds those, reading every limit from botocore's model
(the same source AWS's SDKs are generated from), and the cross-field rules of
mlops/sagemaker/request_rules.py. A refused request raises RequestAWSWouldRefuse (an AssertionError, so it is
not mistaken for an AWS answer) and is recorded, so a test fails even when the code under test
swallows the exception.

It is installed through botocore's list of built-in handlers, which every botocore session copies
when it is created: every client of every session the suite makes carries it, without the product
knowing. A child process (the service started as `python app.py`, the secrets launcher) gets it
from tests/request_check_site/sitecustomize.py on PYTHONPATH, which installs it when botocore is
first imported and appends refusals to the file named by AWS_REQUEST_CHECK_LOG.
"""
from __future__ import annotations

import importlib
import json
import os
import threading
from typing import Any

import regex  # AWS's patterns use \p{...} classes, which the re module lacks
from botocore.validate import ParamValidator

from mlops.sagemaker.request_rules import problems_of

LOG_ENV = "AWS_REQUEST_CHECK_LOG"
_lock = threading.Lock()
refusals: list[str] = []
_patterns: dict[str, Any] = {}


class RequestAWSWouldRefuse(AssertionError):
    """A request that AWS would refuse, though moto may have accepted it."""


def _pattern(text: str) -> Any:
    if text not in _patterns:
        try:
            _patterns[text] = regex.compile(text)
        except regex.error:
            # A few patterns of unused fields are written for Java (surrogate ranges); skip those.
            _patterns[text] = None
    return _patterns[text]


def _model_problems(shape: Any, value: Any, path: str) -> list[str]:
    problems: list[str] = []
    limit = shape.metadata.get("max")
    kind = shape.type_name
    if kind == "structure" and isinstance(value, dict):
        for name, member in shape.members.items():
            if name in value:
                problems += _model_problems(member, value[name], f"{path}.{name}" if path else name)
    elif kind == "list" and isinstance(value, list):
        if limit is not None and len(value) > limit:
            problems.append(f"{path}: {len(value)} items, at most {limit}")
        for index, item in enumerate(value):
            problems += _model_problems(shape.member, item, f"{path}[{index}]")
    elif kind == "map" and isinstance(value, dict):
        if limit is not None and len(value) > limit:
            problems.append(f"{path}: {len(value)} entries, at most {limit}")
        for key, item in value.items():
            problems += _model_problems(shape.key, key, f"{path} key {str(key)[:40]!r}")
            problems += _model_problems(shape.value, item, f"{path}.{key}")
    elif kind == "string" and isinstance(value, str):
        if limit is not None and len(value) > limit:
            problems.append(f"{path}: {len(value)} characters, at most {limit}")
        if shape.enum and value not in shape.enum:
            problems.append(f"{path}: {value[:60]!r} is not one of the {len(shape.enum)} values of {shape.name}")
        pattern = shape.metadata.get("pattern")
        compiled = _pattern(pattern) if pattern else None
        if compiled is not None and not compiled.fullmatch(value):
            problems.append(f"{path}: {value[:60]!r} does not match {pattern}")
    elif kind in ("integer", "long", "float", "double") and isinstance(value, (int, float)):
        if limit is not None and value > limit:
            problems.append(f"{path}: {value} is above the maximum {limit}")
    return problems


def request_problems(operation_model: Any, params: dict[str, Any]) -> list[str]:
    """Return everything AWS would refuse in a request: botocore's checks, the model's limits, cross-field rules."""
    shape = operation_model.input_shape
    if shape is None:
        return []
    problems: list[str] = []
    report = ParamValidator().validate(params, shape)
    if report.has_errors():
        problems.append(report.generate_report())
    problems += _model_problems(shape, params, "")
    if operation_model.service_model.service_name == "sagemaker":
        problems += [f"{field}: {reason}" for field, reason in problems_of(operation_model.name, params)]
    return problems


def check_request(params: dict[str, Any], model: Any, **_: Any) -> None:
    """botocore before-parameter-build handler: refuse a request AWS would refuse."""
    problems = request_problems(model, params)
    if not problems:
        return
    text = f"{model.service_model.service_name}.{model.name} would be refused by AWS: " + "; ".join(problems)
    with _lock:
        refusals.append(text)
        log = os.environ.get(LOG_ENV)
        if log:
            with open(log, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(text) + "\n")
    raise RequestAWSWouldRefuse(text)


def install() -> None:
    """Make every botocore session created from now on check every request."""
    # import_module, not `import botocore.handlers`: in a child process this runs while that
    # module finishes loading, before it is an attribute of the botocore package.
    handlers = importlib.import_module("botocore.handlers")
    entry = ("before-parameter-build", check_request)
    if entry not in handlers.BUILTIN_HANDLERS:
        handlers.BUILTIN_HANDLERS.append(entry)


def take_refusals() -> list[str]:
    """Return and forget the refusals recorded so far (this process's and its children's)."""
    with _lock:
        found = list(refusals)
        refusals.clear()
        log = os.environ.get(LOG_ENV)
        if log and os.path.exists(log):
            with open(log, encoding="utf-8") as handle:
                found += [json.loads(line) for line in handle if line.strip()]
            os.remove(log)
    return list(dict.fromkeys(found))
