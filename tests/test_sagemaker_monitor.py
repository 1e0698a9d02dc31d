"""Monitoring SageMaker jobs: statuses, logs, metrics, costs, throttling, and what a cycle costs."""
from __future__ import annotations

import time
from collections import Counter
from datetime import datetime, timezone
from unittest import mock

import pytest
from aws_fixtures import (BUCKET, IMAGE, ROLE_ARN, aws, aws_setup, backend, bundled_scripts, capture_params,  # noqa: F401
                          clients, config, context, reporters, moto_training_job, new_running_job,
                          put_log_lines, running_jobs, sagemaker_platform, set_training_state, store, training_request,
                          write_dataset)
from botocore.exceptions import ClientError

from job import JobStatus
from mlops.job_requests import request_of
from mlops.platform import Stop
from mlops.sagemaker.training_service import training_job_name
from mlops.sagemaker import job_feed
from strict_job_list import TRAINING, StrictJobList, finished_jobs_of_others


@pytest.fixture
def launched(backend, store, bundled_scripts, tmp_path):  # noqa: F811
    """A training job launched through the backend and now InProgress on SageMaker."""
    dataset = write_dataset(tmp_path / "data" / "storage" / "digits")
    checked = backend.check("training", request_of("training", training_request(dataset, bundled_scripts)), {})
    job = new_running_job(store, "training", checked, tmp_path)
    backend.run(job, context(store, job))
    set_training_state(store.get(job.id).external_id, "InProgress", "Starting")
    return store.get(job.id)


def cycle(backend, store):  # noqa: F811
    backend.follow(reporters(store))


def log_text(store, job) -> str:  # noqa: F811
    return open(store.get(job.id).log_path, encoding="utf-8").read()


def ms(offset_seconds: float = 0) -> int:
    return int((time.time() + offset_seconds) * 1000)


def calls_of(clients, action) -> Counter:  # noqa: F811
    before = Counter(clients.counter.snapshot()["calls"])
    action()
    after = Counter(clients.counter.snapshot()["calls"])
    return Counter({f"{service}.{op}": after[(service, op)] - before[(service, op)]
                    for service, op in after if after[(service, op)] - before[(service, op)]})


def test_secondary_status_becomes_the_phase(backend, store, launched):  # noqa: F811
    cycle(backend, store)
    assert store.get(launched.id).phase == "Starting"
    set_training_state(launched.external_id, "InProgress", "Training")
    cycle(backend, store)
    job = store.get(launched.id)
    assert job.status is JobStatus.RUNNING and job.phase == "Training"
    assert job.details["sagemaker_status"] == "InProgress"


def test_an_unknown_secondary_status_is_shown_not_fatal(backend, store, launched):  # noqa: F811
    set_training_state(launched.external_id, "InProgress", "WarmingUpQuantumFluxCapacitor")
    cycle(backend, store)
    job = store.get(launched.id)
    assert job.status is JobStatus.RUNNING and job.phase == "WarmingUpQuantumFluxCapacitor"


def test_log_lines_of_every_instance_are_merged_by_time_once(backend, store, clients, launched):  # noqa: F811
    name = launched.external_id
    store.merge_details(launched.id, instance_count=2)
    # Taken before any call: on a busy machine the first put may take longer than the lines' spacing.
    loading, ready, epoch = ms(-3), ms(-2), ms(-1)
    put_log_lines(clients, f"{name}/algo-1-1700000000", [(loading, "loading data"),
                                                          (epoch, "epoch=1/3 train_loss=0.9000 val_loss=0.8000 "
                                                                  "val_accuracy=0.5000 val_auc=0.6000")])
    put_log_lines(clients, f"{name}/algo-2-1700000000", [(ready, "rank 1 ready")])
    cycle(backend, store)
    cycle(backend, store)  # the same events come back inside the overlap window: written once
    lines = [line for line in log_text(store, launched).splitlines() if not line.startswith("[executor]")]
    assert lines == ["[algo-1] loading data", "[algo-2] rank 1 ready",
                     "[algo-1] epoch=1/3 train_loss=0.9000 val_loss=0.8000 val_accuracy=0.5000 val_auc=0.6000"]
    job = store.get(launched.id)
    assert job.progress == {"epoch": 1, "epochs": 3, "percent": 33.3}
    assert store.latest_metrics(job.id)["val_accuracy"] == 0.5
    put_log_lines(clients, f"{name}/algo-1-1700000000", [(ms(), "epoch=2/3 train_loss=0.7000 val_loss=0.6000 "
                                                                "val_accuracy=0.7000 val_auc=0.8000")])
    put_log_lines(clients, f"{name}/algo-2-1700000000", [(ms(), "epoch=2/3 train_loss=0.7000 val_loss=0.6000 "
                                                                "val_accuracy=0.7000 val_auc=0.8000")])
    cycle(backend, store)
    assert store.get(launched.id).progress["epoch"] == 2
    assert [m["step"] for m in store.metric_history(launched.id) if m["name"] == "train_loss"] == [1, 2]


def test_a_missing_log_group_is_tolerated(backend, store, launched):  # noqa: F811
    set_training_state(launched.external_id, "InProgress", "Downloading")
    cycle(backend, store)
    assert store.get(launched.id).phase == "Downloading"


def test_completed_records_artifacts_metrics_times_and_an_estimated_cost(backend, store, clients, launched):  # noqa: F811
    name = launched.external_id
    put_log_lines(clients, f"{name}/algo-1-1700000000", [(ms(), "training done")])
    set_training_state(name, "Completed", "Completed", training_time_in_seconds=3600,
                       billable_time_in_seconds=3600,
                       final_metric_data_list=[{"MetricName": "val_accuracy", "Value": 0.93,
                                                "Timestamp": datetime.now(timezone.utc)}])
    cycle(backend, store)
    job = store.get(launched.id)
    assert job.status is JobStatus.COMPLETED and job.failure_reason is None
    assert job.artifacts["model"] == f"s3://{BUCKET}/essedum-executor/jobs/{job.id}/output/{name}/output/model.tar.gz"
    assert store.latest_metrics(job.id)["val_accuracy"] == 0.93
    assert job.details["billable_seconds"] == 3600 and job.details["estimated_cost_usd"] == 1.408
    assert job.details["cost_note"].startswith("estimate:")
    assert "training done" in log_text(store, job)


def test_a_type_without_a_price_gets_no_cost(backend, store, launched):  # noqa: F811
    moto_training_job(launched.external_id).resource_config["InstanceType"] = "ml.trn1.32xlarge"
    set_training_state(launched.external_id, "Completed", "Completed", billable_time_in_seconds=60)
    cycle(backend, store)
    details = store.get(launched.id).details
    assert details.get("estimated_cost_usd") is None and "no price" in details["cost_note"]


def test_stopped_after_a_users_stop_is_cancelled(backend, store, clients, launched):  # noqa: F811
    set_training_state(launched.external_id, "InProgress", "Training")
    store.request_cancel(launched.id)
    with mock.patch.object(clients.client("sagemaker"), "stop_training_job", return_value={}) as stop:
        # moto has no StopTrainingJob
        assert backend.cancel(store.get(launched.id), context(store, launched)) is Stop.REQUESTED
    stop.assert_called_once()
    set_training_state(launched.external_id, "Stopping", "Stopping")
    cycle(backend, store)
    assert store.get(launched.id).status is JobStatus.RUNNING
    set_training_state(launched.external_id, "Stopped", "Stopped")
    cycle(backend, store)
    assert store.get(launched.id).status is JobStatus.CANCELLED


def test_stopped_by_the_time_limit_is_an_error_that_says_so(backend, store, launched):  # noqa: F811
    set_training_state(launched.external_id, "Stopped", "MaxRuntimeExceeded")
    cycle(backend, store)
    job = store.get(launched.id)
    assert job.status is JobStatus.ERROR
    assert "MaxRuntimeExceeded" in job.failure_reason and "MaxRuntimeInSeconds=3600" in job.failure_reason


def test_a_job_sagemaker_no_longer_has_is_an_error_at_the_second_miss(backend, store, launched):  # noqa: F811
    from moto.sagemaker.models import sagemaker_backends
    del sagemaker_backends["123456789012"]["us-east-1"].training_jobs[launched.external_id]
    cycle(backend, store)
    # AWS can answer not-found for a job it created a moment ago: one miss is asked again.
    assert store.get(launched.id).status is JobStatus.RUNNING
    cycle(backend, store)
    job = store.get(launched.id)
    assert job.status is JobStatus.ERROR and "no training job named" in job.failure_reason


def test_a_throttled_describe_backs_off_the_cycle(config, clients, store, aws_setup, launched):  # noqa: F811
    now = [1000.0]
    throttled = sagemaker_platform(config, clients, store, clock=lambda: now[0])
    error = ClientError({"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}, "DescribeTrainingJob")
    with mock.patch.object(clients.client("sagemaker"), "describe_training_job", side_effect=error):
        cycle(throttled, store)
        assert calls_of(clients, lambda: cycle(throttled, store)) == Counter()  # inside the back-off
    now[0] += 1.5
    assert calls_of(clients, lambda: cycle(throttled, store))  # back-off over: it calls AWS again
    assert store.get(launched.id).status is JobStatus.RUNNING


def test_a_throttled_log_read_backs_off_on_its_own_and_status_goes_on(config, clients, store, aws_setup,  # noqa: F811
                                                                       launched):
    now = [1000.0]
    monitor = sagemaker_platform(config, clients, store, clock=lambda: now[0])
    error = ClientError({"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}, "FilterLogEvents")
    with mock.patch.object(clients.client("logs"), "filter_log_events", side_effect=error) as filter_log_events:
        cycle(monitor, store)
        set_training_state(launched.external_id, "InProgress", "Training")
        cycle(monitor, store)  # inside the log back-off: no log read, the status still read
        assert filter_log_events.call_count == 1
        assert store.get(launched.id).phase == "Training"
        now[0] += 1.5
        cycle(monitor, store)
        assert filter_log_events.call_count == 2


def test_a_log_error_is_a_warning_on_the_job_and_a_ready_note_never_a_stuck_status(backend, clients, store,  # noqa: F811
                                                                                   launched):
    denied = ClientError({"Error": {"Code": "AccessDeniedException",
                                    "Message": "not authorized to perform: logs:FilterLogEvents"}}, "FilterLogEvents")
    with mock.patch.object(clients.client("logs"), "filter_log_events", side_effect=denied):
        cycle(backend, store)
        set_training_state(launched.external_id, "Completed", "Completed")
        cycle(backend, store)
        ok, note = backend.ready_check()
    job = store.get(launched.id)
    assert job.status is JobStatus.COMPLETED
    warnings = [event["message"] for event in store.events(launched.id) if "warning" in (event["message"] or "")]
    assert len(warnings) == 1 and "AccessDeniedException" in warnings[0]
    assert ok and "AccessDeniedException" in note
    backend.training.logs.tail({launched.external_id: context(store, job)}, launched.external_id)
    assert backend.ready_check() == (True, None)  # logs readable again: the note goes


def test_a_recovered_job_is_described_once_then_only_when_it_changes(config, clients, store, aws_setup,  # noqa: F811
                                                                     launched):
    restarted = sagemaker_platform(config, clients, store)  # a new process: no watermark in memory
    assert calls_of(clients, lambda: cycle(restarted, store))["sagemaker.DescribeTrainingJob"] == 1
    assert calls_of(clients, lambda: cycle(restarted, store))["sagemaker.DescribeTrainingJob"] == 0
    again = sagemaker_platform(config, clients, store)
    assert calls_of(clients, lambda: cycle(again, store))["sagemaker.DescribeTrainingJob"] == 0


def _many_running_jobs(count, clients, store, tmp_path):  # noqa: F811
    sagemaker = clients.client("sagemaker")
    names = []
    for _ in range(count):
        job = new_running_job(store, "training", {"name": "bulk"}, tmp_path)
        name = training_job_name(job.id, "bulk")
        sagemaker.create_training_job(
            TrainingJobName=name, RoleArn=ROLE_ARN,
            AlgorithmSpecification={"TrainingImage": IMAGE, "TrainingInputMode": "File"},
            OutputDataConfig={"S3OutputPath": f"s3://{BUCKET}/o"}, StoppingCondition={"MaxRuntimeInSeconds": 60},
            ResourceConfig={"InstanceType": "ml.g5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30})
        set_training_state(name, "InProgress", "Training")
        store.update(job.id, external_id=name)
        names.append(name)
    put_log_lines(clients, f"{names[0]}/algo-1-1700000000", [(ms(), "hello")])
    return names


def _aws_listing(clients, others: int = 0) -> StrictJobList:
    """ListTrainingJobs as AWS answers it, over moto's jobs and `others` finished jobs of other users."""
    newest = datetime.fromtimestamp(time.time() - 3600, tz=timezone.utc)
    return StrictJobList(TRAINING, lambda: moto_backend(), finished_jobs_of_others(TRAINING, others, newest)
                         ).install(clients.client("sagemaker"))


def moto_backend():
    from moto.sagemaker.models import sagemaker_backends
    return sagemaker_backends["123456789012"]["us-east-1"]


@pytest.mark.parametrize("count", [1, 150])
def test_a_cycle_costs_what_is_followed_not_what_the_account_holds(backend, clients, store, tmp_path,  # noqa: F811
                                                                    count):
    listing = _aws_listing(clients, others=2000)
    names = _many_running_jobs(count, clients, store, tmp_path)
    first = calls_of(clients, lambda: cycle(backend, store))
    assert first["sagemaker.DescribeTrainingJob"] == count  # never described: each once
    listing.calls = 0
    unchanged = calls_of(clients, lambda: cycle(backend, store))
    changed_names = names[:3] if count > 3 else names
    for name in changed_names:
        set_training_state(name, "InProgress", "Uploading")
    changed = calls_of(clients, lambda: cycle(backend, store))
    pages = -(-count // 100)  # the followed jobs' pages; the 2,000 older jobs of others are never scanned
    assert listing.calls == 2 * pages
    assert unchanged == Counter({"logs.FilterLogEvents": 1})  # the list answers at before-call, uncounted here
    assert changed == Counter({"logs.FilterLogEvents": 1, "sagemaker.DescribeTrainingJob": len(changed_names)})
    assert all(store.get(job.id).phase == "Uploading" for job in running_jobs(store)
               if job.external_id in changed_names)


def test_the_list_is_bounded_by_the_oldest_followed_jobs_creation(backend, clients, store, tmp_path):  # noqa: F811
    _many_running_jobs(2, clients, store, tmp_path)
    cycle(backend, store)
    sent = capture_params(clients.client("sagemaker"), "ListTrainingJobs")
    cycle(backend, store)
    oldest = min(job.creation_time for job in moto_backend().training_jobs.values())
    after = datetime.fromisoformat(sent[0]["CreationTimeAfter"]).timestamp()
    assert 0 < oldest.replace(tzinfo=timezone.utc).timestamp() - after <= 61
    assert "LastModifiedTimeAfter" not in sent[0]
    assert sent[0]["SortBy"] == "CreationTime" and sent[0]["SortOrder"] == "Descending"


def test_a_throttled_list_never_stops_the_cycle(backend, clients, store, tmp_path):  # noqa: F811
    listing = _aws_listing(clients)
    names = _many_running_jobs(3, clients, store, tmp_path)
    cycle(backend, store)
    set_training_state(names[1], "Completed", "Completed")
    listing.throttle_next = 1
    cycle(backend, store)
    assert {job.external_id for job in running_jobs(store)} == {names[0], names[2]}


def test_jobs_beyond_the_page_cap_are_described(backend, clients, store, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setattr(job_feed, "MAX_LIST_PAGES", 1)
    _aws_listing(clients)
    names = _many_running_jobs(101, clients, store, tmp_path)
    cycle(backend, store)
    oldest = min(names, key=lambda name: moto_backend().training_jobs[name].creation_time)
    set_training_state(oldest, "Completed", "Completed")  # on the second page, which the cap leaves unread
    cycle(backend, store)
    assert oldest not in {job.external_id for job in running_jobs(store)}


def test_a_cycle_without_launched_jobs_makes_no_aws_call(backend, store, clients):  # noqa: F811
    assert calls_of(clients, lambda: backend.follow([])) == Counter()
