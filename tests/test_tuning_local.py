"""Tuning on the local platform: refused requests, Optuna-driven trials as jobs, early stopping, stop and restart."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conftest import wait_for
from test_training_pipeline import make_digits

ROUTE = "/api/service/v1/pipelines/tuning"
OBJECTIVE = {"metric": "val_auc", "goal": "maximize"}

# A script of the user's own: each epoch's val_auc rises towards its --quality, --pause seconds an epoch.
QUALITY_SCRIPT = """\
import argparse, time
parser = argparse.ArgumentParser()
parser.add_argument("--quality", type=float, default=0.5)
parser.add_argument("--epochs", type=int, default=4)
parser.add_argument("--pause", type=float, default=0.0)
args = parser.parse_args()
for epoch in range(1, args.epochs + 1):
    time.sleep(args.pause)
    auc = args.quality * epoch / args.epochs
    print(f"epoch={epoch}/{args.epochs} train_loss={1 - auc:.4f} val_auc={auc:.4f}", flush=True)
"""


def write_quality_script(storage_root: Path) -> str:
    folder = storage_root / "code" / "quality"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.py").write_text(QUALITY_SCRIPT)
    (storage_root / "datasets" / "none").mkdir(parents=True, exist_ok=True)
    return "code/quality"


def quality_tuning(source_dir: str, **tuning: Any) -> dict[str, Any]:
    return {"name": "quality", "dataset": "datasets/none", "source_dir": source_dir, "entry_point": "train.py",
            "hyperparameters": {"epochs": 4, "pause": 0.8},
            "tuning": {"objective": OBJECTIVE, "ranges": {"quality": {"values": [0.9, 0.7, 0.5, 0.3, 0.1]}},
                       "strategy": "grid", "max_trials": 5, "max_parallel": 1, "seed": 7, **tuning}}


# The refusals both platforms share are the platform contract's; the local platform alone warm-starts
# from its own tunings, so it alone knows an id that names none.
REFUSED = [
    ({"ranges": {"epochs": {"values": [2, 3]}}, "warm_start": {"from": ["3f2b8c1e-0000-4000-8000-000000000000"]}},
     "tuning.warm_start.from"),
]


@pytest.mark.parametrize(("tuning", "field"), REFUSED)
def test_a_tuning_the_script_cannot_run_is_refused_naming_the_field_and_nothing_is_created(app, tuning, field):
    (app.config["EXECUTOR"].config.storage_root / "datasets" / "digits").mkdir(parents=True)
    response = app.test_client().post(ROUTE, json={"name": "t", "dataset": "datasets/digits",
                                                   "tuning": {"objective": OBJECTIVE, **tuning}})
    assert response.status_code == 422, response.get_json()
    assert response.get_json()["field"] == field
    assert app.config["EXECUTOR"].store.list_jobs() == []


def test_hyperband_needs_an_epochs_like_hyperparameter(app):
    source_dir = write_quality_script(app.config["EXECUTOR"].config.storage_root)
    body = quality_tuning(source_dir, strategy="hyperband")
    body["hyperparameters"] = {"pause": 0}
    response = app.test_client().post(ROUTE, json=body)
    assert response.status_code == 422 and response.get_json()["field"] == "tuning.strategy"


def test_the_bundled_script_is_tuned_on_digits_with_trials_as_jobs(live_server):
    server = live_server()
    make_digits(server.executor.config.storage_root / "datasets" / "digits", 200)
    status, created = server.request("POST", ROUTE, {
        "name": "digits-tuning", "dataset": "datasets/digits",
        "hyperparameters": {"epochs": 2, "image-size": 8},
        "tuning": {"objective": OBJECTIVE, "strategy": "random", "max_trials": 3, "max_parallel": 2, "seed": 3,
                   "early_stopping": "off",
                   "ranges": {"learning-rate": {"min": 0.001, "max": 0.05, "scaling": "log"},
                              "batch-size": {"values": [16, 32]}}}})
    assert status == 201 and created["status"] == "WAITING", created
    body = wait_for(lambda: _ended(server, created["status_url"]), timeout=300, interval=0.5)
    assert body["status"] == "COMPLETED", body
    assert body["progress"]["done"] == 3 and body["progress"]["total"] == 3 and body["progress"]["running"] == 0
    trials = body["trials"]
    assert [trial["number"] for trial in trials] == [1, 2, 3]
    assert all(trial["status"] == "COMPLETED" and trial["epoch"] == 2 for trial in trials), trials
    assert len({trial["hyperparameters"]["learning-rate"] for trial in trials}) == 3
    best = max(trials, key=lambda trial: trial["objective"])
    assert body["best"]["job_id"] == best["job_id"] and body["best"]["objective"] == best["objective"]
    # Each trial is a training job of its own: its status, metrics, model and the tuned values it ran with.
    _, listed = server.request("GET", f"/api/jobs?parent={created['job_id']}")
    assert [row["id"] for row in listed["jobs"]] == [trial["job_id"] for trial in trials]
    _, trial = server.request("GET", f"/status/{best['job_id']}")
    assert trial["kind"] == "training" and trial["parent"] == created["job_id"] and trial["trial"] == best["number"]
    assert trial["metrics"]["val_auc"] == best["objective"]
    assert "model/model.pt" in trial["artifacts"]["files"]
    _, detail = server.request("GET", f"/api/jobs/{best['job_id']}")
    assert float(detail["request"]["hyperparameters"]["learning-rate"]) == best["hyperparameters"]["learning-rate"]
    # The best trial's model is registered and deployed as any training's, and answers.
    from test_model_lifecycle_local import API, deploy

    endpoint = deploy(server, "tuned-digits", "tuned", TrainingJobId=best["job_id"])
    assert endpoint["status"] == "InService", endpoint
    status, answer = server.request("POST", f"{API}/endpoints/tuned/infer", {"instances": [[[0] * 8] * 8]})
    assert status == 200 and answer["predictions"][0]["label"] in [str(digit) for digit in range(10)], answer
    _, got = server.request("GET", f"{ROUTE}/{created['job_id']}/get")
    assert got["best"] == body["best"] and got["tuning"]["strategy"] == "random"
    _, tunings = server.request("GET", f"{ROUTE}/list")
    assert [row["job_id"] for row in tunings] == [created["job_id"]]


def test_a_trial_behind_the_median_is_stopped_early_and_keeps_its_metrics(live_server):
    server = live_server()
    source_dir = write_quality_script(server.storage_root)
    status, created = server.request("POST", ROUTE, quality_tuning(source_dir))
    assert status == 201, created
    body = wait_for(lambda: _ended(server, created["status_url"]), timeout=120, interval=0.3)
    assert body["status"] == "COMPLETED", body
    stopped = [trial for trial in body["trials"] if trial["status"] == "STOPPED_EARLY"]
    assert stopped, body["trials"]
    for trial in stopped:
        # Each epoch's val_auc is quality * epoch / 4: a trial behind the median is behind from its first
        # epoch on and is stopped as its line is written, before its last epoch. (The reaction is well
        # under the 0.8 s between epochs, but a loaded CI machine must not turn that margin into a flake.)
        assert trial["epoch"] < 4, body["trials"]
        _, detail = server.request("GET", f"/api/jobs/{trial['job_id']}")
        assert [row["step"] for row in detail["metric_history"] if row["name"] == "val_auc"] == \
            list(range(1, trial["epoch"] + 1))
        # The tuner records on the trial the last epoch it judged before stopping it.
        _, trial_status = server.request("GET", f"/status/{trial['job_id']}")
        assert 1 <= trial_status["details"]["stopped_early_at_epoch"] <= trial["epoch"], trial_status["details"]
    assert body["best"]["hyperparameters"] == {"quality": 0.9}
    assert body["best"]["objective"] == pytest.approx(0.9)
    # The best trial runs again as a training of its own, with the values it was tuned to.
    status, again = server.request("POST", f"/api/jobs/{body['best']['job_id']}/rerun")
    assert status == 202, again
    rerun = wait_for(lambda: _ended(server, again["status_url"]), timeout=60, interval=0.3)
    assert rerun["status"] == "COMPLETED" and "parent" not in rerun
    assert rerun["metrics"]["val_auc"] == pytest.approx(0.9)


def test_stopping_a_tuning_stops_every_trial(live_server):
    server = live_server(workers="3")
    source_dir = write_quality_script(server.storage_root)
    request = quality_tuning(source_dir, max_parallel=2, early_stopping="off")
    request["hyperparameters"]["pause"] = 5
    _, created = server.request("POST", ROUTE, request)
    wait_for(lambda: server.request("GET", created["status_url"])[1]["progress"]["running"] == 2, timeout=60)
    status, _ = server.request("POST", f"/execute/{created['job_id']}/stop")
    assert status in (200, 202)
    body = wait_for(lambda: _ended(server, created["status_url"]), timeout=60, interval=0.3)
    assert body["status"] == "CANCELLED"
    assert [trial["status"] for trial in body["trials"]] == ["CANCELLED", "CANCELLED"]
    assert body["progress"]["running"] == 0


def test_a_tuning_resumes_after_a_restart_without_running_a_trial_twice(service, tmp_path):
    data_dir = tmp_path / "service-data"
    first = service(data_dir)
    source_dir = write_quality_script(data_dir / "storage")
    request = quality_tuning(source_dir, max_trials=3, early_stopping="off")
    request["hyperparameters"]["pause"] = 0.5
    _, created = first.request("POST", ROUTE, request)
    wait_for(lambda: first.request("GET", created["status_url"])[1]["progress"]["done"] >= 1, timeout=60)
    first.kill()
    second = service(data_dir)
    body = wait_for(lambda: _ended(second, created["status_url"]), timeout=120, interval=0.3)
    assert body["status"] == "COMPLETED", body
    assert [trial["number"] for trial in body["trials"]] == [1, 2, 3]
    assert len({trial["job_id"] for trial in body["trials"]}) == 3
    assert all(trial["status"] == "COMPLETED" for trial in body["trials"])
    _, listed = second.request("GET", "/api/jobs?kind=training")
    assert len(listed["jobs"]) == 3


def _ended(server: Any, status_url: str) -> dict[str, Any] | None:
    status, body = server.request("GET", status_url)
    return body if status == 200 and body["status"] in ("COMPLETED", "ERROR", "CANCELLED") else None


def test_the_cli_tunes_shows_progress_then_the_best_values_and_the_train_command(service, tmp_path):
    from test_cli import cli

    data_dir = tmp_path / "service-data"
    source_dir = write_quality_script(data_dir / "storage")
    server = service(data_dir)
    done = cli("tune", "datasets/none", "--source-dir", source_dir, "--entry-point", "train.py",
               "--hp", "epochs=3", "--hp", "pause=0.2", "--range", "quality=0.2,0.9", "--objective", "val_auc",
               "--strategy", "grid", "--max-trials", "2", "--parallel", "1", "--seed", "1", "--wait", "--no-log",
               "--interval", "0.3", url=server.url, token=None, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "trials 2/2 done, 0 running  best val_auc=0.9 (trial" in done.stderr
    assert "quality = 0.9" in done.stdout
    assert ("executor-client train datasets/none --hp epochs=3 --hp pause=0.2 --hp quality=0.9 "
            f"--entry-point train.py --source-dir {source_dir}") in done.stdout


def test_a_tuning_taken_over_by_another_executor_is_no_longer_driven_here(tmp_path):
    # A real store and tuner; the two executors sharing the store are the two owners of the claims.
    import uuid

    from db import SQLiteStore
    from job import JobStatus
    from mlops.local.tuning import LocalTuner
    from job import TUNING
    from mlops.reporter import JobReader, JobReporter
    from mlops.tuning import check_tuning

    store = SQLiteStore(tmp_path / "jobs.db")
    tuning_id = str(uuid.uuid4())
    request = quality_tuning("code/quality")
    request["tuning"] = check_tuning(request["tuning"], {}, None)
    store.create_job(tuning_id, kind=TUNING, backend="local", request=request, secrets=None,
                     log_path=str(tmp_path / "jobs" / tuning_id / "job.log"), output_dir=str(tmp_path / "jobs" / tuning_id))
    (tmp_path / "jobs" / tuning_id).mkdir(parents=True)
    queued: list[str] = []
    tuner = LocalTuner(JobReader(store), tmp_path, enqueue=lambda kind, request, job_id: queued.append(job_id),
                       cancel=lambda job_id: None, reporter_for=lambda job: JobReporter(job, store, dict))
    tuner.adopt(store.claim_next(kinds=[TUNING], owner="executor-a"))
    # Executor a's lease lapsed: b holds the tuning now, with a new token.
    assert [job.id for job, _ in store.take_over("executor-b", everyone_else=True)] == [tuning_id]
    tuner.step()
    assert queued == [] and tuner.active() == 0
    assert store.get(tuning_id).status is JobStatus.RUNNING and store.get(tuning_id).owner == "executor-b"
    store.close()


def test_a_lease_lapse_reported_during_a_tuning_step_stops_its_writes_and_the_next_step_resumes(tmp_path):
    # A real store and tuner, as above; the lease guard's report comes as the step queues its first trial.
    import uuid

    from db import SQLiteStore
    from mlops.local.tuning import LocalTuner
    from job import TUNING
    from mlops.reporter import JobReader, JobReporter
    from mlops.tuning import check_tuning

    store = SQLiteStore(tmp_path / "jobs.db")
    tuning_id = str(uuid.uuid4())
    request = quality_tuning("code/quality", max_parallel=2)
    request["tuning"] = check_tuning(request["tuning"], {}, None)
    store.create_job(tuning_id, kind=TUNING, backend="local", request=request, secrets=None,
                     log_path=str(tmp_path / "jobs" / tuning_id / "job.log"), output_dir=str(tmp_path / "jobs" / tuning_id))
    (tmp_path / "jobs" / tuning_id).mkdir(parents=True)
    queued: list[str] = []

    def enqueue(kind: str, request: Any, job_id: str) -> None:
        queued.append(job_id)
        if len(queued) == 1:
            tuner.let_go()

    tuner = LocalTuner(JobReader(store), tmp_path, enqueue=enqueue, cancel=lambda job_id: None,
                       reporter_for=lambda job: JobReporter(job, store, dict))
    tuner.adopt(store.claim_next(kinds=[TUNING], owner="executor-a"))
    tuner.step()
    # The second slot stays empty and the tuning's progress unwritten; the tuning stays in hand.
    assert len(queued) == 1 and tuner.active() == 1
    assert store.get(tuning_id).progress == {}
    # The queue steps again once the lease is held: the tuning, still this executor's, is driven again (this
    # enqueue stores no job, so the first trial is queued again as one asked but never queued).
    tuner.step()
    assert len(set(queued)) == 2 and store.get(tuning_id).progress["total"] == 5
    store.close()
