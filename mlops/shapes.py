"""The shapes AWS services share, written one way: s3:// URIs, and tags as SageMaker's list or the executor's map."""
from __future__ import annotations

import re
from typing import Any, Mapping

S3_URI = re.compile(r"^s3://([^/]+)(?:/(.*))?$")


def tag_list(tags: Mapping[str, str] | list[dict[str, str]] | None) -> list[dict[str, str]]:
    """Return tags as AWS requests take them, [{"Key", "Value"}], sorted by key; a list is kept as it is."""
    if isinstance(tags, list):
        return tags
    return [{"Key": key, "Value": value} for key, value in sorted(dict(tags or {}).items())]


def tag_map(tags: Mapping[str, str] | list[dict[str, Any]] | None) -> dict[str, str]:
    """Return tags as the executor keeps them, {key: value}, from AWS's list or a map."""
    if isinstance(tags, list):
        return {item["Key"]: item["Value"] for item in tags}
    return dict(tags or {})
