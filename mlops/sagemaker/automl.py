"""SageMaker Autopilot (CreateAutoMLJobV2) jobs on tabular data: request checks, the create request,
and what a description means for the executor's job.

The executor never invents a result: the best candidate, its objective metric and the model
artifacts are what DescribeAutoMLJobV2 reports.
"""
from __future__ import annotations

import hashlib
import uuid
from typing import Any, Mapping

from mlops.sagemaker import validation as v
from mlops.sagemaker.request_rules import TABULAR_METRICS, automl_v2_problems, default_metric
from mlops.sagemaker.training_service import JOB_NAME_PREFIX
from mlops.errors import InvalidRequest
from mlops.job_requests import AutoMLRequest
from mlops.shapes import CSV_ALIASES, tag_list

FINAL_STATUSES = ("Completed", "Failed", "Stopped")


def automl_job_name(job_id: str) -> str:
    """Derive an AutoML job name (at most 32 characters) from the executor's job id."""
    try:
        suffix = uuid.UUID(job_id).hex[:24]
    except ValueError:
        suffix = hashlib.sha256(job_id.encode()).hexdigest()[:24]
    return f"{JOB_NAME_PREFIX}{suffix}"


def _metric_names() -> tuple[str, ...]:
    return tuple(v.sagemaker_model().shape_for("AutoMLMetricEnum").enum)


def check_automl(request: AutoMLRequest, role_arn: str) -> AutoMLRequest:
    """Check an AutoML request against SageMaker's S3, metric and tag rules; return it named, with the role."""
    v.validate_s3_uri(request.input_s3_uri, "input_data_config.s3_uri")
    v.validate_s3_uri(request.output_s3_path, "output_data_config.s3_output_path")
    if request.metric_name not in (None, *_metric_names()):
        raise InvalidRequest("objective.metric_name", f"must be one of {', '.join(_metric_names())}")
    problem_type = request.problem_type
    if problem_type and request.metric_name not in (None, *TABULAR_METRICS[problem_type]):
        raise InvalidRequest("objective.metric_name", f"{request.metric_name} is not a metric of {problem_type} "
                                                      f"(one of {', '.join(TABULAR_METRICS[problem_type])})")
    if problem_type and not request.metric_name:
        # AWS takes both or neither; with only the problem type, send the metric AWS documents as its default.
        request = request.with_changes(metric_name=default_metric(problem_type))
    v.validate_tags(request.tags, "tags", reserved=2)
    # Named now, so the client is told the name at once and a run after a restart finds the job it made.
    checked = request.with_changes(role_arn=role_arn, job_name=request.job_name or automl_job_name(str(uuid.uuid4())))
    problems = automl_v2_problems(create_request(automl_job_name(""), checked, {}))
    if problems:
        raise InvalidRequest(*problems[0])
    return checked


def create_request(name: str, request: AutoMLRequest, tags: Mapping[str, str]) -> dict[str, Any]:
    """Return the CreateAutoMLJobV2 parameters of a checked request."""
    criteria = {key: value for key, value in (
        ("MaxCandidates", request.max_candidates),
        ("MaxRuntimePerTrainingJobInSeconds", request.max_runtime_per_training_job_in_seconds),
        ("MaxAutoMLJobRuntimeInSeconds", request.total_job_runtime_in_seconds)) if value is not None}
    tabular: dict[str, Any] = {"TargetAttributeName": request.target_attribute_name, "CompletionCriteria": criteria}
    if request.problem_type:
        tabular["ProblemType"] = request.problem_type
    if request.mode:
        tabular["Mode"] = request.mode
    if request.generate_candidate_definitions_only:
        tabular["GenerateCandidateDefinitionsOnly"] = True
    params: dict[str, Any] = {
        "AutoMLJobName": name,
        "AutoMLJobInputDataConfig": [{
            "ChannelType": "training",
            "ContentType": CSV_ALIASES.get(request.content_type, request.content_type),
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": request.input_s3_uri}}}],
        "OutputDataConfig": {"S3OutputPath": request.output_s3_path},
        "AutoMLProblemTypeConfig": {"TabularJobConfig": tabular},
        "RoleArn": request.role_arn,
        "Tags": tag_list(tags),
    }
    if request.metric_name:
        params["AutoMLJobObjective"] = {"MetricName": request.metric_name}
    return params


def model_artifacts(described: dict[str, Any]) -> dict[str, Any]:
    """Return the model data URLs of the best candidate's inference containers, and the job's artifacts."""
    artifacts: dict[str, Any] = {}
    containers = (described.get("BestCandidate") or {}).get("InferenceContainers") or []
    urls = [container["ModelDataUrl"] for container in containers if container.get("ModelDataUrl")]
    if urls:
        artifacts["models"] = urls
    output = (described.get("OutputDataConfig") or {}).get("S3OutputPath")
    if output:
        artifacts["output_path"] = output
    job_artifacts = described.get("AutoMLJobArtifacts") or {}
    if job_artifacts.get("CandidateDefinitionNotebookLocation"):
        artifacts["candidate_notebook"] = job_artifacts["CandidateDefinitionNotebookLocation"]
    if job_artifacts.get("DataExplorationNotebookLocation"):
        artifacts["data_exploration_notebook"] = job_artifacts["DataExplorationNotebookLocation"]
    return artifacts
