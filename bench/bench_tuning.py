"""Benchmark tuning: the executor's overhead, early stopping, and bayesian against random search.

    python bench/bench_tuning.py [--trials 12] [--parallel 2] [--epochs 6] [--normal 300]
                                 [--quality-trials 16] [--seeds 3] [--objective val_auc --goal maximize]
                                 [--skip overhead,early,quality]

The task is the anomaly dataset (training_scripts/make_anomaly_dataset.py, `--normal` normal scans),
trained by the bundled script at a small image size, so that a trial takes seconds on a small machine.

- overhead: the same trials (random search, fixed seed, early stopping off) run by a real executor
  (`python app.py`, local platform, sandboxed trials) and by a plain Optuna loop that runs the bundled
  script as subprocesses, as many at a time. Goal: executor wall time at most 1.15 times the loop's.
- early: random search, the same seed, early stopping auto against off, both by the executor. Goal:
  auto's wall time at most 0.6 times off's, at a best objective within 0.01.
- quality: bayesian (TPE) against random at `--quality-trials` trials, for each seed, by the plain
  loop with the executor's own samplers (mlops.tuning.make_sampler): the median best. Goal: bayesian
  at least random.
"""
from __future__ import annotations

import argparse
import json
import os
import sqlite3
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from common import ROOT, header, start_executor, stop_executor, table

from mlops import tuning as tuning_domain
from mlops.metric_lines import parse_metric_line

MAKE_ANOMALY = ROOT / "training_scripts" / "make_anomaly_dataset.py"
TRAIN = ROOT / "training_scripts" / "train.py"
POLL_S = 0.5
TUNING_TIMEOUT_S = 3600
RANGES = {"learning-rate": {"min": 1e-4, "max": 1e-1, "scaling": "log"}, "batch-size": {"values": [16, 32, 64]}}


def fixed(epochs: int) -> dict[str, Any]:
    return {"epochs": epochs, "image-size": 16}


def tuning_spec(objective: dict[str, str], trials: int, parallel: int, strategy: str, early_stopping: str,
                seed: int) -> dict[str, Any]:
    """Return the `tuning` object, as the request carries it."""
    return {"objective": objective, "ranges": RANGES, "strategy": strategy, "max_trials": trials,
            "max_parallel": parallel, "early_stopping": early_stopping, "seed": seed}


def trial_timings(database: Path, tuning_id: str, metric: str) -> list[dict[str, Any]]:
    """Return, per trial, its queue wait, start cost, epochs run, and the time from its pruned epoch to its end."""
    connection = sqlite3.connect(database.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        rows = []
        for job_id, submitted, started, finished, details in connection.execute(
                "SELECT id, submitted, started, finished, details FROM jobs WHERE json_extract(request, '$.parent') = ? "
                "ORDER BY submitted", (tuning_id,)):
            steps = dict(connection.execute(
                "SELECT step, MIN(time) FROM job_metrics WHERE job_id = ? AND name = ? AND step IS NOT NULL "
                "GROUP BY step", (job_id, metric)).fetchall())
            stopped_at = json.loads(details or "{}").get("stopped_early_at_epoch")
            rows.append({"submitted": submitted, "finished": finished, "wait": started - submitted, "first_epoch": (steps[min(steps)] - started) if steps else None,
                         "epochs": max(steps, default=0), "stopped_at": stopped_at,
                         "stop_lag": finished - steps[stopped_at] if stopped_at in steps else None})
        return rows
    finally:
        connection.close()


def print_timings(mode: str, rows: list[dict[str, Any]], parallel: int) -> None:
    """Print the median per-trial timings of one executor run."""
    def median(values: list[float]) -> str:
        return f"{statistics.median(values):.2f}" if values else "-"

    stopped = [row for row in rows if row["stopped_at"] is not None]
    # The k-th trial queued after the first wave takes the slot of the k-th trial to end.
    ends = sorted(row["finished"] for row in rows)
    gaps = [row["submitted"] - end for row, end in zip(rows[parallel:], ends)]
    print(f"{mode}: {len(rows)} trials; median queue wait {median([row['wait'] for row in rows])} s, "
          f"start to first epoch {median([row['first_epoch'] for row in rows if row['first_epoch'] is not None])} s, "
          f"epochs run {sum(row['epochs'] for row in rows)}; stopped early {len(stopped)} "
          f"(at epochs {sorted(row['stopped_at'] for row in stopped)}), median pruned epoch's line to trial end "
          f"{median([row['stop_lag'] for row in stopped if row['stop_lag'] is not None])} s, "
          f"median trial end to the next trial queued {median(gaps)} s")


def run_executor(dataset: Path, spec: dict[str, Any], epochs: int, parallel: int,
                 timings: list[dict[str, Any]] | None = None) -> tuple[float, float, int]:
    """Tune with a real executor; return wall seconds, the best objective and the trials stopped early."""
    with tempfile.TemporaryDirectory(prefix="bench-tuning-") as scratch:
        data_dir = Path(scratch)
        shutil.copytree(dataset, data_dir / "storage" / "datasets" / "anomaly")
        service, _ = start_executor(data_dir, workers=parallel)
        try:
            started = time.monotonic()
            status, answer = service.request("POST", "/api/service/v1/pipelines/tuning", {
                "name": "bench-tuning", "dataset": "datasets/anomaly", "hyperparameters": fixed(epochs),
                "tuning": spec})
            assert status == 201, answer
            deadline = started + TUNING_TIMEOUT_S
            while time.monotonic() < deadline:
                _, body = service.request("GET", answer["status_url"])
                if body["status"] in ("COMPLETED", "ERROR", "CANCELLED"):
                    break
                time.sleep(POLL_S)
            seconds = time.monotonic() - started
            assert body["status"] == "COMPLETED", body
            if timings is not None:
                timings.extend(trial_timings(data_dir / "executor.sqlite3", answer["job_id"], spec["objective"]["metric"]))
            stopped = sum(trial["status"] == tuning_domain.STOPPED_EARLY for trial in body["trials"])
            return seconds, body["best"]["objective"], stopped
        finally:
            stop_executor(service)


def run_plain(dataset: Path, spec: dict[str, Any], epochs: int, parallel: int) -> tuple[float, float]:
    """Tune with a plain Optuna loop running the bundled script as subprocesses; return wall seconds and the best."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    checked = {**spec, "ranges": {name: dict(spec_range) for name, spec_range in spec["ranges"].items()}}
    for spec_range in checked["ranges"].values():
        spec_range.setdefault("type", "categorical" if "values" in spec_range else "continuous")
        spec_range.setdefault("scaling", "linear")
    study = optuna.create_study(direction=spec["objective"]["goal"], sampler=tuning_domain.make_sampler(checked))
    cores = os.cpu_count() or 1
    threads = str(max(1, cores // parallel))
    lock = threading.Lock()

    def objective(trial: Any) -> float:
        values = tuning_domain.hyperparameter_text(tuning_domain.suggest(trial, checked["ranges"]))
        with tempfile.TemporaryDirectory(prefix="bench-trial-") as scratch:
            folder = Path(scratch)
            for name in ("model", "data", "checkpoints"):
                (folder / name).mkdir()
            flags = [item for name, value in {**{k: str(v) for k, v in fixed(epochs).items()}, **values,
                                              "checkpoint-dir": str(folder / "checkpoints")}.items()
                     for item in (f"--{name}", value)]
            env = {**os.environ, "SM_CHANNEL_TRAINING": str(dataset), "SM_MODEL_DIR": str(folder / "model"),
                   "SM_OUTPUT_DATA_DIR": str(folder / "data"), "OMP_NUM_THREADS": threads, "SM_NUM_CPUS": threads}
            completed = subprocess.run([sys.executable, str(TRAIN), *flags], env=env, capture_output=True,
                                       text=True, timeout=TUNING_TIMEOUT_S, check=True)
        last = None
        for line in completed.stdout.splitlines():
            parsed = parse_metric_line(line)
            if parsed and parsed[2].get(spec["objective"]["metric"]) is not None:
                last = parsed[2][spec["objective"]["metric"]]
        with lock:
            assert last is not None, completed.stdout[-2000:]
        return last

    started = time.monotonic()
    study.optimize(objective, n_trials=spec["max_trials"], n_jobs=parallel)
    return time.monotonic() - started, study.best_value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--normal", type=int, default=300, help="normal scans in the anomaly dataset")
    parser.add_argument("--quality-trials", type=int, default=16)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--objective", default="val_auc", help="the metric the search optimises")
    parser.add_argument("--goal", choices=("maximize", "minimize"), default="maximize")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: overhead, early, quality")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    objective = {"metric": args.objective, "goal": args.goal}
    metric = args.objective
    header("Tuning (bench/bench_tuning.py)")
    print(f"anomaly dataset, {args.normal} normal scans; bundled script at image-size 16, {args.epochs} epochs; "
          f"{args.parallel} trials at a time; {args.goal} {metric}")
    print()
    with tempfile.TemporaryDirectory(prefix="bench-anomaly-") as scratch:
        dataset = Path(scratch) / "anomaly"
        subprocess.run([sys.executable, str(MAKE_ANOMALY), str(dataset), "--limit", str(args.normal)], check=True,
                       capture_output=True, timeout=300)
        if "overhead" not in skip:
            spec = tuning_spec(objective, args.trials, args.parallel, "random", "off", args.seed)
            plain_s, plain_best = run_plain(dataset, spec, args.epochs, args.parallel)
            executor_s, executor_best, _ = run_executor(dataset, spec, args.epochs, args.parallel)
            print(f"### Overhead: {args.trials} trials, random search (seed {args.seed}), early stopping off")
            table(["runner", "wall s", f"best {metric}"],
                  [["plain Optuna loop, subprocesses", f"{plain_s:.1f}", f"{plain_best:.4f}"],
                   ["executor (sandboxed jobs)", f"{executor_s:.1f}", f"{executor_best:.4f}"]])
            print(f"executor / loop: {executor_s / plain_s:.2f}x (goal <= 1.15x)")
            print()
        if "early" not in skip:
            rows, results, timings = [], {}, {}
            for mode in ("off", "auto"):
                timings[mode] = []
                seconds, best, stopped = run_executor(
                    dataset, tuning_spec(objective, args.trials, args.parallel, "random", mode, args.seed), args.epochs,
                    args.parallel, timings[mode])
                results[mode] = (seconds, best)
                rows.append([mode, f"{seconds:.1f}", f"{best:.4f}", stopped])
            print(f"### Early stopping: {args.trials} trials, random search (seed {args.seed}), executor")
            table(["early_stopping", "wall s", f"best {metric}", "trials stopped early"], rows)
            for mode, rows_of_mode in timings.items():
                print_timings(mode, rows_of_mode, args.parallel)
            ratio = results["auto"][0] / results["off"][0]
            print(f"auto / off wall: {ratio:.2f}x (goal <= 0.6x); best differs by "
                  f"{abs(results['auto'][1] - results['off'][1]):.4f} (goal <= 0.01)")
            print()
        if "quality" not in skip:
            bests: dict[str, list[float]] = {"bayesian": [], "random": []}
            for seed in range(args.seeds):
                for strategy in bests:
                    _, best = run_plain(dataset, tuning_spec(objective, args.quality_trials, args.parallel, strategy, "off",
                                                             seed), args.epochs, args.parallel)
                    bests[strategy].append(best)
            print(f"### Search quality: {args.quality_trials} trials, seeds 0..{args.seeds - 1}, "
                  "the executor's samplers in a plain loop")
            table(["strategy", f"best {metric} per seed", "median"],
                  [[name, ", ".join(f"{value:.4f}" for value in values), f"{statistics.median(values):.4f}"]
                   for name, values in bests.items()])
            print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
