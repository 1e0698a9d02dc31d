"""The rules AWS applies to SageMaker requests across fields, which botocore's model cannot state.

botocore's model gives each field's type, length, pattern and enum; these rules relate fields to
each other and come from the documentation strings of the same model (CreateAutoMLJobV2,
TabularJobConfig, AutoMLJobChannel, AutoMLJobObjective, AutoMLJobCompletionCriteria,
CreateTrainingJob's StoppingCondition and EnableManagedSpotTraining, HyperParameterTuningJobConfig and
HyperbandStrategyConfig). The executor checks every
request it builds with them before the call, and the test suite checks every request it sees.
"""
from __future__ import annotations

from typing import Any, Callable

from mlops.shapes import TABULAR_CONTENT_TYPES

# AutoMLJobObjective's documentation: the metrics of each tabular problem type, the first the default.
TABULAR_METRICS: dict[str, tuple[str, ...]] = {
    "Regression": ("MSE", "MAE", "R2", "RMSE"),
    "BinaryClassification": ("F1", "Accuracy", "AUC", "BalancedAccuracy", "Precision", "Recall"),
    "MulticlassClassification": ("Accuracy", "BalancedAccuracy", "F1macro", "PrecisionMacro", "RecallMacro"),
}
TABULAR_DATA_TYPES = ("S3Prefix", "ManifestFile")
TABULAR_MAX_CANDIDATES = 750

Problem = tuple[str, str]  # (the request field, what AWS refuses about it)


def default_metric(problem_type: str) -> str:
    """Return the objective metric AWS uses by default for a tabular problem type."""
    return TABULAR_METRICS[problem_type][0]


def automl_v2_problems(params: dict[str, Any]) -> list[Problem]:
    """Return what CreateAutoMLJobV2 would refuse in params (tabular jobs), as (field, reason) pairs."""
    tabular = (params.get("AutoMLProblemTypeConfig") or {}).get("TabularJobConfig")
    if tabular is None:
        return []
    problems: list[Problem] = []
    problem_type = tabular.get("ProblemType")
    metric = (params.get("AutoMLJobObjective") or {}).get("MetricName")
    if bool(problem_type) != bool(metric):
        problems.append(("AutoMLJobObjective" if problem_type else "TabularJobConfig.ProblemType",
                         "give both AutoMLJobObjective and TabularJobConfig.ProblemType, or neither"))
    elif problem_type in TABULAR_METRICS and metric not in TABULAR_METRICS[problem_type]:
        problems.append(("AutoMLJobObjective.MetricName", f"{metric} is not a metric of {problem_type} "
                                                          f"(one of {', '.join(TABULAR_METRICS[problem_type])})"))
    channels = params.get("AutoMLJobInputDataConfig") or []
    types = [channel.get("ChannelType", "training") for channel in channels]
    if types.count("training") != 1 or types.count("validation") > 1:
        problems.append(("AutoMLJobInputDataConfig", "needs one training channel and at most one validation channel"))
    if len({channel.get("ContentType", TABULAR_CONTENT_TYPES[0]) for channel in channels}) > 1:
        problems.append(("AutoMLJobInputDataConfig", "training and validation channels must share one ContentType"))
    for index, channel in enumerate(channels):
        field = f"AutoMLJobInputDataConfig[{index}]"
        if channel.get("ContentType", TABULAR_CONTENT_TYPES[0]) not in TABULAR_CONTENT_TYPES:
            problems.append((f"{field}.ContentType", f"must be {' or '.join(TABULAR_CONTENT_TYPES)} for tabular data"))
        data_type = ((channel.get("DataSource") or {}).get("S3DataSource") or {}).get("S3DataType")
        if data_type not in TABULAR_DATA_TYPES:
            problems.append((f"{field}.DataSource.S3DataSource.S3DataType",
                             f"must be {' or '.join(TABULAR_DATA_TYPES)} for tabular data"))
        if channel.get("CompressionType", "None") == "Gzip" and data_type != "S3Prefix":
            problems.append((f"{field}.CompressionType", "Gzip is allowed for S3Prefix inputs only"))
    if "validation" in types and params.get("DataSplitConfig"):
        problems.append(("DataSplitConfig", "must not be set when a validation channel is given"))
    fraction = (params.get("DataSplitConfig") or {}).get("ValidationFraction")
    if fraction is not None and not 0 < fraction < 1:
        problems.append(("DataSplitConfig.ValidationFraction", "must be greater than 0 and less than 1"))
    if tabular.get("SampleWeightAttributeName") and tabular.get("Mode") != "ENSEMBLING":
        problems.append(("TabularJobConfig.SampleWeightAttributeName", "is supported in ENSEMBLING mode only"))
    candidates = (tabular.get("CompletionCriteria") or {}).get("MaxCandidates")
    if candidates is not None and candidates > TABULAR_MAX_CANDIDATES:
        problems.append(("TabularJobConfig.CompletionCriteria.MaxCandidates",
                         f"must be at most {TABULAR_MAX_CANDIDATES} for tabular problems"))
    return problems


def training_job_problems(params: dict[str, Any]) -> list[Problem]:
    """Return what CreateTrainingJob would refuse in params across fields, as (field, reason) pairs."""
    problems: list[Problem] = []
    stopping = params.get("StoppingCondition") or {}
    if params.get("EnableManagedSpotTraining"):
        wait = stopping.get("MaxWaitTimeInSeconds")
        if wait is None or wait < stopping.get("MaxRuntimeInSeconds", 86400):
            problems.append(("StoppingCondition.MaxWaitTimeInSeconds",
                             "spot training needs MaxWaitTimeInSeconds of at least MaxRuntimeInSeconds"))
    elif "MaxWaitTimeInSeconds" in stopping:
        problems.append(("StoppingCondition.MaxWaitTimeInSeconds", "is for managed spot training only"))
    hyperparameters = params.get("HyperParameters") or {}
    if ("sagemaker_program" in hyperparameters) != ("sagemaker_submit_directory" in hyperparameters):
        problems.append(("HyperParameters", "sagemaker_program and sagemaker_submit_directory go together"))
    return problems


# HyperbandStrategyConfig.MaxResource's documentation: "The maximum value is 20,000 epochs."
HYPERBAND_MAX_RESOURCE = 20_000


def tuning_job_problems(params: dict[str, Any]) -> list[Problem]:
    """Return what CreateHyperParameterTuningJob would refuse across fields (HyperParameterTuningJobConfig's docs)."""
    config = params.get("HyperParameterTuningJobConfig") or {}
    problems: list[Problem] = []
    hyperband = config.get("Strategy") == "Hyperband"
    if "StrategyConfig" in config and not hyperband:
        problems.append(("HyperParameterTuningJobConfig.StrategyConfig", "is for the Hyperband strategy only"))
    if hyperband and config.get("TrainingJobEarlyStoppingType", "Off") != "Off":
        problems.append(("HyperParameterTuningJobConfig.TrainingJobEarlyStoppingType", "must be Off with Hyperband"))
    resource = ((config.get("StrategyConfig") or {}).get("HyperbandStrategyConfig") or {}).get("MaxResource")
    if resource is not None and resource > HYPERBAND_MAX_RESOURCE:
        problems.append(("HyperbandStrategyConfig.MaxResource", f"is at most {HYPERBAND_MAX_RESOURCE}"))
    definition = params.get("TrainingJobDefinition") or {}
    problems += [(f"TrainingJobDefinition.{field}", reason) for field, reason in training_job_problems(
        {**definition, "HyperParameters": definition.get("StaticHyperParameters")})]
    return problems


RULES: dict[str, Callable[[dict[str, Any]], list[Problem]]] = {
    "CreateAutoMLJobV2": automl_v2_problems,
    "CreateTrainingJob": training_job_problems,
    "CreateHyperParameterTuningJob": tuning_job_problems,
}


def problems_of(operation: str, params: dict[str, Any]) -> list[Problem]:
    """Return the cross-field problems of a request to a SageMaker operation (none for unlisted ones)."""
    rule = RULES.get(operation)
    return rule(params) if rule else []
