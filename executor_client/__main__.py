"""The executor's command line: train, submit a pipeline, follow, rerun, compare, download, list, status, logs,
cancel; register a trained model, deploy it, infer, explain, batch-transform, undeploy; build an image.

A job id may be given as its first characters, as long as they name one job (like git).

The executor's URL is --url, else EXECUTOR_URL, else built from the service's own settings
EXECUTOR_HOST and EXECUTOR_PORT, else the service's default http://127.0.0.1:5002.

Exit status: 0 the job COMPLETED (or the command worked), 1 the job ended in ERROR, 2 usage,
3 the job was CANCELLED, 4 the executor refused the request or could not be reached, 130 interrupted,
141 the reader of the output went away (`status X | head -1`).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import time
from typing import Any, TextIO

from executor_client import Client, ExecutorError

EXIT_CODES = {"COMPLETED": 0, "ERROR": 1, "CANCELLED": 3}
USAGE, API_ERROR, INTERRUPTED = 2, 4, 130
# What a shell reports for a process that SIGPIPE ended, which Python turns into BrokenPipeError instead.
READER_GONE = 141
FINAL = frozenset(EXIT_CODES)
BAR_WIDTH = 24
# The service's own defaults (config.py); the client does not import it, to need only the standard library.
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", "5002"
# Addresses a service listens on that a client cannot connect to: it reaches such a service on loopback.
ANY_ADDRESS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}
# How long --wait keeps trying an executor that went away (a restart), and the longest pause between tries.
RECONNECT_SECONDS = 300.0
MAX_RETRY_PAUSE = 15.0


def executor_url(environ: dict[str, str]) -> tuple[str, str]:
    """Return the executor's URL from the service's settings, and which setting gave it."""
    if environ.get("EXECUTOR_URL"):
        return environ["EXECUTOR_URL"], "EXECUTOR_URL"
    host, port = environ.get("EXECUTOR_HOST"), environ.get("EXECUTOR_PORT")
    if not host and not port:
        return f"http://{DEFAULT_HOST}:{DEFAULT_PORT}", "the service's default address"
    host = ANY_ADDRESS.get(host or DEFAULT_HOST, host or DEFAULT_HOST)
    shown = f"[{host}]" if ":" in host else host
    source = " and ".join(name for name in ("EXECUTOR_HOST", "EXECUTOR_PORT") if environ.get(name))
    return f"http://{shown}:{port or DEFAULT_PORT}", source


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="executor-client", description="Talk to an Essedum job executor.",
        epilog="Exit status: 0 COMPLETED, 1 ERROR, 2 usage, 3 CANCELLED, 4 request refused or server unreachable, "
               "141 the output's reader went away.")
    parser.add_argument("--url", help="the executor [EXECUTOR_URL, else from EXECUTOR_HOST and EXECUTOR_PORT as the "
                                      f"service reads them, else http://{DEFAULT_HOST}:{DEFAULT_PORT}]")
    parser.add_argument("--token", default=os.environ.get("EXECUTOR_API_TOKEN"),
                        help="its API token [EXECUTOR_API_TOKEN]")
    parser.add_argument("--timeout", type=float, default=30, help="seconds to wait for each answer")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a model on a dataset (the bundled script unless --entry-point)")
    tune = commands.add_parser(
        "tune", help="search a training's hyperparameters: each trial is a training job",
        description="Tune, e.g.: tune datasets/digits --range learning-rate=1e-4:1e-1:log "
                    "--range batch-size=32,64,128 --objective val_auc --max-trials 12 --parallel 2 --wait")
    for trainer in (train, tune):
        trainer.add_argument("dataset", help="dataset folder in the executor's storage root, or an s3:// URI")
        trainer.add_argument("--name", help="the job's name (default: the dataset folder's name)")
        trainer.add_argument("--hp", action="append", default=[], metavar="NAME=VALUE",
                             help="a (fixed) hyperparameter, e.g. --hp epochs=5 (repeat it for more)")
        trainer.add_argument("--metadata-file", help="labels file inside the dataset (default: class folders)")
        trainer.add_argument("--instance-type", help="SageMaker instance type (sagemaker backend)")
        trainer.add_argument("--instance-count", type=int, help="number of instances")
        trainer.add_argument("--spot", action="store_true", help="managed spot training (sagemaker backend)")
        trainer.add_argument("--max-runtime", type=int, metavar="SECONDS", help="stop a training job after this long")
        trainer.add_argument("--entry-point", help="your own script instead of the bundled one (with --source-dir)")
        trainer.add_argument("--source-dir", help="folder of your script in the storage root")
    tune.add_argument("--range", action="append", default=[], required=True, dest="ranges", metavar="NAME=RANGE",
                      help="MIN:MAX, MIN:MAX:log or V1,V2,... e.g. --range learning-rate=1e-4:1e-1:log (repeat it)")
    tune.add_argument("--objective", required=True, help="the metric to optimise, e.g. val_auc")
    tune.add_argument("--goal", choices=("maximize", "minimize"), default="maximize")
    tune.add_argument("--strategy", choices=("bayesian", "random", "grid", "hyperband"), default="bayesian")
    tune.add_argument("--max-trials", type=int, default=10)
    tune.add_argument("--parallel", type=int, default=1, help="trials at once")
    tune.add_argument("--early-stopping", choices=("auto", "off"), default="auto")
    tune.add_argument("--seed", type=int)
    submit = commands.add_parser("submit", help="submit a pipeline (a POST /execute body as JSON)")
    submit.add_argument("pipeline", help="JSON file with the pipeline, or - for standard input")
    rerun = commands.add_parser("rerun", help="queue a job's request again as a new job")
    rerun.add_argument("job_id")
    rerun.add_argument("--secrets", metavar="FILE",
                       help="JSON with credentials/environment for a pipeline whose secrets were erased when it ended")
    wait = commands.add_parser("wait", help="follow a job to its end and exit with its outcome")
    wait.add_argument("job_id")
    for follower in (train, tune, submit, rerun, wait):
        if follower is not wait:
            follower.add_argument("--wait", action="store_true",
                                  help="follow the job to its end and exit with its outcome")
        follower.add_argument("--interval", type=float, default=2.0, help="seconds between polls")
        follower.add_argument("--no-log", action="store_true", help="do not print the job's log")
        follower.add_argument("--reconnect-for", type=float, default=RECONNECT_SECONDS, metavar="SECONDS",
                              help="how long to keep trying an executor that went away (a restart) "
                                   f"[default {RECONNECT_SECONDS:.0f}]")
    compare = commands.add_parser("compare", help="final metrics and hyperparameters of jobs side by side")
    compare.add_argument("job_ids", nargs="+", metavar="job_id")
    download = commands.add_parser("download", help="download a job's model (model.tar.gz) or one output file")
    download.add_argument("job_id")
    download.add_argument("file", nargs="?", help="a path under model/ or output/ (see `status`); default the model")
    download.add_argument("--output", "-o", help="where to write it (default: the file's name here; - for stdout)")

    listing = commands.add_parser("list", help="list jobs, newest first")
    listing.add_argument("--status", choices=sorted(FINAL | {"WAITING", "RUNNING"}))
    listing.add_argument("--kind")
    listing.add_argument("--name", help="only jobs whose name contains this (any case)")
    listing.add_argument("--limit", type=int, default=50)
    status = commands.add_parser("status", help="show a job's status, phase, progress and metrics")
    status.add_argument("job_id")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    logs = commands.add_parser("logs", help="print a job's log")
    logs.add_argument("job_id")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing until the job ends")
    logs.add_argument("--interval", type=float, default=2.0, help="seconds between polls with --follow")
    cancel = commands.add_parser("cancel", help="stop a job")
    cancel.add_argument("job_id")
    register = commands.add_parser("register-model", help="register the model of a finished training job")
    register.add_argument("job_id", help="the training job (its id or a unique beginning of it)")
    register.add_argument("--name", required=True, help="the model's name (letters, digits, hyphens)")
    deploy = commands.add_parser("deploy", help="deploy a registered model as an endpoint and wait until it serves")
    deploy.add_argument("model")
    deploy.add_argument("--endpoint", required=True, help="the endpoint's name (its configuration: <name>-config)")
    deploy.add_argument("--instance-type", help="SageMaker instance type (sagemaker backend)")
    infer = commands.add_parser("infer", help="predict with an endpoint: image files, or a JSON payload")
    explain = commands.add_parser("explain", help="explain an endpoint's prediction of an image")
    for asker in (infer, explain):
        asker.add_argument("endpoint")
        asker.add_argument("images", nargs="*", metavar="IMAGE", help="image files (PNG, JPEG, ...)")
        asker.add_argument("--json", metavar="FILE", help="a JSON payload instead (- for standard input)")
    transform = commands.add_parser("transform", help="batch inference over a file or folder, one answer a file")
    transform.add_argument("model")
    transform.add_argument("source", help="file or folder in the executor's storage root, or an s3:// URI")
    transform.add_argument("--name", required=True, help="the batch job's name (unique)")
    undeploy = commands.add_parser("undeploy", help="take an endpoint down; its configuration and model stay")
    undeploy.add_argument("endpoint")
    for waiter in (deploy, transform):
        waiter.add_argument("--interval", type=float, default=1.0, help="seconds between polls")
        waiter.add_argument("--timeout-wait", type=float, default=600, metavar="SECONDS",
                            help="give up waiting after this long [default 600]")

    build = commands.add_parser(
        "build-image", help="build a SageMaker training image on this machine with docker (no executor needed)",
        description="Build base image + the Python packages of CONTEXT/requirements.txt, leaving /opt/ml/code empty "
                    "so that SageMaker runs each job's submitted code; optionally push it to an ECR repository.")
    build.add_argument("--base", required=True, help="base image, e.g. AWS's PyTorch training image")
    build.add_argument("--tag", required=True, help="tag of the image to build, e.g. essedum/train:1")
    build.add_argument("--context", default=None, help="folder whose requirements.txt is installed "
                                                       "[default: the bundled training_scripts]")
    build.add_argument("--push", metavar="ECR_REPOSITORY_URI",
                       help="push to <account>.dkr.ecr.<region>.amazonaws.com/<repo> (logged in to in its own region)")

    args = parser.parse_args(argv)
    args.url_source = "--url"
    if args.url is None:
        args.url, args.url_source = executor_url(dict(os.environ))
    return args


def main(argv: list[str] | None = None) -> int:
    """Run one command and return the exit status."""
    args = parse_args(argv)
    if args.command == "build-image":
        return build_image(args)
    try:
        client = Client(args.url, args.token, timeout=args.timeout)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return USAGE
    try:
        return COMMANDS[args.command](client, args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return USAGE
    except ExecutorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if exc.status is None:
            print(f"(the address came from {args.url_source}; give another with --url, EXECUTOR_URL, or "
                  "EXECUTOR_HOST and EXECUTOR_PORT as the service has them)", file=sys.stderr)
        return API_ERROR
    except KeyboardInterrupt:
        print("\ninterrupted (the job keeps running; `cancel` stops it)", file=sys.stderr)
        return INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`| head -1`): say nothing more, and let the interpreter's last flush of
        # standard output go to nowhere instead of failing again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return READER_GONE


def read_json(name: str, what: str) -> Any:
    """Read a JSON file (or standard input for -); raise UsageError naming the file."""
    try:
        text = sys.stdin.read() if name == "-" else open(name, encoding="utf-8").read()
        return json.loads(text)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read the {what} {name}: {exc}") from None


class UsageError(Exception):
    """The command line names something that cannot be used (exit status 2)."""


def submit(client: Client, args: argparse.Namespace) -> int:
    job_id = client.submit(read_json(args.pipeline, "pipeline"))["task_id"]
    return accepted(client, job_id, args)


def parse_hyperparameters(items: list[str]) -> dict[str, str]:
    """Turn ['epochs=5', 'learning-rate=0.01'] into {'epochs': '5', 'learning-rate': '0.01'}."""
    pairs = {}
    for item in items:
        name, equals, value = item.partition("=")
        if not equals or not name.strip():
            raise UsageError(f"--hp {item!r}: write it as NAME=VALUE, e.g. --hp epochs=5")
        pairs[name.strip()] = value.strip()
    return pairs


def training_body(args: argparse.Namespace) -> dict[str, Any]:
    """Return the training fields of a train or tune command."""
    body: dict[str, Any] = {"name": args.name or args.dataset.rstrip("/").rsplit("/", 1)[-1] or "training",
                            "dataset": args.dataset, "hyperparameters": parse_hyperparameters(args.hp)}
    optional = {"metadata_file": args.metadata_file, "instance_type": args.instance_type,
                "instance_count": args.instance_count, "max_runtime_seconds": args.max_runtime,
                "entry_point": args.entry_point, "source_dir": args.source_dir, "spot": args.spot or None}
    body.update({key: value for key, value in optional.items() if value is not None})
    return body


def train(client: Client, args: argparse.Namespace) -> int:
    return accepted(client, client.train(training_body(args))["job_id"], args)


def parse_range(item: str) -> tuple[str, dict[str, Any]]:
    """Turn 'learning-rate=1e-4:1e-1:log' or 'batch-size=32,64,128' into a name and a range object."""
    name, equals, text = item.partition("=")
    if not equals or not name.strip() or not text.strip():
        raise UsageError(f"--range {item!r}: write it as NAME=MIN:MAX[:log] or NAME=V1,V2,...")
    if ":" in text:
        parts = text.split(":")
        if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("log", "linear")):
            raise UsageError(f"--range {item!r}: a range is MIN:MAX, or MIN:MAX:log")
        low, high = (_number(part, item) for part in parts[:2])
        return name.strip(), {"min": low, "max": high, "scaling": parts[2] if len(parts) == 3 else "linear"}
    return name.strip(), {"values": [_value(part.strip()) for part in text.split(",")]}


def _number(text: str, item: str) -> int | float:
    value = _value(text.strip())
    if isinstance(value, str):
        raise UsageError(f"--range {item!r}: {text!r} is not a number")
    return value


def _value(text: str) -> int | float | str:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def tune(client: Client, args: argparse.Namespace) -> int:
    body = training_body(args)
    body["tuning"] = {"objective": {"metric": args.objective, "goal": args.goal},
                      "ranges": dict(parse_range(item) for item in args.ranges), "strategy": args.strategy,
                      "max_trials": args.max_trials, "max_parallel": args.parallel,
                      "early_stopping": args.early_stopping}
    if args.seed is not None:
        body["tuning"]["seed"] = args.seed
    job_id = client.tune(body)["job_id"]
    if not args.wait:
        print(job_id)
        return 0
    print(f"submitted tuning {job_id}", file=sys.stderr)
    outcome = follow(client, job_id, args.interval, show_log=not args.no_log)
    best = client.status(job_id).get("best")
    if best:
        print(f"best trial {best['number']} (job {best['job_id']}): {args.objective}={format_value(best['objective'])}",
              file=sys.stderr)
        for name, value in best["hyperparameters"].items():
            print(f"  {name} = {value}")
        print("to train with them again:")
        print("  " + train_command(args, best["hyperparameters"]))
    return outcome


def train_command(args: argparse.Namespace, tuned: dict[str, Any]) -> str:
    """Return the `train` command line, quoted for a shell, that trains with a tuning's fixed and best values."""
    # The installed command (pyproject.toml's [project.scripts]): it runs from any folder, as pasted.
    command = ["executor-client", "train", args.dataset]
    hyperparameters = {**parse_hyperparameters(args.hp), **{name: str(value) for name, value in tuned.items()}}
    command += [item for name, value in hyperparameters.items() for item in ("--hp", f"{name}={value}")]
    for flag, value in (("--name", args.name), ("--metadata-file", args.metadata_file),
                        ("--instance-type", args.instance_type), ("--entry-point", args.entry_point),
                        ("--source-dir", args.source_dir)):
        if value:
            command += [flag, value]
    return shlex.join(command)


def rerun(client: Client, args: argparse.Namespace) -> int:
    secrets = read_json(args.secrets, "secrets file") if args.secrets else None
    answer = client.rerun(args.job_id, secrets)
    if args.wait:
        print(f"rerun of {answer['rerun_of']}", file=sys.stderr)
    return accepted(client, answer["job_id"], args)


def accepted(client: Client, job_id: str, args: argparse.Namespace) -> int:
    """Print the new job's id, or follow it to its end with --wait."""
    if not args.wait:
        print(job_id)
        return 0
    print(f"submitted job {job_id}", file=sys.stderr)
    return follow(Reconnecting(client, args.reconnect_for), job_id, args.interval, show_log=not args.no_log)


def wait(client: Client, args: argparse.Namespace) -> int:
    return follow(Reconnecting(client, args.reconnect_for), args.job_id, args.interval, show_log=not args.no_log)


class Reconnecting:
    """The reads of a followed job, retried with backoff while the executor cannot be reached (a restart)."""

    def __init__(self, client: Client, patience: float, err: TextIO = sys.stderr, sleep: Any = time.sleep,
                 clock: Any = time.monotonic):
        self.client, self.patience = client, patience
        self.err, self.sleep, self.clock = err, sleep, clock

    def status(self, job_id: str) -> dict[str, Any]:
        return self._retried(self.client.status, job_id)

    def log(self, job_id: str) -> str:
        return self._retried(self.client.log, job_id)

    def job(self, job_id: str) -> dict[str, Any]:
        return self._retried(self.client.job, job_id)

    def _retried(self, read: Any, job_id: str) -> Any:
        try:
            return read(job_id)
        except ExecutorError as exc:
            if exc.status is not None:
                raise
            first = exc
        print(f"\nthe executor at {self.client.url} is unreachable ({first}); job {job_id[:8]} is kept in its "
              f"store: trying again for up to {self.patience:.0f} s", file=self.err, flush=True)
        deadline, pause = self.clock() + self.patience, 1.0
        while self.clock() + pause <= deadline:
            self.sleep(pause)
            pause = min(pause * 2, MAX_RETRY_PAUSE)
            try:
                answer = read(job_id)
            except ExecutorError as exc:
                if exc.status is not None:
                    raise
                continue
            print(f"the executor is back: following job {job_id[:8]} again", file=self.err, flush=True)
            return answer
        raise ExecutorError(f"{first}; gave up after {self.patience:.0f} s (the job is kept: "
                            f"`wait {job_id[:8]}` follows it again)")


class ProgressLine:
    """The one-line progress display: redrawn in place on a terminal, else printed once per change."""

    def __init__(self, err: TextIO):
        self.err = err
        self.interactive = err.isatty()
        self.shown = ""

    def show(self, line: str) -> None:
        if self.interactive:
            self.err.write("\r\033[K" + line)
            self.err.flush()
        elif line != self.shown:
            print(line, file=self.err, flush=True)
        self.shown = line

    def clear(self) -> None:
        """Take the line off the terminal, so that other text starts on a clean line."""
        if self.interactive and self.shown:
            self.err.write("\r\033[K")
            self.err.flush()

    def redraw(self) -> None:
        if self.interactive and self.shown:
            self.err.write(self.shown)
            self.err.flush()

    def end(self) -> None:
        if self.interactive and self.shown:
            self.err.write("\n")


def follow(client: Client | Reconnecting, job_id: str, interval: float, show_log: bool = True,
           out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Show the job's progress (stderr) and log (stdout) until it ends; return its exit status."""
    printed = 0
    progress = ProgressLine(err)
    while True:
        job = client.status(job_id)
        job_id = job["job_id"]  # a prefix was resolved by the executor; ask by the whole id from now on
        if show_log:
            content = client.log(job_id)
            if len(content) != printed:
                progress.clear()
                printed = print_new_log(content, printed, out)
                progress.redraw()
        progress.show(progress_line(job))
        if job["status"] in FINAL:
            break
        time.sleep(interval)
    progress.end()
    if job.get("metrics"):
        print("final metrics: " + "  ".join(f"{name}={format_value(value)}" for name, value in job["metrics"].items()),
              file=err, flush=True)
    ending = f"job {job_id} {job['status']}"
    # The time it ran, as the dashboard counts it: a stop of the executor in between is not counted.
    ran = client.job(job_id).get("elapsed_seconds")
    if ran is not None:
        ending += f" after {ran:.1f} s"
    if job.get("failure_reason"):
        ending += f": {job['failure_reason']}"
    print(ending, file=err, flush=True)
    return EXIT_CODES[job["status"]]


def print_new_log(content: str, printed: int, out: TextIO) -> int:
    """Print the part of the log not printed yet; return how much of it is printed now."""
    if len(content) < printed:  # the server sent a shorter tail: start over from it
        printed = 0
    if len(content) > printed:
        out.write(content[printed:])
        out.flush()
    return len(content)


def format_value(value: Any) -> str:
    """Show a number with 4 significant digits, anything else as it is."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def progress_line(job: dict[str, Any]) -> str:
    """Return '[#####.....]  50% epoch 3/6  Training  train_loss=0.333' for a status body."""
    progress = job.get("progress") or {}
    if job.get("kind") == "tuning":
        return tuning_line(job)
    percent = progress.get("percent")
    filled = round(BAR_WIDTH * percent / 100) if isinstance(percent, (int, float)) else 0
    shown = f"{percent:5.1f}%" if isinstance(percent, (int, float)) else "    -%"
    parts = [f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {shown}"]
    if progress.get("epochs"):
        parts.append(f"epoch {progress.get('epoch')}/{progress['epochs']}")
    parts.append(f"{job['status']} / {job.get('phase')}")
    metrics = job.get("metrics") or {}
    parts.extend(f"{name}={value:.4g}" for name, value in sorted(metrics.items()) if value is not None)
    return "  ".join(parts)


def tuning_line(job: dict[str, Any]) -> str:
    """Return 'trials 3/12 done, 2 running  best val_auc=0.9512 (trial 2)  RUNNING / Tuning' for a tuning."""
    progress = job.get("progress") or {}
    line = f"trials {progress.get('done', 0)}/{progress.get('total', '?')} done, {progress.get('running', 0)} running"
    best = job.get("best")
    metric = (job.get("objective") or {}).get("metric", "objective")
    if best:
        line += f"  best {metric}={format_value(best['objective'])} (trial {best['number']})"
    return f"{line}  {job['status']} / {job.get('phase')}"


def list_jobs(client: Client, args: argparse.Namespace) -> int:
    jobs = client.jobs(status=args.status, kind=args.kind, limit=args.limit, name=args.name)
    rows = [("ID", "NAME", "KIND", "STATUS", "PHASE", "PROGRESS", "SUBMITTED")]
    for job in jobs:
        percent = job.get("percent")
        rows.append((job["id"], str(job.get("name") or ""), job["kind"], job["status"], job["phase"],
                     "-" if percent is None else f"{percent:.0f}%", (job.get("submitted") or "")[:19]))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return 0


def show_status(client: Client, args: argparse.Namespace) -> int:
    job = client.status(args.job_id)
    if args.json:
        print(json.dumps(job, indent=2))
        return 0
    detail = client.job(job["job_id"])
    print(f"job       {job['job_id']} ({job['kind']} on {job['backend']})")
    print(f"name      {job.get('name')}")
    print(f"status    {job['status']}  phase {job['phase']}")
    print(f"progress  {progress_line(job)}")
    for key in ("submitted", "started", "finished", "failure_reason"):
        if job.get(key):
            print(f"{key:<9} {job[key]}")
    if detail.get("eta_seconds") is not None:
        print(f"eta       {detail['eta_seconds']:.0f} s")
    for key, value in (detail.get("request") or {}).items():
        print(f"{key:<9} {json.dumps(value) if isinstance(value, (dict, list)) else value}")
    files = detail.get("files") or []
    for item in files:
        print(f"file      {item['path']}  ({item['size']} bytes)")
    if detail.get("files_truncated"):
        print(f"files     only the first {len(files)} are shown; the job wrote more")
    return 0


def show_logs(client: Client, args: argparse.Namespace) -> int:
    if not args.follow:
        sys.stdout.write(client.log(args.job_id))
        return 0
    printed = 0
    while True:
        status = client.status(args.job_id)["status"]
        printed = print_new_log(client.log(args.job_id), printed, sys.stdout)
        if status in FINAL:
            return 0
        time.sleep(args.interval)


def compare(client: Client, args: argparse.Namespace) -> int:
    jobs = [client.job(job_id) for job_id in args.job_ids]
    header = ["", *(job["job_id"][:8] for job in jobs)]
    rows = [["name", *(str(job.get("name") or "") for job in jobs)],
            ["status", *(job["status"] for job in jobs)]]
    for section, values_of in (("", lambda job: job.get("metrics") or {}),
                               ("hp.", lambda job: (job.get("request") or {}).get("hyperparameters") or {})):
        names = sorted({name for job in jobs for name in values_of(job)})
        rows.extend([section + name, *(format_value(values_of(job).get(name)) for job in jobs)] for name in names)
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    print("  " + "  ".join(cell.ljust(width) for cell, width in zip(header, widths)).rstrip())
    for row in rows:
        # A mark where the runs differ, as the dashboard highlights it.
        mark = "*" if len(set(row[1:])) > 1 else " "
        print(mark + " " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return 0


def download(client: Client, args: argparse.Namespace) -> int:
    name = args.file.rsplit("/", 1)[-1] if args.file else "model.tar.gz"
    target = args.output or name
    if target != "-" and (os.path.isdir(target) or target.endswith(("/", os.sep))):
        if not os.path.isdir(target):
            raise UsageError(f"{target} is not a folder here; create it first")
        target = os.path.join(target, name)
    with client.download(args.job_id, args.file) as response:
        if target == "-":
            shutil.copyfileobj(response, sys.stdout.buffer)
            return 0
        if os.path.exists(target):
            raise UsageError(f"{target} exists; remove it or choose another name with --output")
        with open(target, "xb") as handle:
            shutil.copyfileobj(response, handle, 1 << 20)
    print(f"wrote {target} ({os.path.getsize(target)} bytes)", file=sys.stderr)
    return 0


def cancel(client: Client, args: argparse.Namespace) -> int:
    cancelled = client.cancel(args.job_id)
    print(f"job {args.job_id}: {'cancel requested' if cancelled else 'not cancelled (it had already ended)'}")
    return 0 if cancelled else 1


# What the model lifecycle's records say while their job is under way.
UNDER_WAY = frozenset({"Creating", "Updating", "InProgress", "Pending", "Stopping"})


def settled(read: Any, interval: float, patience: float) -> dict[str, Any]:
    """Poll a record until its status is no longer under way; raise ExecutorError after `patience` seconds."""
    deadline = time.monotonic() + patience
    while True:
        record = read()
        if record["status"] not in UNDER_WAY:
            return record
        if time.monotonic() > deadline:
            raise ExecutorError(f"{record['name']} is still {record['status']} after {patience:.0f} s")
        time.sleep(interval)


def register_model(client: Client, args: argparse.Namespace) -> int:
    record = client.register_model(args.name, args.job_id)
    training_job = json.loads(record.get("rawPayload") or "{}").get("TrainingJobId") or args.job_id
    print(f"model {record['name']} registered from training job {training_job} "
          f"({record['container'].get('ModelDataUrl', '')})")
    return 0


def deploy(client: Client, args: argparse.Namespace) -> int:
    client.deploy(args.model, args.endpoint, args.instance_type)
    print(f"deploying {args.model} as endpoint {args.endpoint}", file=sys.stderr)
    record = settled(lambda: client.endpoint(args.endpoint), args.interval, args.timeout_wait)
    reason = f": {record['failureReason']}" if record.get("failureReason") else ""
    print(f"endpoint {record['name']} {record['status']}{reason}")
    return 0 if record["status"] == "InService" else 1


def infer(client: Client, args: argparse.Namespace) -> int:
    if bool(args.images) == bool(args.json):
        raise UsageError("give image files or --json FILE (one of the two)")
    missing = [image for image in args.images if not os.path.isfile(image)]
    if missing:
        raise UsageError(f"no such file here: {', '.join(missing)}")
    payload = read_json(args.json, "payload") if args.json else None
    answer = client.infer(args.endpoint, args.images, payload, explain=args.command == "explain")
    print(json.dumps(answer, indent=2))
    return 0


def transform(client: Client, args: argparse.Namespace) -> int:
    client.transform(args.name, args.model, args.source)
    print(f"batch inference {args.name} started", file=sys.stderr)
    record = settled(lambda: client.transform_record(args.name), args.interval, args.timeout_wait)
    reason = f": {record['failureReason']}" if record.get("failureReason") else ""
    print(f"batch inference {record['name']} {record['status']}{reason}")
    output = (record.get("artifacts") or {}).get("output_dir") or (record.get("artifacts") or {}).get("output")
    if output:
        print(f"answers in {output}")
    return 0 if record["status"] == "Completed" else 1


def undeploy(client: Client, args: argparse.Namespace) -> int:
    print(client.undeploy(args.endpoint)["message"])
    return 0


def build_image(args: argparse.Namespace) -> int:
    """Build (and push) a training image with the executor's container builder; print its URI."""
    # Imported here: the other commands need only the standard library.
    from pathlib import Path

    from mlops.aws import ClientFactory
    from mlops.sagemaker.training_service import SageMakerContainerBuilder
    from mlops.errors import DockerContainerError, InvalidRequest

    builder = SageMakerContainerBuilder(ClientFactory(),
                                        context_dir=Path(args.context) if args.context else None)
    try:
        image = builder.build_training_container(args.base, args.tag)
        if args.push:
            image = builder.push_to_ecr(image, args.push)
    except InvalidRequest as exc:
        print(f"error: {exc}", file=sys.stderr)
        return USAGE
    except DockerContainerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return API_ERROR
    print(image)
    return 0


COMMANDS = {"train": train, "tune": tune, "submit": submit, "rerun": rerun, "wait": wait, "list": list_jobs,
            "status": show_status, "logs": show_logs, "cancel": cancel, "compare": compare, "download": download,
            "register-model": register_model, "deploy": deploy, "infer": infer, "explain": infer,
            "transform": transform, "undeploy": undeploy}

if __name__ == "__main__":
    sys.exit(main())
