"""The executor's command line: submit a pipeline and follow it, list, status, logs, cancel; build an image.

Exit status: 0 the job COMPLETED (or the command worked), 1 the job ended in ERROR, 2 usage,
3 the job was CANCELLED, 4 the executor refused the request or could not be reached, 130 interrupted.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, TextIO

from executor_client import Client, ExecutorError

EXIT_CODES = {"COMPLETED": 0, "ERROR": 1, "CANCELLED": 3}
USAGE, API_ERROR, INTERRUPTED = 2, 4, 130
FINAL = frozenset(EXIT_CODES)
BAR_WIDTH = 24
DEFAULT_URL = "http://127.0.0.1:5002"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m executor_client", description="Talk to an Essedum job executor.",
        epilog="Exit status: 0 COMPLETED, 1 ERROR, 2 usage, 3 CANCELLED, 4 request refused or server unreachable.")
    parser.add_argument("--url", default=os.environ.get("EXECUTOR_URL") or DEFAULT_URL,
                        help=f"the executor [EXECUTOR_URL, default {DEFAULT_URL}: the service's own default]")
    parser.add_argument("--token", default=os.environ.get("EXECUTOR_API_TOKEN"),
                        help="its API token [EXECUTOR_API_TOKEN]")
    parser.add_argument("--timeout", type=float, default=30, help="seconds to wait for each answer")
    commands = parser.add_subparsers(dest="command", required=True)

    submit = commands.add_parser("submit", help="submit a pipeline (a POST /execute body as JSON)")
    submit.add_argument("pipeline", help="JSON file with the pipeline, or - for standard input")
    submit.add_argument("--wait", action="store_true", help="follow the job to its end and exit with its outcome")
    wait = commands.add_parser("wait", help="follow a job to its end and exit with its outcome")
    wait.add_argument("job_id")
    for follower in (submit, wait):
        follower.add_argument("--interval", type=float, default=2.0, help="seconds between polls")
        follower.add_argument("--no-log", action="store_true", help="do not print the job's log")

    listing = commands.add_parser("list", help="list jobs, newest first")
    listing.add_argument("--status", choices=sorted(FINAL | {"WAITING", "RUNNING"}))
    listing.add_argument("--kind")
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
    build = commands.add_parser(
        "build-image", help="build a SageMaker training image on this machine with docker (no executor needed)",
        description="Build base image + the Python packages of CONTEXT/requirements.txt, leaving /opt/ml/code empty "
                    "so that SageMaker runs each job's submitted code; optionally push it to an ECR repository.")
    build.add_argument("--base", required=True, help="base image, e.g. AWS's PyTorch training image")
    build.add_argument("--tag", required=True, help="tag of the image to build, e.g. essedum/train:1")
    build.add_argument("--context", default=None, help="folder whose requirements.txt is installed "
                                                       "[default: the bundled training_scripts]")
    build.add_argument("--push", metavar="ECR_REPOSITORY_URI",
                       help="push to <account>.dkr.ecr.<region>.amazonaws.com/<repo>")
    build.add_argument("--region",
                       default=os.environ.get("EXECUTOR_AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"),
                       help="AWS region of the registries [EXECUTOR_AWS_REGION, AWS_DEFAULT_REGION]")

    args = parser.parse_args(argv)
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
    except ExecutorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return API_ERROR
    except KeyboardInterrupt:
        print("\ninterrupted (the job keeps running; `cancel` stops it)", file=sys.stderr)
        return INTERRUPTED


def submit(client: Client, args: argparse.Namespace) -> int:
    try:
        text = sys.stdin.read() if args.pipeline == "-" else open(args.pipeline, encoding="utf-8").read()
        pipeline = json.loads(text)
    except (OSError, ValueError) as exc:
        print(f"error: cannot read the pipeline {args.pipeline}: {exc}", file=sys.stderr)
        return USAGE
    job_id = client.submit(pipeline)["task_id"]
    if not args.wait:
        print(job_id)
        return 0
    print(f"submitted job {job_id}", file=sys.stderr)
    return follow(client, job_id, args.interval, show_log=not args.no_log)


def wait(client: Client, args: argparse.Namespace) -> int:
    return follow(client, args.job_id, args.interval, show_log=not args.no_log)


def follow(client: Client, job_id: str, interval: float, show_log: bool = True, out: TextIO = sys.stdout,
           err: TextIO = sys.stderr) -> int:
    """Show the job's progress (stderr) and log (stdout) until it ends; return its exit status."""
    printed = 0
    last_line = ""
    interactive = err.isatty()
    while True:
        job = client.status(job_id)
        if show_log:
            printed = print_new_log(client.log(job_id), printed, out)
        line = progress_line(job)
        if interactive:
            err.write("\r\033[K" + line)
            err.flush()
        elif line != last_line:
            print(line, file=err, flush=True)
        last_line = line
        if job["status"] in FINAL:
            break
        time.sleep(interval)
    if interactive:
        err.write("\n")
    ending = f"job {job_id} {job['status']}"
    if job.get("timestamp") is not None:
        ending += f" after {job['timestamp']:.1f} s"
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


def progress_line(job: dict[str, Any]) -> str:
    """Return '[#####.....]  50% epoch 3/6  Training  train_loss=0.333' for a status body."""
    progress = job.get("progress") or {}
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


def list_jobs(client: Client, args: argparse.Namespace) -> int:
    jobs = client.jobs(status=args.status, kind=args.kind, limit=args.limit)
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
    print(f"job       {job['job_id']} ({job['kind']} on {job['backend']})")
    print(f"name      {job.get('name')}")
    print(f"status    {job['status']}  phase {job['phase']}")
    print(f"progress  {progress_line(job)}")
    for key in ("submitted", "started", "finished", "failure_reason"):
        if job.get(key):
            print(f"{key:<9} {job[key]}")
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


def cancel(client: Client, args: argparse.Namespace) -> int:
    cancelled = client.cancel(args.job_id)
    print(f"job {args.job_id}: {'cancel requested' if cancelled else 'not cancelled (it had already ended)'}")
    return 0 if cancelled else 1


def build_image(args: argparse.Namespace) -> int:
    """Build (and push) a training image with the executor's container builder; print its URI."""
    # Imported here: the other commands need only the standard library.
    from pathlib import Path

    from mlops.aws import ClientFactory, SageMakerContainerBuilder
    from mlops.errors import DockerContainerError, InvalidRequest

    builder = SageMakerContainerBuilder(ClientFactory(region=args.region),
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


COMMANDS = {"submit": submit, "wait": wait, "list": list_jobs, "status": show_status, "logs": show_logs,
            "cancel": cancel}

if __name__ == "__main__":
    sys.exit(main())
