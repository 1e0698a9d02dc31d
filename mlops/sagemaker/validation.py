"""Checks of the fields of a SageMaker request, done before anything is created in AWS.

Each check raises InvalidSageMakerField naming the request field, so a bad value is a 4xx from
the executor instead of a failed (and billed) training job. Limits come from botocore's own
SageMaker service model wherever it states them, so they follow the installed botocore.
"""
from __future__ import annotations

import ipaddress
import re
from functools import lru_cache
from typing import Any, Mapping

from mlops.aws import service_model
from mlops.errors import InvalidRequest, SageMakerConfigurationError
from mlops.shapes import S3_URI

MAX_RUNTIME_LIMIT_SECONDS = 28 * 24 * 3600
MAX_INSTANCE_COUNT = 100
MAX_VOLUME_SIZE_GB = 16384
JOB_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
ROLE_ARN = re.compile(r"^arn:aws[a-z\-]*:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+$")
ROLE_NAME = re.compile(r"^[\w+=,.@-]{1,64}$", re.ASCII)
BUCKET_CHARS = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
BUCKET_BAD_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
BUCKET_BAD_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3")
# S3 takes any UTF-8 in a key (at most 1024 bytes). Its guide lists characters that "might require
# special handling" (& $ @ = ; : + , ? and space), which are valid and kept, and characters to avoid;
# of those, the executor refuses the ones that break a URI or a path here: control characters,
# backslash, and { } ^ % ` [ ] " < > ~ # |.
S3_KEY_REFUSED = re.compile(r"[\x00-\x1f\x7f\\{}^%`\[\]\"<>~#|]")
MAX_S3_KEY_BYTES = 1024
ENVIRONMENT_KEY = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
CHANNEL_NAME = re.compile(r"^[A-Za-z0-9.\-_]{1,64}$")
REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")
TAG_PUNCTUATION = set("_.:/=+-@ ")
# [registry[:port]/]path[:tag][@sha256:digest]; as in Docker, the first component is a registry only
# when it has a dot or is localhost, and path components are lower case.
IMAGE_URI = re.compile(
    r"^(?:(?:localhost|[a-zA-Z0-9-]+(?:\.[a-zA-Z0-9-]+)+)(?::[0-9]{1,5})?/)?"
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$")


class InvalidSageMakerField(InvalidRequest, SageMakerConfigurationError):
    """A SageMaker setting is invalid: an InvalidRequest naming the field, and the seeds' SageMakerConfigurationError."""


def _fail(field: str, message: str) -> None:
    raise InvalidSageMakerField(field, message)


def _require_text(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value:
        _fail(field, "must be a non-empty string")
    if any(ord(char) < 32 or ord(char) == 127 for char in value):
        _fail(field, "must not contain control characters")
    return value


def sagemaker_model() -> Any:
    """Return botocore's SageMaker service model: the source of names, enums and limits."""
    return service_model("sagemaker")


@lru_cache(maxsize=1)
def training_instance_types() -> frozenset[str]:
    """Return the training instance types the installed botocore's SageMaker model allows."""
    return frozenset(sagemaker_model().shape_for("TrainingInstanceType").enum)


def validate_job_name(name: Any, field: str = "job_name") -> str:
    """Check a training job name against SageMaker's pattern and length."""
    _require_text(name, field)
    if len(name) > 63 or not JOB_NAME.match(name):
        _fail(field, "must be 1-63 letters, digits and hyphens, starting and ending with a letter or digit")
    return name


def validate_role_arn(arn: Any, field: str = "role_arn") -> str:
    """Check an IAM role ARN."""
    _require_text(arn, field)
    if not 20 <= len(arn) <= 2048 or not ROLE_ARN.match(arn):
        _fail(field, "must be an IAM role ARN such as arn:aws:iam::123456789012:role/SageMakerRole")
    return arn


def validate_role_name(name: Any, field: str = "role_name") -> str:
    """Check an IAM role name (1-64 of letters, digits and +=,.@_-)."""
    _require_text(name, field)
    if not ROLE_NAME.match(name):
        _fail(field, "must be 1-64 letters, digits or the characters +=,.@_-")
    return name


def validate_bucket_name(name: Any, field: str = "s3_bucket") -> str:
    """Check an S3 bucket name against the general-purpose bucket naming rules."""
    _require_text(name, field)
    if not BUCKET_CHARS.match(name):
        _fail(field, "must be 3-63 lower-case letters, digits, dots and hyphens, "
                     "starting and ending with a letter or digit")
    if ".." in name or ".-" in name or "-." in name:
        _fail(field, "must not contain '..', '.-' or '-.'")
    try:
        ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        _fail(field, "must not be an IP address")
    if name.startswith(BUCKET_BAD_PREFIXES) or name.endswith(BUCKET_BAD_SUFFIXES):
        _fail(field, "uses a prefix or suffix that S3 reserves")
    return name


def validate_s3_prefix(prefix: Any, field: str = "s3_prefix") -> str:
    """Check a key prefix (may be empty) and return it without surrounding slashes."""
    if not isinstance(prefix, str):
        _fail(field, "must be a string")
    if S3_KEY_REFUSED.search(prefix):
        _fail(field, "must not contain control characters, backslashes or any of {}^%`[]\"<>~#|")
    stripped = prefix.strip("/")
    if "//" in stripped or any(part in (".", "..") for part in stripped.split("/") if stripped):
        _fail(field, "must not contain empty, '.' or '..' path segments")
    if len(stripped) > 512:
        _fail(field, "must be at most 512 characters")
    return stripped


def validate_s3_uri(uri: Any, field: str = "s3_uri") -> tuple[str, str]:
    """Check an s3://bucket/key URI and return (bucket, key)."""
    _require_text(uri, field)
    if len(uri) > 1024:
        _fail(field, "must be at most 1024 characters")
    match = S3_URI.match(uri)
    if not match:
        _fail(field, "must be an s3://bucket/key URI")
    bucket, key = match.group(1), match.group(2) or ""
    validate_bucket_name(bucket, field)
    if S3_KEY_REFUSED.search(key):
        _fail(field, "key must not contain control characters, backslashes or any of {}^%`[]\"<>~#|")
    if "//" in key or key.startswith("/"):
        _fail(field, "key must not contain an empty path segment ('//')")
    if len(key.encode("utf-8")) > MAX_S3_KEY_BYTES:
        _fail(field, f"key must be at most {MAX_S3_KEY_BYTES} bytes")
    return bucket, key


def s3_key(*parts: str) -> str:
    """Join key parts with single slashes, leaving out empty parts: never a '//' in a key."""
    return "/".join(part.strip("/") for part in parts if part and part.strip("/"))


def validate_image_uri(uri: Any, field: str = "image_uri") -> str:
    """Check a container image reference (registry/repository[:tag][@digest])."""
    _require_text(uri, field)
    if len(uri) > 255 or not IMAGE_URI.match(uri):
        _fail(field, "must be an image reference such as "
                     "123456789012.dkr.ecr.us-east-1.amazonaws.com/repo:tag")
    return uri


def validate_instance_type(instance_type: Any, field: str = "instance_type") -> str:
    """Check a training instance type against botocore's SageMaker model."""
    _require_text(instance_type, field)
    if instance_type not in training_instance_types():
        families = sorted({name.split(".")[1] for name in training_instance_types()})
        _fail(field, f"{instance_type!r} is not a SageMaker training instance type "
                     f"(families: {', '.join(families)})")
    return instance_type


def validate_int(value: Any, field: str, minimum: int, maximum: int) -> int:
    """Check an integer (not a bool) in a closed range."""
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(field, "must be an integer")
    if not minimum <= value <= maximum:
        _fail(field, f"must be between {minimum} and {maximum}")
    return value


def validate_instance_count(count: Any, field: str = "instance_count") -> int:
    """Check the number of training instances."""
    return validate_int(count, field, 1, MAX_INSTANCE_COUNT)


def validate_max_runtime(seconds: Any, field: str = "max_runtime_seconds") -> int:
    """Check a training job's maximum run time (1 s to 28 days)."""
    return validate_int(seconds, field, 1, MAX_RUNTIME_LIMIT_SECONDS)


def validate_volume_size(size_gb: Any, field: str = "volume_size_gb") -> int:
    """Check the size of the training volume in GB."""
    return validate_int(size_gb, field, 1, MAX_VOLUME_SIZE_GB)


def validate_region(region: Any, field: str = "region_name") -> str:
    """Check the shape of an AWS region name."""
    _require_text(region, field)
    if not REGION.match(region):
        _fail(field, "must be an AWS region name such as us-east-1")
    return region


def _checked_map(mapping: Any, field: str, shape_name: str) -> tuple[int, int]:
    """Check a map's type and entry count against the SageMaker shape; return its key and value limits."""
    shape = sagemaker_model().shape_for(shape_name)
    max_entries = shape.metadata.get("max", 100)
    if not isinstance(mapping, Mapping):
        _fail(field, "must be an object of names to string values")
    if len(mapping) > max_entries:
        _fail(field, f"must have at most {max_entries} entries")
    return shape.key.metadata.get("max", 256), shape.value.metadata.get("max", 2500)


def validate_hyperparameter_names(names: Any, field: str = "hyperparameters") -> None:
    """Refuse a user's hyperparameter named sagemaker_*: SageMaker's framework containers reserve the prefix."""
    reserved = sorted(str(name) for name in names if str(name).startswith("sagemaker_"))
    if reserved:
        _fail(f"{field}.{reserved[0]}" if field == "hyperparameters" else field,
              f"{reserved[0]}: names starting sagemaker_ are reserved")


def validate_hyperparameter_map(hyperparameters: Any, field: str = "hyperparameters") -> dict[str, str]:
    """Check SageMaker's limits on a string-to-string hyperparameter map."""
    max_key, max_value = _checked_map(hyperparameters, field, "HyperParameters")
    for key, value in hyperparameters.items():
        if not isinstance(key, str) or not key or len(key) > max_key:
            _fail(field, f"names must be 1-{max_key} characters")
        if not isinstance(value, str):
            _fail(f"{field}.{key}", "must be a string")
        if len(value) > max_value:
            _fail(f"{field}.{key}", f"must be at most {max_value} characters")
    return dict(hyperparameters)


def validate_environment(environment: Any, field: str = "environment") -> dict[str, str]:
    """Check a training job's environment variables (names, count and lengths)."""
    max_key, max_value = _checked_map(environment, field, "TrainingEnvironmentMap")
    for key, value in environment.items():
        if not isinstance(key, str) or not ENVIRONMENT_KEY.match(key) or len(key) > max_key:
            _fail(field, f"{str(key)[:40]!r} is not a valid variable name (letters, digits, _; "
                         f"not starting with a digit; at most {max_key} characters)")
        # The value is never echoed: environment values may be secrets.
        if not isinstance(value, str) or len(value) > max_value:
            _fail(f"{field}.{key}", f"must be a string of at most {max_value} characters")
    return dict(environment)


def _tag_text_ok(text: str) -> bool:
    return all(char.isalnum() or char in TAG_PUNCTUATION for char in text)


def validate_tags(tags: Any, field: str = "tags", reserved: int = 0) -> dict[str, str]:
    """Check user tags (at most 50 including the executor's own, key 1-128, value 0-256 characters)."""
    if not isinstance(tags, Mapping):
        _fail(field, "must be an object of tag keys to values")
    if len(tags) + reserved > 50:
        _fail(field, f"must have at most {50 - reserved} entries")
    for key, value in tags.items():
        if not isinstance(key, str) or not 1 <= len(key) <= 128 or not _tag_text_ok(key):
            _fail(field, f"key {str(key)[:40]!r} must be 1-128 letters, digits, spaces or _.:/=+-@")
        if key.lower().startswith("aws:"):
            _fail(field, f"key {key!r} uses the reserved prefix aws:")
        if not isinstance(value, str) or len(value) > 256 or not _tag_text_ok(value):
            _fail(f"{field}.{key}", "must be at most 256 letters, digits, spaces or _.:/=+-@")
    return dict(tags)


def validate_channel_name(name: Any, field: str = "channel") -> str:
    """Check an input channel name."""
    _require_text(name, field)
    if not CHANNEL_NAME.match(name):
        _fail(field, "must be 1-64 letters, digits, '.', '-' or '_'")
    return name


def validate_metric_definitions(definitions: Any, field: str = "metric_definitions") -> list[dict[str, str]]:
    """Check MetricDefinitions: at most 40, Name 1-255 and a compilable Regex 1-500 characters."""
    if not isinstance(definitions, list) or len(definitions) > 40:
        _fail(field, "must be a list of at most 40 {Name, Regex} objects")
    for definition in definitions:
        name, regex = definition.get("Name"), definition.get("Regex")
        if not isinstance(name, str) or not 1 <= len(name) <= 255:
            _fail(field, "each Name must be 1-255 characters")
        if not isinstance(regex, str) or not 1 <= len(regex) <= 500:
            _fail(field, f"Regex of {name} must be 1-500 characters")
        try:
            re.compile(regex)
        except re.error as exc:
            _fail(field, f"Regex of {name} does not compile: {exc}")
    return [{"Name": d["Name"], "Regex": d["Regex"]} for d in definitions]
