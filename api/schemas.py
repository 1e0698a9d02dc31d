"""Request schemas (JSON Schema): they validate requests and, unchanged, document them in OpenAPI; and the 202 answer."""
from __future__ import annotations

import json
import re
from typing import Any

import jsonschema_rs
from flask import request
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from mlops.errors import InvalidRequest, MalformedRequest

MAX_DEPTH = 32
NO_NUL = "^[^\\u0000]*$"
# A lone surrogate reaches a parsed UTF-8 body as a \ud800-style escape or as its raw bytes, which
# json.loads decodes with "surrogatepass".
SURROGATE_IN_JSON = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")


def text(max_length: int = 255, **extra: Any) -> dict[str, Any]:
    """Return the schema of a non-empty string without NUL bytes."""
    return {"type": "string", "minLength": 1, "maxLength": max_length, "pattern": NO_NUL, **extra}


ENV_NAME = "^[A-Za-z_][A-Za-z0-9_]*$"
# The Essedum backend sends its users' secret names as environment names: any text a process
# environment can hold, so anything without '=' or NUL.
ANY_ENV_NAME = "^[^=\\u0000]+$"
# name, version and project_id become storage keys and the published log path.
PATH_SAFE = "^(?!.*\\.\\.)[^/\\\\\\u0000-\\u001f\\u007f]+$"
# `storage` comes from a free-text datasource field (Local, S3, MINIO); JSON Schema has no
# case-insensitive enum, and ECMA patterns no inline flags.
STORAGE_ANY_CASE = "^([Ll][Oo][Cc][Aa][Ll]|[Mm][Ii][Nn][Ii][Oo]|[Ss]3)$"
# Marks an integer field the backend fills with optInt, whose 0 means "not given" (an OpenAPI extension).
ZERO_IS_ABSENT = "x-zero-is-absent"
PATTERN_MESSAGES = {
    PATH_SAFE: "must not contain '/', '\\', '..' or control characters (it becomes a storage key and a path)",
    STORAGE_ANY_CASE: "must be local, minio or s3 (any case)",
    ANY_ENV_NAME: "must not be empty or contain '=' or NUL",
}

EXECUTE = {
    "title": "Pipeline",
    "description": "An Essedum pipeline to run: the backend's POST /execute body.",
    "type": "object",
    "additionalProperties": False,
    "required": ["bucket", "project_id", "name", "version", "credentials", "input_artifacts", "command",
                 "storage"],
    "properties": {
        "bucket": text(255, description="bucket holding the input artifacts"),
        "project_id": text(255, pattern=PATH_SAFE, description="Essedum project"),
        "name": text(255, pattern=PATH_SAFE, description="pipeline name"),
        "version": text(64, pattern=PATH_SAFE, description="pipeline version"),
        "credentials": {
            "type": "object",
            "description": "storage credentials; never stored in plain text, logged or echoed. The backend "
                           "sends empty strings for local storage; s3 and minio need them",
            "additionalProperties": False,
            "required": ["endpoint", "access_key", "secret_key"],
            "properties": {key: {"type": "string", "maxLength": 1024, "pattern": NO_NUL}
                           for key in ("endpoint", "access_key", "secret_key")},
        },
        "input_artifacts": text(1024, description="key prefix (or storage-root path) of the pipeline's files"),
        "command": text(4096, description="e.g. 'python pipe1.py --epochs 3'; the script is one of the files"),
        "storage": {"type": "string", "pattern": STORAGE_ANY_CASE, "description": "local, minio or s3, any case"},
        "configs": {"type": "object", "maxProperties": 100, "description": "run settings (instance_type, role, ...)"},
        "environment": {
            "type": "object", "maxProperties": 100,
            "propertyNames": {"pattern": ANY_ENV_NAME, "maxLength": 512},
            "additionalProperties": {"type": "string", "maxLength": 32768, "pattern": NO_NUL},
            "description": "environment variables for the script; treated as secrets",
        },
    },
}

HYPERPARAMETERS = {
    "type": "object", "maxProperties": 100,
    "propertyNames": {"minLength": 1, "maxLength": 256, "pattern": "^[A-Za-z0-9_.-]+$"},
    "additionalProperties": {"type": ["string", "number", "boolean"], "maxLength": 2500, "pattern": NO_NUL},
}

TAGS = {
    "oneOf": [
        {"type": "object", "maxProperties": 50, "propertyNames": {"minLength": 1, "maxLength": 128},
         "additionalProperties": {"type": "string", "maxLength": 256}},
        {"type": "array", "maxItems": 50, "items": {
            "type": "object", "additionalProperties": False, "required": ["Key", "Value"],
            "properties": {"Key": text(128), "Value": {"type": "string", "maxLength": 256}}}},
    ],
}

TRAINING = {
    "title": "TrainingRequest",
    "description": "Train a model with the bundled script (or your own) on a dataset.",
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "dataset"],
    "properties": {
        "name": text(128, pattern="^[A-Za-z0-9][A-Za-z0-9 ._-]*$", description="a name for the training run"),
        "dataset": text(1024, description="a folder inside the storage root, or an s3:// URI"),
        "metadata_file": text(255, description="labels CSV inside the dataset (default metadata.csv)"),
        "hyperparameters": HYPERPARAMETERS,
        "instance_type": text(64, pattern="^ml\\.[a-z0-9-]+\\.[a-z0-9]+$"),
        "instance_count": {"type": "integer", "minimum": 1, "maximum": 100},
        "max_runtime_seconds": {"type": "integer", "minimum": 1, "maximum": 2419200},
        "spot": {"type": "boolean"},
        "entry_point": text(255, pattern="^[A-Za-z0-9_][A-Za-z0-9_./-]*\\.py$"),
        "source_dir": text(1024, description="a code folder inside the storage root (default: the bundled one)"),
        "tags": TAGS,
        "retry_on_restart": {"type": "boolean", "description": "queue again if the executor restarts mid-run"},
    },
}

# Missing, unknown and mistyped fields are 400, as the Essedum backend's old executor answered;
# a well-formed field with a bad value is 422.
# The answer of every route that queues a training job or a rerun (202 Accepted).
ACCEPTED = {
    "title": "Accepted",
    "type": "object",
    "required": ["job_id", "status", "status_url"],
    "properties": {"job_id": {"type": "string", "format": "uuid"},
                   "status": {"type": "string", "enum": ["WAITING"]},
                   "phase": {"type": "string"},
                   "status_url": {"type": "string", "description": "GET it for status, progress and metrics"},
                   "log_url": {"type": "string"},
                   "rerun_of": {"type": "string", "format": "uuid", "description": "the job this one reruns"}},
}

# The 202 answer of an AutoML submission (the Essedum MLOps shape).
AUTOML_ACCEPTED = {
    "title": "AutoMLAccepted",
    "type": "object",
    "required": ["job_name", "status", "job_id", "status_url"],
    "properties": {"job_name": {"type": "string"}, "job_arn": {"type": ["string", "null"]},
                   "status": {"type": "string", "enum": ["Submitted"]}, "job_id": {"type": "string", "format": "uuid"},
                   "status_url": {"type": "string"}},
}
# The 202 answer of a deployment or batch inference: the record in Essedum's shape and the job doing the work.
RECORD_ACCEPTED = {
    "title": "RecordAccepted",
    "type": "object",
    "required": ["sourceID", "name", "type", "status", "jobId"],
    "properties": {"sourceID": {"type": "string"}, "name": {"type": "string"}, "type": {"type": "string"},
                   "status": {"type": "string"}, "rawPayload": {"type": "string", "description": "JSON text"},
                   "syncDate": {"type": ["string", "null"]}, "createdOn": {"type": ["string", "null"]},
                   "jobId": {"type": "string", "format": "uuid", "description": "GET /status/<jobId> follows it"}},
}

_STRUCTURAL = frozenset({"required", "additionalProperties", "type", "oneOf", "propertyNames"})


def json_body(schema: dict[str, Any]) -> dict[str, Any]:
    """Parse the request body as JSON, drop absent-valued optional fields, validate; raise InvalidRequest."""
    raw = request.get_data(cache=True)
    if not raw:
        raise MalformedRequest("body", "a JSON object is required")
    body = parse_json(raw)
    # JSON may carry a lone surrogate (\ud800) that no file name, log or database text can hold. In a
    # UTF-8 body its bytes show it; other bodies (UTF-16, UTF-32) and those that show one get the full check.
    if json.detect_encoding(raw) not in ("utf-8", "utf-8-sig") or SURROGATE_IN_JSON.search(raw):
        try:
            json.dumps(body, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise MalformedRequest("body", "holds text that is not valid Unicode (a lone surrogate escape)") from None
    body = without_absent(body, schema)
    validate(body, schema)
    return body


def parse_json(raw: bytes) -> Any:
    """Parse a JSON body; raise MalformedRequest for invalid JSON or nesting deeper than MAX_DEPTH."""
    try:
        body = json.loads(raw)
    except RecursionError:
        raise MalformedRequest("body", f"JSON nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:
        raise MalformedRequest("body", f"not valid JSON: {exc}") from None
    if _depth(body) > MAX_DEPTH:
        raise MalformedRequest("body", f"JSON nested deeper than {MAX_DEPTH} levels")
    return body


def without_absent(value: Any, schema: dict[str, Any]) -> Any:
    """Drop the optional fields that hold what the Essedum backend sends for "not given".

    Its bodies are built with org.json's optString and optInt, which turn a field the user left
    empty into "" and 0 (ICIPModelAWSServiceSageMaker.getBodyObjForEndpointsRegister always sends
    PrimaryContainer {"Image": "", "ModelDataUrl": ""}). A 0 counts as absent only in the fields the
    backend fills with optInt, marked with ZERO_IS_ABSENT.
    """
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [without_absent(item, schema["items"]) for item in value]
    properties = schema.get("properties")
    if not isinstance(value, dict) or not isinstance(properties, dict):
        return value
    required = set(schema.get("required", ()))
    kept = {}
    for key, item in value.items():
        field = properties.get(key)
        if key not in required and isinstance(field, dict) and _is_absent(item, field):
            continue
        kept[key] = without_absent(item, field) if isinstance(field, dict) else item
    return kept


def _is_absent(value: Any, field: dict[str, Any]) -> bool:
    if value == "" and isinstance(value, str):
        return True
    return value == 0 and type(value) is int and bool(field.get(ZERO_IS_ABSENT))


def validate(body: Any, schema: dict[str, Any]) -> None:
    """Validate a document against a schema; raise InvalidRequest for its first error."""
    compiled, reference = _validators(schema)
    # The compiled validator answers a valid body in microseconds; jsonschema, the reference, decides
    # every body the compiled one refuses and names the field. The compiled one is never more lenient
    # (it is stricter only where Python's `$` lets a trailing newline through), so no check is lost.
    if _compiled_accepts(compiled, body):
        return
    errors = sorted(reference.iter_errors(body), key=_error_rank)
    if errors:
        raise _invalid(errors[0])


_compiled: dict[int, tuple[Any, Draft202012Validator]] = {}


def _compiled_accepts(compiled: Any, body: Any) -> bool:
    try:
        return compiled.is_valid(body)
    except ValueError:
        # Text it cannot take (a lone surrogate, which json_body refuses earlier) goes to the reference.
        return False


def _validators(schema: dict[str, Any]) -> tuple[Any, Draft202012Validator]:
    # Building a validator compiles the schema; the schemas are module constants, so build each once.
    pair = _compiled.get(id(schema))
    if pair is None or pair[1].schema is not schema:
        pair = _compiled[id(schema)] = (jsonschema_rs.Draft202012Validator(schema), Draft202012Validator(schema))
    return pair


def _error_rank(error: ValidationError) -> tuple[int, int, str]:
    return (0 if error.validator in _STRUCTURAL else 1, len(error.absolute_path), str(list(error.absolute_path)))


def _invalid(error: ValidationError) -> InvalidRequest:
    path = ".".join(str(part) for part in error.absolute_path)
    invalid = MalformedRequest if error.validator in _STRUCTURAL else InvalidRequest
    if error.validator == "required":
        missing = [name for name in error.validator_value if name not in error.instance]
        field = ".".join(filter(None, [path, missing[0]]))
        return MalformedRequest(field, "is required")
    if error.validator == "additionalProperties":
        allowed = set(error.schema.get("properties", {}))
        unknown = sorted(name for name in error.instance if name not in allowed)
        field = ".".join(filter(None, [path, unknown[0]]))
        return MalformedRequest(field, f"is not a known field; known fields: {', '.join(sorted(allowed))}")
    if error.validator == "minLength" and error.validator_value == 1:
        return invalid(path or "body", "must not be empty")
    if error.validator == "pattern" and error.validator_value == NO_NUL:
        return invalid(path or "body", "must not contain NUL bytes")
    if error.validator == "pattern" and error.validator_value in PATTERN_MESSAGES:
        return invalid(path or "body", PATTERN_MESSAGES[error.validator_value])
    if error.validator == "type":
        return invalid(path or "body", f"must be of type {error.validator_value}")
    if error.validator == "maxLength":
        return invalid(path or "body", f"is longer than {error.validator_value} characters")
    # jsonschema's own message quotes the offending value, which may be an environment or a
    # credential: the answer names the rule instead.
    template = _RULE_MESSAGES.get(error.validator, "does not satisfy the {rule} rule of its schema")
    return invalid(path or "body", template.format(rule=error.validator, limit=error.validator_value)[:300])


_RULE_MESSAGES = {
    "maxProperties": "has more than {limit} entries",
    "minProperties": "has fewer than {limit} entries",
    "maxItems": "has more than {limit} items",
    "minItems": "has fewer than {limit} items",
    "minLength": "is shorter than {limit} characters",
    "minimum": "must be at least {limit}",
    "maximum": "must be at most {limit}",
    "exclusiveMinimum": "must be greater than {limit}",
    "exclusiveMaximum": "must be less than {limit}",
    "enum": "must be one of {limit}",
    "const": "must be {limit}",
    "pattern": "does not match the pattern {limit}",
    "format": "is not a valid {limit}",
    "uniqueItems": "must not repeat items",
}


def _depth(value: Any, level: int = 0) -> int:
    if level > MAX_DEPTH:
        return level
    if isinstance(value, dict):
        return max((_depth(item, level + 1) for item in value.values()), default=level + 1)
    if isinstance(value, list):
        return max((_depth(item, level + 1) for item in value), default=level + 1)
    return level
