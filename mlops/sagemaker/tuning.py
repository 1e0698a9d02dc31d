"""Tuning on SageMaker: one CreateHyperParameterTuningJob with the bundled script, followed and stopped.

The checked `tuning` object (mlops.tuning) maps onto AWS's shapes: ranges to ParameterRanges (`log`
to Logarithmic), the fixed hyperparameters to StaticHyperParameters, the objective to a metric the
script's own MetricDefinitions read (the regexes the local reader uses), the strategy by name, and
Hyperband to TrainingJobEarlyStoppingType Off with a HyperbandStrategyConfig. The monitor describes a
running tuning and pages through its training jobs a bounded number of pages a cycle, as the training
monitor reads its lists; the trials table and the best trial are written into the tuning's record.

Each training job SageMaker starts for the tuning becomes a training job of the executor with the tuning
as parent, its id derived from the tuning's and the training job's name (a restart, or a second
executor, finds the same row). The worker that takes it follows that training job, never creates one,
so the training monitor gives it a log, metrics, a model and a cost like any training.
"""
from __future__ import annotations

import logging
import uuid
from functools import lru_cache
from typing import Any, Callable, Mapping

from job import Job, JobStatus
from mlops.aws import AWS_ERRORS, is_not_found
from mlops.aws_statuses import COMPLETED, FAILED, TUNING_STATES
from mlops.errors import InvalidRequest
from mlops.job_requests import Checked, TrainingRequest
from mlops.reporter import JobReporter
from mlops.sagemaker.validation import sagemaker_model
from mlops.tuning import CATEGORICAL, CONTINUOUS, INTEGER, STOPPED_EARLY, grid_values

logger = logging.getLogger(__name__)

TUNING_NAME_PREFIX = "essedum-tune-"
STRATEGY_NAMES = {"bayesian": "Bayesian", "random": "Random", "grid": "Grid", "hyperband": "Hyperband"}
SCALING_NAMES = {"linear": "Linear", "log": "Logarithmic"}
WARM_START_NAMES = {"identical": "IdenticalDataAndAlgorithm", "transfer": "TransferLearning"}
RANGE_KINDS = {CONTINUOUS: "ContinuousParameterRanges", INTEGER: "IntegerParameterRanges",
               CATEGORICAL: "CategoricalParameterRanges"}
# ListTrainingJobsForHyperParameterTuningJob: at most 100 a page; a few pages a cycle keep one large
# tuning from taking the whole monitor cycle, and the next cycle goes on from where this one stopped.
PAGE_SIZE = 100
PAGES_PER_CYCLE = 3
TRIAL_STATUS = {"InProgress": JobStatus.RUNNING.value, "Stopping": JobStatus.RUNNING.value,
                "Completed": JobStatus.COMPLETED.value, "Failed": JobStatus.ERROR.value,
                "Stopped": JobStatus.CANCELLED.value, "Deleting": JobStatus.CANCELLED.value}


# Put into the trials' environment when they keep checkpoints: every trial of a tuning shares the one
# CheckpointConfig.S3Uri of its TrainingJobDefinition, so the script keeps its checkpoint in a folder
# named after its own training job (TRAINING_JOB_NAME, which SageMaker sets in the container).
CHECKPOINTS_PER_JOB = "ESSEDUM_CHECKPOINTS_PER_JOB"


def trial_job_id(tuning_id: str, training_job_name: str) -> str:
    """Return the job id of the trial SageMaker ran as `training_job_name`: the same for the same trial."""
    return str(uuid.uuid5(uuid.UUID(tuning_id), f"sagemaker-trial-{training_job_name}"))


def trial_request(tuning_job: Job, number: int, summary: Mapping[str, Any]) -> Checked:
    """Return the checked training request of a trial: the tuning's, with the trial's values, parent and job."""
    tuned = {str(key): str(value) for key, value in (summary.get("TunedHyperParameters") or {}).items()}
    tuning = TrainingRequest.from_stored(tuning_job.request).without("tuning")
    request = tuning.with_changes(name=f"{tuning.name or 'tuning'}-trial-{number}",
                                  hyperparameters={**tuning.hyperparameters, **tuned}, parent=tuning_job.id,
                                  trial=number, sagemaker_training_job_name=summary["TrainingJobName"])
    settings = dict(tuning_job.settings or {})
    settings["hyperparameters"] = {**(settings.get("hyperparameters") or {}), **tuned}
    return Checked(request, settings)


def tuning_job_name(job_id: str) -> str:
    """Return the SageMaker name of a tuning: at most 32 characters, the same for the same job."""
    name = f"{TUNING_NAME_PREFIX}{uuid.UUID(job_id).hex}"[:_limit("HyperParameterTuningJobName", "max")]
    return name


@lru_cache(maxsize=None)
def _limit(shape: str, bound: str) -> int:
    return int(sagemaker_model().shape_for(shape).metadata[bound])


def check_sagemaker_limits(tuning: Mapping[str, Any], metric_names: list[str]) -> None:
    """Refuse what CreateHyperParameterTuningJob would: too many ranges, values or seconds, an unread objective."""
    counts: dict[str, int] = {}
    for name, spec in tuning["ranges"].items():
        kind = _aws_kind(tuning, spec)
        counts[kind] = counts.get(kind, 0) + 1
        if kind == RANGE_KINDS[CATEGORICAL]:
            values = grid_values(spec)
            if len(values) > _limit("ParameterValues", "max"):
                raise InvalidRequest(f"tuning.ranges.{name}", f"SageMaker takes at most "
                                                              f"{_limit('ParameterValues', 'max')} values a range")
            if any(len(str(value)) > _limit("ParameterValue", "max") for value in values):
                raise InvalidRequest(f"tuning.ranges.{name}.values", "SageMaker takes values of at most "
                                                                     f"{_limit('ParameterValue', 'max')} characters")
    for kind, count in counts.items():
        if count > _limit(kind, "max"):
            raise InvalidRequest("tuning.ranges", f"SageMaker takes at most {_limit(kind, 'max')} {kind}; "
                                                  f"this search has {count}")
    total = sum(counts.values())
    if total > _limit("ContinuousParameterRanges", "max"):
        raise InvalidRequest("tuning.ranges", f"SageMaker searches at most {_limit('ContinuousParameterRanges', 'max')}"
                                              f" hyperparameters in all; this search has {total}")
    runtime = tuning.get("max_runtime_seconds")
    low = _limit("HyperParameterTuningMaxRuntimeInSeconds", "min")
    if runtime is not None and runtime < low:
        raise InvalidRequest("tuning.max_runtime_seconds", f"SageMaker takes at least {low} seconds")
    if tuning["objective"]["metric"] not in metric_names:
        raise InvalidRequest("tuning.objective.metric", "no MetricDefinition of the script reads "
                                                        f"{tuning['objective']['metric']!r}")
    sources = (tuning.get("warm_start") or {}).get("from", [])
    if len(sources) > _limit("ParentHyperParameterTuningJobs", "max"):
        raise InvalidRequest("tuning.warm_start.from", "SageMaker warm-starts from at most "
                                                       f"{_limit('ParentHyperParameterTuningJobs', 'max')} tunings")
    for source in sources:
        try:
            uuid.UUID(source)
        except ValueError:
            raise InvalidRequest("tuning.warm_start.from", f"{source!r} is not a tuning job id") from None


def _aws_kind(tuning: Mapping[str, Any], spec: Mapping[str, Any]) -> str:
    # SageMaker's grid search takes categorical ranges only: an integer range is its list of values.
    if tuning["strategy"] == "grid":
        return RANGE_KINDS[CATEGORICAL]
    return RANGE_KINDS[spec["type"]]


def parameter_ranges(tuning: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Return the tuning's ranges as SageMaker's ParameterRanges."""
    ranges: dict[str, list[dict[str, Any]]] = {kind: [] for kind in RANGE_KINDS.values()}
    for name, spec in tuning["ranges"].items():
        kind = _aws_kind(tuning, spec)
        if kind == RANGE_KINDS[CATEGORICAL]:
            ranges[kind].append({"Name": name, "Values": [_text(value) for value in grid_values(spec)]})
        else:
            ranges[kind].append({"Name": name, "MinValue": _text(spec["min"]), "MaxValue": _text(spec["max"]),
                                 "ScalingType": SCALING_NAMES[spec["scaling"]]})
    return {kind: items for kind, items in ranges.items() if items}


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def tuning_job_request(name: str, training_request: Mapping[str, Any], tuning: Mapping[str, Any]) -> dict[str, Any]:
    """Return CreateHyperParameterTuningJob's parameters around a CreateTrainingJob request's definition."""
    algorithm = training_request["AlgorithmSpecification"]
    static = {key: value for key, value in training_request["HyperParameters"].items() if key not in tuning["ranges"]}
    definition: dict[str, Any] = {
        "StaticHyperParameters": static,
        "AlgorithmSpecification": {"TrainingImage": algorithm["TrainingImage"],
                                   "TrainingInputMode": algorithm["TrainingInputMode"],
                                   "MetricDefinitions": algorithm["MetricDefinitions"]},
        **{key: training_request[key] for key in ("RoleArn", "InputDataConfig", "OutputDataConfig", "ResourceConfig",
                                                  "StoppingCondition", "Environment", "EnableManagedSpotTraining",
                                                  "CheckpointConfig") if key in training_request},
    }
    if "CheckpointConfig" in definition:
        definition["Environment"] = {**definition.get("Environment", {}), CHECKPOINTS_PER_JOB: "1"}
    limits: dict[str, Any] = {"MaxParallelTrainingJobs": tuning["max_parallel"]}
    if tuning["strategy"] != "grid":
        # A grid's trials are its points: SageMaker runs each combination once, however many are asked.
        limits["MaxNumberOfTrainingJobs"] = tuning["max_trials"]
    if tuning.get("max_runtime_seconds"):
        limits["MaxRuntimeInSeconds"] = tuning["max_runtime_seconds"]
    config: dict[str, Any] = {
        "Strategy": STRATEGY_NAMES[tuning["strategy"]],
        "HyperParameterTuningJobObjective": {"Type": tuning["objective"]["goal"].capitalize(),
                                             "MetricName": tuning["objective"]["metric"]},
        "ResourceLimits": limits,
        "ParameterRanges": parameter_ranges(tuning),
        "TrainingJobEarlyStoppingType": "Auto" if tuning["early_stopping"] == "auto" else "Off",
    }
    if tuning["strategy"] == "hyperband":
        # Hyperband stops trials itself; AWS refuses it beside the Auto early stopping.
        config["TrainingJobEarlyStoppingType"] = "Off"
        config["StrategyConfig"] = {"HyperbandStrategyConfig": {"MinResource": 1,
                                                                "MaxResource": tuning["resource"]["max"]}}
    if tuning.get("seed") is not None:
        config["RandomSeed"] = tuning["seed"]
    request: dict[str, Any] = {"HyperParameterTuningJobName": name, "HyperParameterTuningJobConfig": config,
                               "TrainingJobDefinition": definition, "Tags": training_request["Tags"]}
    warm = tuning.get("warm_start")
    if warm:
        request["WarmStartConfig"] = {
            "ParentHyperParameterTuningJobs": [{"HyperParameterTuningJobName": tuning_job_name(source)}
                                               for source in warm["from"]],
            "WarmStartType": WARM_START_NAMES[warm.get("type", "identical")]}
    return request


class SageMakerTunings:
    """The tuning job calls: create, describe, page through its training jobs, stop."""

    def __init__(self, sagemaker: Callable[[], Any]):
        self.sagemaker = sagemaker

    def describe(self, name: str) -> dict[str, Any] | None:
        """Return DescribeHyperParameterTuningJob's answer, or None when there is no such tuning."""
        try:
            return self.sagemaker().describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
        except AWS_ERRORS as exc:
            if is_not_found(exc):
                return None
            raise

    def create(self, request: dict[str, Any]) -> str:
        """Create the tuning job and return its ARN."""
        return self.sagemaker().create_hyper_parameter_tuning_job(**request)["HyperParameterTuningJobArn"]

    def training_jobs(self, name: str, token: str | None) -> tuple[list[dict[str, Any]], str | None]:
        """Return up to PAGES_PER_CYCLE pages of the tuning's training jobs from `token`, and where to go on."""
        summaries: list[dict[str, Any]] = []
        for _ in range(PAGES_PER_CYCLE):
            params: dict[str, Any] = {"HyperParameterTuningJobName": name, "MaxResults": PAGE_SIZE,
                                      "SortBy": "CreationTime", "SortOrder": "Ascending"}
            if token:
                params["NextToken"] = token
            page = self.sagemaker().list_training_jobs_for_hyper_parameter_tuning_job(**params)
            summaries.extend(page.get("TrainingJobSummaries") or [])
            token = page.get("NextToken")
            if not token:
                break
        return summaries, token

    def stop(self, name: str) -> str | None:
        """Stop the tuning (SageMaker stops its training jobs); return its status then, None if there is none."""
        described = self.describe(name)
        if described is None:
            return None
        status = described["HyperParameterTuningJobStatus"]
        if status in TUNING_STATES.stoppable_states:
            self.sagemaker().stop_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
        return status


def merge_trials(tuning_id: str, known: list[dict[str, Any]], summaries: list[dict[str, Any]],
                 stopping: bool) -> list[dict[str, Any]]:
    """Merge training job summaries into the trials table, numbered in the order SageMaker created them."""
    rows = {row["training_job_name"]: row for row in known}
    for summary in summaries:
        name = summary["TrainingJobName"]
        status = TRIAL_STATUS.get(summary["TrainingJobStatus"], JobStatus.RUNNING.value)
        if summary["TrainingJobStatus"] == "Stopped" and not stopping:
            # A trial the tuning itself stopped: early stopping (or Hyperband) ended it.
            status = STOPPED_EARLY
        metric = summary.get("FinalHyperParameterTuningJobObjectiveMetric") or {}
        row = rows.get(name) or {"number": len(rows) + 1, "job_id": trial_job_id(tuning_id, name),
                                 "training_job_name": name, "epoch": None}
        row.update(hyperparameters=dict(summary.get("TunedHyperParameters") or {}), status=status,
                   objective=metric.get("Value"), failure_reason=summary.get("FailureReason"))
        rows[name] = row
    return sorted(rows.values(), key=lambda row: row["number"])


def apply_tuning_description(ctx: JobReporter, described: dict[str, Any], trials: list[dict[str, Any]],
                             token: str | None) -> None:
    """Bring a tuning's record up to date with SageMaker's answers, ending it when SageMaker has."""
    status = described["HyperParameterTuningJobStatus"]
    counters = described.get("TrainingJobStatusCounters") or {}
    best_job = described.get("BestTrainingJob") or {}
    best = None
    if best_job.get("TrainingJobName"):
        metric = best_job.get("FinalHyperParameterTuningJobObjectiveMetric") or {}
        row = next((row for row in trials if row["training_job_name"] == best_job["TrainingJobName"]), None)
        best = {"job_id": trial_job_id(ctx.job_id, best_job["TrainingJobName"]),
                "training_job_name": best_job["TrainingJobName"], "number": row["number"] if row else None,
                "hyperparameters": dict(best_job.get("TunedHyperParameters") or {}), "objective": metric.get("Value")}
    total = (described.get("HyperParameterTuningJobConfig") or {}).get("ResourceLimits", {}).get(
        "MaxNumberOfTrainingJobs") or len(trials)
    done = sum(int(counters.get(key) or 0) for key in ("Completed", "RetryableError", "NonRetryableError", "Stopped"))
    ctx.merge_details(sagemaker_status=status, trials=trials, best=best, trials_token=token)
    ctx.set_progress(done=done, total=total, running=int(counters.get("InProgress") or 0),
                     percent=round(100.0 * done / total, 1) if total else None)
    if status not in TUNING_STATES.terminal_states or token:
        return
    if status == COMPLETED:
        ctx.finish(JobStatus.COMPLETED)
    elif status == FAILED:
        ctx.finish(JobStatus.ERROR, described.get("FailureReason") or "SageMaker reported the tuning Failed")
    elif ctx.job.cancel_requested or ctx.job.details.get("stop_requested"):
        ctx.finish(JobStatus.CANCELLED, message="stopped at the user's request; SageMaker stopped every trial")
    else:
        ctx.finish(JobStatus.CANCELLED, message="stopped outside the executor")
