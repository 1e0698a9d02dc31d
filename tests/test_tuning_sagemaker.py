"""Tuning on SageMaker: CreateHyperParameterTuningJob as AWS takes it (moto), its trials and stop at the edge.

moto creates and describes tuning jobs but ends them at once with a made-up best job, and raises
NotImplementedError for ListTrainingJobsForHyperParameterTuningJob and StopHyperParameterTuningJob.
Those answers come from botocore's Stubber here, shaped as the API reference gives them:
https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_DescribeHyperParameterTuningJob.html,
https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_ListTrainingJobsForHyperParameterTuningJob.html
(HyperParameterTrainingJobSummary) and API_StopHyperParameterTuningJob.html (an empty answer).
The suite's request check holds every request, stubbed or not, to botocore's model.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from aws_fixtures import (BUCKET, aws, aws_setup, backend, bundled_scripts, capture_params, clients,  # noqa: F401
                          config, context, reporters, new_running_job, running_jobs, set_training_state, store,
                          training_request, write_dataset)
from botocore.stub import Stubber

from job import JobStatus
from mlops.job_requests import request_of
from mlops.errors import InvalidRequest
from mlops.platform import Stop
from mlops.records import RecordBook, finished_training_job
from mlops.sagemaker.tuning import CHECKPOINTS_PER_JOB, check_sagemaker_limits, trial_job_id, tuning_job_name
from mlops.tuning import STOPPED_EARLY, TRIAL_PLATFORM_JOB
from training_scripts.metric_lines import METRIC_DEFINITIONS

TUNING = {"objective": {"metric": "val_auc", "goal": "maximize"},
          "ranges": {"learning-rate": {"min": 0.0001, "max": 0.1, "scaling": "log"},
                     "batch-size": {"values": [32, 64, 128]},
                     "lr-decay": {"min": 0.5, "max": 1.0}},
          "strategy": "bayesian", "max_trials": 12, "max_parallel": 2, "early_stopping": "auto",
          "max_runtime_seconds": 7200, "seed": 7}
NOW = datetime(2026, 12, 6, 8, 0, tzinfo=timezone.utc)


@pytest.fixture
def dataset(tmp_path):
    return write_dataset(tmp_path / "data" / "storage" / "digits")


def tuning_request(dataset, scripts, **tuning):
    request = training_request(dataset, scripts, hyperparameters={"epochs": "4"}, tuning={**TUNING, **tuning})
    return json.loads(json.dumps(request))


def launch(backend, store, tmp_path, request):  # noqa: F811
    job = new_running_job(store, "tuning", backend.check("tuning", request_of("tuning", request), {}), tmp_path)
    backend.run(job, context(store, job))
    return store.get(job.id)


def test_one_tuning_job_is_created_with_the_scripts_own_metric_definitions(backend, store, clients, dataset,  # noqa: F811
                                                                           bundled_scripts, tmp_path):
    created = capture_params(clients.client("sagemaker"), "CreateHyperParameterTuningJob")
    job = launch(backend, store, tmp_path, tuning_request(dataset, bundled_scripts))
    name = tuning_job_name(job.id)
    assert job.external_id == name and len(name) <= 32 and job.status is JobStatus.RUNNING
    [request] = created
    config = request["HyperParameterTuningJobConfig"]
    assert config["Strategy"] == "Bayesian" and config["RandomSeed"] == 7
    assert config["HyperParameterTuningJobObjective"] == {"Type": "Maximize", "MetricName": "val_auc"}
    assert config["ResourceLimits"] == {"MaxNumberOfTrainingJobs": 12, "MaxParallelTrainingJobs": 2,
                                        "MaxRuntimeInSeconds": 7200}
    assert config["TrainingJobEarlyStoppingType"] == "Auto"
    assert config["ParameterRanges"] == {
        "ContinuousParameterRanges": [
            {"Name": "learning-rate", "MinValue": "0.0001", "MaxValue": "0.1", "ScalingType": "Logarithmic"},
            {"Name": "lr-decay", "MinValue": "0.5", "MaxValue": "1.0", "ScalingType": "Linear"}],
        "CategoricalParameterRanges": [{"Name": "batch-size", "Values": ["32", "64", "128"]}]}
    definition = request["TrainingJobDefinition"]
    static = definition["StaticHyperParameters"]
    assert static["epochs"] == '"4"' and static["sagemaker_program"] == '"train.py"'
    assert not {"learning-rate", "batch-size", "lr-decay"} & set(static)
    # The objective is read by the script's own definition: the regex the local reader uses too.
    definitions = {item["Name"]: item["Regex"] for item in definition["AlgorithmSpecification"]["MetricDefinitions"]}
    assert definitions["val_auc"] == next(item["Regex"] for item in METRIC_DEFINITIONS if item["Name"] == "val_auc")
    assert definition["OutputDataConfig"]["S3OutputPath"] == f"s3://{BUCKET}/essedum-executor/jobs/{job.id}/output"
    assert "WarmStartConfig" not in request


def test_hyperband_spot_and_warm_start_map_onto_aws_fields(backend, store, clients, dataset, bundled_scripts,  # noqa: F811
                                                           tmp_path):
    created = capture_params(clients.client("sagemaker"), "CreateHyperParameterTuningJob")
    parent = "3f2b8c1e-1111-4000-8000-000000000000"
    request = tuning_request(dataset, bundled_scripts, strategy="hyperband",
                             warm_start={"from": [parent], "type": "transfer"})
    request["spot"] = True
    job = launch(backend, store, tmp_path, request)
    [sent] = created
    config = sent["HyperParameterTuningJobConfig"]
    assert config["Strategy"] == "Hyperband" and config["TrainingJobEarlyStoppingType"] == "Off"
    assert config["StrategyConfig"] == {"HyperbandStrategyConfig": {"MinResource": 1, "MaxResource": 4}}
    assert sent["WarmStartConfig"] == {"ParentHyperParameterTuningJobs": [
        {"HyperParameterTuningJobName": tuning_job_name(parent)}], "WarmStartType": "TransferLearning"}
    definition = sent["TrainingJobDefinition"]
    assert definition["EnableManagedSpotTraining"] is True
    assert definition["CheckpointConfig"]["S3Uri"] == f"s3://{BUCKET}/essedum-executor/jobs/{job.id}/checkpoints"
    # SageMaker gives every trial the definition's one CheckpointConfig (API_HyperParameterTrainingJobDefinition
    # has no per-trial location): the script keeps each trial's checkpoint under its training job's name.
    assert definition["Environment"][CHECKPOINTS_PER_JOB] == "1"


def test_a_grid_is_all_categorical_on_sagemaker(backend, store, clients, dataset, bundled_scripts, tmp_path):  # noqa: F811
    created = capture_params(clients.client("sagemaker"), "CreateHyperParameterTuningJob")
    launch(backend, store, tmp_path, tuning_request(dataset, bundled_scripts, strategy="grid", max_trials=20, ranges={
        "image-size": {"min": 8, "max": 10}, "batch-size": {"values": [32, 64]}}))
    config = created[0]["HyperParameterTuningJobConfig"]
    assert config["ParameterRanges"] == {"CategoricalParameterRanges": [
        {"Name": "image-size", "Values": ["8", "9", "10"]}, {"Name": "batch-size", "Values": ["32", "64"]}]}
    assert "MaxNumberOfTrainingJobs" not in config["ResourceLimits"]


@pytest.mark.parametrize("tuning, field", [
    ({"ranges": {"batch-size": {"values": list(range(1, 32))}}}, "tuning.ranges.batch-size"),
    ({"max_runtime_seconds": 60}, "tuning.max_runtime_seconds"),
])
def test_what_aws_or_the_script_would_refuse_is_refused_before_any_call(backend, clients, dataset,  # noqa: F811
                                                                        bundled_scripts, tuning, field):
    before = clients.counter.total()
    with pytest.raises(InvalidRequest) as raised:
        backend.check("tuning", request_of("tuning", tuning_request(dataset, bundled_scripts, **tuning)), {})
    assert raised.value.field == field
    assert clients.counter.total() == before


def test_at_most_thirty_ranges_of_a_kind():
    ranges = {f"p{index}": {"type": "continuous", "min": 0.0, "max": 1.0, "scaling": "linear"} for index in range(31)}
    with pytest.raises(InvalidRequest) as raised:
        check_sagemaker_limits({**TUNING, "ranges": ranges}, ["val_auc"])
    assert raised.value.field == "tuning.ranges" and "ContinuousParameterRanges" in raised.value.message


def summary(name, status, values, objective=None):
    """A HyperParameterTrainingJobSummary as the API reference shapes it."""
    item = {"TrainingJobName": name, "TrainingJobArn": f"arn:aws:sagemaker:us-east-1:123456789012:training-job/{name}",
            "CreationTime": NOW, "TrainingJobStatus": status, "TunedHyperParameters": values}
    if objective is not None:
        item["FinalHyperParameterTuningJobObjectiveMetric"] = {"Type": "Maximize", "MetricName": "val_auc",
                                                               "Value": objective}
        item["ObjectiveStatus"] = "Succeeded"
    return item


def described(name, status, counters, best=None):
    """DescribeHyperParameterTuningJob's answer as the API reference shapes it (the fields the executor reads)."""
    answer = {"HyperParameterTuningJobName": name,
              "HyperParameterTuningJobArn": f"arn:aws:sagemaker:us-east-1:123456789012:hyper-parameter-tuning-job/{name}",
              "HyperParameterTuningJobConfig": {"Strategy": "Bayesian", "ResourceLimits": {
                  "MaxNumberOfTrainingJobs": 3, "MaxParallelTrainingJobs": 2}},
              "HyperParameterTuningJobStatus": status, "CreationTime": NOW,
              "TrainingJobStatusCounters": counters,
              "ObjectiveStatusCounters": {"Succeeded": counters.get("Completed", 0), "Pending": 0, "Failed": 0}}
    if best:
        answer["BestTrainingJob"] = best
    return answer


def test_the_monitor_pages_the_trials_and_ends_the_tuning_with_its_best(backend, store, clients, dataset,  # noqa: F811
                                                                        bundled_scripts, tmp_path):
    job = launch(backend, store, tmp_path, tuning_request(dataset, bundled_scripts))
    name = job.external_id
    first, second, third = (f"{name[:20]}-00{n}-abcdef12" for n in (1, 2, 3))
    sagemaker = clients.client("sagemaker")
    listing = {"HyperParameterTuningJobName": name, "MaxResults": 100, "SortBy": "CreationTime",
               "SortOrder": "Ascending"}
    best = summary(second, "Completed", {"learning-rate": "0.01", "batch-size": "64"}, 0.97)
    with Stubber(sagemaker) as stub:
        stub.add_response("describe_hyper_parameter_tuning_job",
                          described(name, "InProgress", {"Completed": 1, "InProgress": 2}),
                          {"HyperParameterTuningJobName": name})
        stub.add_response("list_training_jobs_for_hyper_parameter_tuning_job",
                          {"TrainingJobSummaries": [summary(first, "Stopped", {"learning-rate": "0.09",
                                                                              "batch-size": "32"})],
                           "NextToken": "page-2"}, listing)
        stub.add_response("list_training_jobs_for_hyper_parameter_tuning_job",
                          {"TrainingJobSummaries": [summary(second, "InProgress", {"learning-rate": "0.01",
                                                                                  "batch-size": "64"}),
                                                    summary(third, "InProgress", {"learning-rate": "0.001",
                                                                                 "batch-size": "128"})]},
                          {**listing, "NextToken": "page-2"})
        backend.follow(reporters(store))
        running = store.get(job.id)
        assert running.status is JobStatus.RUNNING
        assert [row["status"] for row in running.details["trials"]] == [STOPPED_EARLY, "RUNNING", "RUNNING"]
        assert running.progress["done"] == 1 and running.progress["running"] == 2 and running.progress["total"] == 3

        stub.add_response("describe_hyper_parameter_tuning_job",
                          described(name, "Completed", {"Completed": 2, "Stopped": 1}, best),
                          {"HyperParameterTuningJobName": name})
        stub.add_response("list_training_jobs_for_hyper_parameter_tuning_job",
                          {"TrainingJobSummaries": [
                              summary(first, "Stopped", {"learning-rate": "0.09", "batch-size": "32"}), best,
                              summary(third, "Completed", {"learning-rate": "0.001", "batch-size": "128"}, 0.91)]},
                          listing)
        backend.follow(reporters(store))
        stub.assert_no_pending_responses()
    ended = store.get(job.id)
    assert ended.status is JobStatus.COMPLETED
    assert ended.details["best"] == {"job_id": trial_job_id(job.id, second), "training_job_name": second,
                                     "number": 2, "objective": 0.97,
                                     "hyperparameters": {"learning-rate": "0.01", "batch-size": "64"}}
    # Each training job SageMaker ran is a training job of the executor with the tuning as parent, made once.
    trials = [job for job in store.list_jobs(limit=10) if job.kind == "training"]
    assert len(trials) == 3
    best_trial = store.get(trial_job_id(job.id, second))
    assert best_trial.request["parent"] == job.id and best_trial.request["trial"] == 2
    assert best_trial.request[TRIAL_PLATFORM_JOB] == second
    assert best_trial.request["hyperparameters"] == {"epochs": "4", "learning-rate": "0.01", "batch-size": "64"}
    assert "tuning" not in best_trial.request
    assert best_trial.settings["hyperparameters"]["learning-rate"] == "0.01"
    assert [(row["number"], row["status"], row["objective"]) for row in ended.details["trials"]] == [
        (1, STOPPED_EARLY, None), (2, "COMPLETED", 0.97), (3, "COMPLETED", 0.91)]


def test_stopping_a_tuning_calls_stop_and_its_stopped_trials_read_cancelled(backend, store, clients, dataset,  # noqa: F811
                                                                           bundled_scripts, tmp_path):
    sagemaker = clients.client("sagemaker")
    created = capture_params(sagemaker, "CreateHyperParameterTuningJob")
    job = launch(backend, store, tmp_path, tuning_request(dataset, bundled_scripts))
    name = job.external_id
    trial_name = f"{name[:20]}-001-abcdef12"
    start_trial_on_aws(sagemaker, created[0]["TrainingJobDefinition"], trial_name, {"learning-rate": "0.05"})
    store.request_cancel(job.id)
    with Stubber(sagemaker) as stub:
        stub.add_response("describe_hyper_parameter_tuning_job",
                          described(name, "InProgress", {"InProgress": 1}), {"HyperParameterTuningJobName": name})
        stub.add_response("stop_hyper_parameter_tuning_job", {}, {"HyperParameterTuningJobName": name})
        assert backend.cancel(store.get(job.id), context(store, job)) is Stop.REQUESTED
        stub.add_response("describe_hyper_parameter_tuning_job",
                          described(name, "Stopped", {"Stopped": 1}), {"HyperParameterTuningJobName": name})
        stub.add_response("list_training_jobs_for_hyper_parameter_tuning_job",
                          {"TrainingJobSummaries": [summary(trial_name, "Stopped", {"learning-rate": "0.05"})]},
                          {"HyperParameterTuningJobName": name, "MaxResults": 100, "SortBy": "CreationTime",
                           "SortOrder": "Ascending"})
        backend.follow(reporters(store))
        stub.assert_no_pending_responses()
    ended = store.get(job.id)
    assert ended.status is JobStatus.CANCELLED
    assert [row["status"] for row in ended.details["trials"]] == ["CANCELLED"]
    # The trial's own row follows the training job the tuning's stop stopped on AWS, and ends CANCELLED.
    set_training_state(trial_name, "Stopped", "Stopped")
    trial = claim_trial(store, trial_job_id(job.id, trial_name))
    backend.run(trial, context(store, trial))
    backend.follow(reporters(store))
    stopped = store.get(trial.id)
    assert stopped.status is JobStatus.CANCELLED and stopped.external_id == trial_name
    assert any("stopped by its tuning" in (event["message"] or "") for event in store.events(trial.id))


def start_trial_on_aws(sagemaker, definition, name, tuned):
    """Create the training job SageMaker's tuner would start: the tuning's definition with the trial's values."""
    sagemaker.create_training_job(
        TrainingJobName=name, HyperParameters={**definition["StaticHyperParameters"], **tuned},
        AlgorithmSpecification=definition["AlgorithmSpecification"], RoleArn=definition["RoleArn"],
        InputDataConfig=definition["InputDataConfig"], OutputDataConfig=definition["OutputDataConfig"],
        ResourceConfig=definition["ResourceConfig"], StoppingCondition=definition["StoppingCondition"])


def claim_trial(store, trial_id):  # noqa: F811
    """Claim the trial as a worker does (the oldest waiting job): return it RUNNING."""
    claimed = store.claim_next(["sagemaker"], kinds=["training"])
    assert claimed is not None and claimed.id == trial_id
    return claimed


def test_a_trial_is_a_training_job_that_follows_the_tunings_training_job(backend, store, clients, dataset,  # noqa: F811
                                                                         bundled_scripts, tmp_path):
    sagemaker = clients.client("sagemaker")
    created = capture_params(sagemaker, "CreateHyperParameterTuningJob")
    job = launch(backend, store, tmp_path, tuning_request(dataset, bundled_scripts))
    name = job.external_id
    trial_name = f"{name[:20]}-001-abcdef12"
    tuned = {"learning-rate": "0.01", "batch-size": "64", "lr-decay": "0.7"}
    start_trial_on_aws(sagemaker, created[0]["TrainingJobDefinition"], trial_name, tuned)
    listing = {"HyperParameterTuningJobName": name, "MaxResults": 100, "SortBy": "CreationTime",
               "SortOrder": "Ascending"}
    for _ in range(2):  # a second cycle (or a restarted executor) finds the trial's row, never a second one
        with Stubber(sagemaker) as stub:
            stub.add_response("describe_hyper_parameter_tuning_job",
                              described(name, "InProgress", {"InProgress": 1}), {"HyperParameterTuningJobName": name})
            stub.add_response("list_training_jobs_for_hyper_parameter_tuning_job",
                              {"TrainingJobSummaries": [summary(trial_name, "InProgress", tuned)]}, listing)
            backend.follow([context(store, store.get(job.id))])
            stub.assert_no_pending_responses()
    trial_id = trial_job_id(job.id, trial_name)
    assert [row["job_id"] for row in store.get(job.id).details["trials"]] == [trial_id]
    assert [trial.id for trial in store.list_jobs(kind="training")] == [trial_id]

    trial = claim_trial(store, trial_id)
    training_jobs_created = capture_params(sagemaker, "CreateTrainingJob")
    backend.run(trial, context(store, trial))
    trial = store.get(trial_id)
    assert trial.status is JobStatus.RUNNING and trial.external_id == trial_name
    assert training_jobs_created == []

    # The training monitor follows it as any training: status, model, cost.
    set_training_state(trial_name, "Completed", "Completed", billable_time_in_seconds=120,
                       training_time_in_seconds=120)
    backend.follow([context(store, trial)])
    ended = store.get(trial_id)
    assert ended.status is JobStatus.COMPLETED
    assert ended.artifacts["model"].endswith(f"/{trial_name}/output/model.tar.gz")
    assert ended.details["billable_seconds"] == 120
    # Its model is registered by its job id, as any training's (models/register TrainingJobId).
    assert finished_training_job(RecordBook(store), trial_id).artifacts["model"] == ended.artifacts["model"]

    # A rerun of the trial is a plain training with the trial's hyperparameters.
    again = {key: value for key, value in ended.request.items() if key not in ("parent", "trial", TRIAL_PLATFORM_JOB)}
    checked = backend.check("training", request_of("training", json.loads(json.dumps(again))), {})
    assert {key: checked.settings["hyperparameters"][key] for key in tuned} == tuned


def test_a_trial_whose_training_job_is_gone_ends_with_an_error_and_creates_none(backend, store, clients,  # noqa: F811
                                                                                dataset, bundled_scripts, tmp_path):
    sagemaker = clients.client("sagemaker")
    job = launch(backend, store, tmp_path, tuning_request(dataset, bundled_scripts))
    name = job.external_id
    trial_name = f"{name[:20]}-001-abcdef12"
    with Stubber(sagemaker) as stub:
        stub.add_response("describe_hyper_parameter_tuning_job",
                          described(name, "InProgress", {"InProgress": 1}), {"HyperParameterTuningJobName": name})
        stub.add_response("list_training_jobs_for_hyper_parameter_tuning_job",
                          {"TrainingJobSummaries": [summary(trial_name, "InProgress", {})]},
                          {"HyperParameterTuningJobName": name, "MaxResults": 100, "SortBy": "CreationTime",
                           "SortOrder": "Ascending"})
        backend.follow([context(store, store.get(job.id))])
    trial = claim_trial(store, trial_job_id(job.id, trial_name))
    created = capture_params(sagemaker, "CreateTrainingJob")
    backend.run(trial, context(store, trial))
    ended = store.get(trial.id)
    assert ended.status is JobStatus.ERROR and trial_name in ended.failure_reason
    assert created == []
