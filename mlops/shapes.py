"""The shapes AWS services share, written one way: s3:// URIs, tags, and the words of AutoML requests and answers."""
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


# AutoMLJobChannel.ContentType for tabular problems; plain text/csv is refused by AWS.
TABULAR_CONTENT_TYPES = ("text/csv;header=present", "x-application/vnd.amazon+parquet")
# Plain text/csv is taken from clients and sent as AWS requires it for tabular data: with its header.
CSV_ALIASES = {"text/csv": "text/csv;header=present"}
AUTOML_CONTENT_TYPES = (*TABULAR_CONTENT_TYPES, *CSV_ALIASES)
AUTOML_PROBLEM_TYPES = ("BinaryClassification", "MulticlassClassification", "Regression")
AUTOML_MODES = ("AUTO", "ENSEMBLING", "HYPERPARAMETER_TUNING")


def best_candidate(described: dict[str, Any]) -> dict[str, Any] | None:
    """Return {name, status, objectiveMetric} of the best candidate an AutoML description reports, or None."""
    candidate = described.get("BestCandidate")
    if not candidate:
        return None
    metric = candidate.get("FinalAutoMLJobObjectiveMetric") or {}
    return {"name": candidate.get("CandidateName"), "status": candidate.get("CandidateStatus"),
            "objectiveMetric": {"name": metric.get("MetricName"), "value": metric.get("Value"),
                                "type": metric.get("Type")}}
