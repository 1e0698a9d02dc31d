"""Training and pipeline jobs on this machine: each runs under the SageMaker training-container contract.

A job folder mirrors /opt/ml (input/data/<channel>, input/config/*.json, model/, output/,
checkpoints/), the process gets the SM_* environment and its hyperparameters as `--name value`
flags, so a script that runs here runs unchanged in the AWS PyTorch container.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import stat
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Collection, cast

from config import Config
from db import StoreError
from job import PIPELINE, TRAINING, TUNING, Job, JobStatus
from job_secrets import BOUND_TO
from mlops import script_contract
from mlops import tuning as tuning_domain
from mlops.aws import ClientFactory
from mlops.errors import BackendError, InvalidRequest
from mlops.job_files import read_bounded, remove_tree, tree_digest
from mlops.job_requests import JobRequest, PipelineRequest, TrainingRequest
from mlops.local.artifacts import list_outputs, read_outputs, redact_outputs
from mlops.local.output import OutputFollower
from mlops.local.tuning import check_local
from mlops.local.limits import LimitWatch, confinement_for
from mlops.local.processes import PRIVATE_UMASK, STOP_GRACE_S, JobProcess, run_to_end, sweep_orphans
from mlops.platform import Ran, Stop
from mlops.reporter import JobReporter
from mlops.sandbox import Sandbox, sandbox_for
from mlops.staging import (check_pipeline_inputs, check_training_inputs, parse_command, pipeline_storage_client,
                           publish_outputs, remote_log_uri, stage_dataset, stage_folder, stage_pipeline_files)

logger = logging.getLogger(__name__)

CHANNEL = "training"
CURRENT_HOST = "algo-1"
FAILURE_TEXT_LIMIT = 4000
TAIL_TEXT_CHARS = 3000
# A post-run step's failure after the job's end was decided is added to its reason, cut to this.
LATER_FAILURE_CHARS = 500
INSTALL_TIMEOUT_S = 3600
# Only these variables of the executor's own environment reach a job: the rest (AWS keys, the API
# token, the secret key) must not.
INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "SYSTEMROOT", "SYSTEMDRIVE", "WINDIR", "TMP",
                 "TEMP", "TMPDIR", "PATHEXT", "COMSPEC", "USERPROFILE", "APPDATA", "LOCALAPPDATA")
# In the sandbox the executor's home and temporary folders are not there: the sandbox's own /tmp is.
SANDBOX_ENV = {"HOME": "/tmp", "TMPDIR": "/tmp"}
IS_WINDOWS = os.name == "nt"


class ContainerLayout:
    """The /opt/ml folder tree of one job, inside the job's folder."""

    def __init__(self, root: Path):
        self.root = root
        self.code = root / "code"
        self.input = root / "input"
        self.config = self.input / "config"
        self.channel = self.input / "data" / CHANNEL
        self.model = root / "model"
        self.output = root / "output"
        self.output_data = self.output / "data"
        self.checkpoints = root / "checkpoints"
        self.failure = self.output / "failure"
        # The job's /tmp: on disk, in its folder, counted in its disk use.
        self.tmp = root / "tmp"

    def create(self) -> None:
        """Make the tree afresh: a retried job starts from what the executor stages, never from what
        its last attempt left (links to the executor's files among them); only checkpoints carry over."""
        for leftover in (self.code, self.input, self.model, self.output, self.tmp):
            remove_tree(leftover)
        if self.checkpoints.is_symlink() or (self.checkpoints.exists() and not self.checkpoints.is_dir()):
            remove_tree(self.checkpoints)
        for folder in (self.code, self.config, self.channel, self.model, self.output_data, self.checkpoints,
                       self.tmp):
            folder.mkdir(parents=True, exist_ok=True)

    def writable(self) -> list[Path]:
        """Return the folders the job may write: the container's, not the job folder itself (its log)."""
        return [self.code, self.input, self.model, self.output, self.checkpoints]


@dataclass(frozen=True)
class ProcessEnd:
    """How a job's process ended: what the executor needs to decide the job's end."""

    returncode: int
    #: Why the executor stopped it (cancelled, MaxRuntimeExceeded, shutdown), if it did.
    stop_reason: str | None
    #: Why its log or the store could not be written while it ran: the first failure decides its end.
    output_failure: str | None
    #: Its last lines that are neither blank nor metric lines, secrets redacted.
    tail: list[str]
    #: The limit it was stopped at (memory, disk), if it reached one.
    limit_reached: str | None = None


@dataclass(frozen=True)
class JobEnd:
    """The end a job's process decided, before the steps that record its outputs run."""

    status: JobStatus
    failure_reason: str | None = None
    message: str | None = None


class LocalJobs:
    """Runs training and pipeline jobs as child processes of the executor."""

    # Tunings are checked here and driven by the queue's tuner (mlops.local.tuning); their trials run here.
    kinds = frozenset({PIPELINE, TRAINING, TUNING})

    def __init__(self, config: Config, clients: ClientFactory, *, clock: Callable[[], float] = time.time):
        self.config = config
        self.clients = clients
        self.clock = clock
        self.python = config.python or sys.executable
        self.venv_root = config.data_dir / "venvs"
        self.sandbox = sandbox_for(config)
        self.confinement = confinement_for(config)
        self._processes: dict[str, JobProcess] = {}
        self._stop_reasons: dict[str, str] = {}
        self._lock = threading.Lock()
        self._venv_locks: dict[str, threading.Lock] = {}
        self._stopping = threading.Event()
        self._cores = _usable_cores()
        self._running_jobs = 0

    # -- submission ------------------------------------------------------------------------------

    def check(self, kind: str, request: JobRequest, secrets: dict[str, Any]) -> JobRequest:
        """Validate a pipeline or training request and return it normalised."""
        if isinstance(request, PipelineRequest):
            return self._check_pipeline(request, secrets)
        if not isinstance(request, TrainingRequest):
            raise TypeError(f"a {kind} job takes a training request, not {type(request).__name__}")
        if kind == TUNING:
            return self._check_tuning(request)
        return self._check_training(request)

    def _check_pipeline(self, request: PipelineRequest, secrets: dict[str, Any]) -> PipelineRequest:
        check_pipeline_inputs(request, secrets, self.config)
        return request

    def _check_training(self, training: TrainingRequest) -> TrainingRequest:
        check_training_inputs(training, self.config)
        source_dir = Path(training.source_dir)
        description = script_contract.describe(source_dir, training.entry_point, self.sandbox, self.python)
        hyperparameters = script_contract.check_hyperparameters(dict(training.hyperparameters), description)
        return training.with_changes(hyperparameters=hyperparameters)

    def _check_tuning(self, request: TrainingRequest) -> TrainingRequest:
        training = self._check_training(request)
        description = script_contract.describe(Path(training.source_dir), training.entry_point, self.sandbox,
                                               self.python)
        tuning = tuning_domain.check_tuning(training.search(), training.hyperparameters, description)
        check_local(tuning, self.config.data_dir)
        return training.with_changes(tuning=tuning)

    # -- running ---------------------------------------------------------------------------------

    def run(self, ctx: JobReporter) -> Ran:
        """Run a job's process to its end and record how it ended."""
        with self._lock:
            self._running_jobs += 1
        # A uid of its own while it runs (root only): no other job can signal it or read its files.
        uid = self.confinement.uids.lease() if self.sandbox.identity is not None else None
        try:
            self._run_job(ctx, self.sandbox.as_user(uid))
        finally:
            self.confinement.uids.release(uid)
            with self._lock:
                self._running_jobs -= 1
        return Ran.ENDED

    def _run_job(self, ctx: JobReporter, sandbox: Sandbox) -> None:
        layout = ContainerLayout(ctx.job_dir)
        layout.create()
        request = ctx.request
        ctx.set_phase("Downloading", "staging inputs")
        if isinstance(request, PipelineRequest):
            stage_pipeline_files(request, ctx.secrets, layout.code, self.config, self.clients)
            self._bind_secrets_to_staged_files(ctx, layout)
            argv = parse_command(request.command)
            argv_tail = [argv[1], *script_contract.pipeline_arguments(argv[2:])]
            hyperparameters: dict[str, str] = {}
            environment = dict(ctx.secrets.get("environment") or {})
        else:
            training = cast(TrainingRequest, request)
            stage_folder(Path(training.source_dir), layout.code, self.config, "source_dir")
            placed = stage_dataset(training.dataset, layout.channel, self.config, self.clients, self._may_link)
            ctx.log(f"[executor] dataset staged read-only ({placed})")
            hyperparameters = dict(training.hyperparameters)
            declared = script_contract.describe(Path(training.source_dir), training.entry_point, self.sandbox,
                                                  self.python) or {}
            if "checkpoint-dir" in declared.get("hyperparameters", {}):
                hyperparameters.setdefault("checkpoint-dir", str(layout.checkpoints))
            if training.metadata_file:
                hyperparameters.setdefault("metadata-file", training.metadata_file)
            argv_tail = [training.entry_point, *script_contract.script_flags(hyperparameters)]
            environment = {}
        self._write_config(layout, hyperparameters)
        # Everything the executor puts in the job's folders is written by now: the job (and its
        # requirements install) may read and change it as the sandbox's identity.
        for folder in (*layout.writable(), layout.tmp):
            sandbox.hand_over(folder)
        python = self._python_for(ctx, sandbox, layout)
        env = self._environment(layout, hyperparameters, argv_tail[0], environment)
        asked = request.max_runtime_seconds if isinstance(request, TrainingRequest) else None
        max_runtime = int(asked or self.config.max_runtime_seconds)
        ctx.set_phase("Training", f"running {' '.join(argv_tail[:1])}")
        readable = [Path(python).parent.parent] if python != self.python else []
        process_end = self._run_process(ctx, sandbox, [python, *argv_tail], layout, env, max_runtime, readable)
        end = self._decide_end(ctx, layout, process_end, max_runtime)
        if end is not None:
            # Before anything else: an executor killed from here on must not leave the job to run again.
            self._write_end(ctx.job, end)
        # An executor whose lease lapsed while the process ran leaves the folder to the job's new owner.
        ctx.ensure_held()
        # Scratch: what the job left in /tmp is not one of its outputs.
        remove_tree(layout.tmp)
        self._end(ctx, end, self._record_outputs(ctx, layout))

    def _end_path(self, job_id: str) -> Path:
        # In the data folder, beside the job folders: no job can write there.
        return self.config.data_dir / "ends" / f"{job_id}.json"

    def _write_end(self, job: Job, end: JobEnd) -> None:
        """Record, durably and at once, how this attempt's process ended: a takeover records that end."""
        path = self._end_path(job.id)
        record = {"attempt": job.attempts, "status": end.status.value, "failure_reason": end.failure_reason,
                  "message": end.message}
        staging = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(staging, "w", encoding="utf-8") as handle:
                json.dump(record, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(staging, path)
        except OSError as exc:
            # The record only spares a takeover a second run; a full disk must not replace the end the
            # process decided (its exit, a limit, a log that had no room) with this write's error.
            logger.warning("job %s: its end cannot be recorded ahead of the store (%s); an executor taking it "
                           "over before the store has it would run it again", job.id, exc)
            staging.unlink(missing_ok=True)

    def _written_end(self, job: Job) -> JobEnd | None:
        """Return the end written for the job's current attempt, if its process ended."""
        try:
            record = json.loads(self._end_path(job.id).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            logger.warning("job %s: its written end cannot be read (%s)", job.id, exc)
            return None
        if record.get("attempt") != job.attempts:
            return None  # an earlier attempt's, whose end was decided since
        return JobEnd(JobStatus(record["status"]), record.get("failure_reason"), record.get("message"))

    def _forget_end(self, job_id: str) -> None:
        try:
            self._end_path(job_id).unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            logger.warning("job %s: its written end cannot be removed (%s)", job_id, exc)

    def finish_ended(self, ctx: JobReporter) -> bool:
        """End a taken-over job whose process had ended, as that process decided; False when it had not."""
        end = self._written_end(ctx.job)
        if end is None:
            return False
        logger.info("job %s: its process ended before its lost executor stored the end; storing it", ctx.job_id)
        ctx.log("[executor] the job's script had ended when its executor was lost: its end is recorded, "
                "the script is not run again")
        self._end(ctx, end, self._record_outputs(ctx, ContainerLayout(ctx.job_dir)))
        return True

    def _may_link(self, info: os.stat_result) -> bool:
        """Say whether a dataset file may be hard-linked into a job's channel rather than copied.

        A link is the dataset's own inode: only a job that cannot write it may be given one (bubblewrap
        binds the channel read-only), and only one that can read it as it is (its uid, if it has one of
        its own, reads files others may read)."""
        if not self.sandbox.isolating:
            return False
        return self.sandbox.identity is None or bool(info.st_mode & stat.S_IROTH)

    def _bind_secrets_to_staged_files(self, ctx: JobReporter, layout: ContainerLayout) -> None:
        """Record the digest of the files a job with secrets staged; refuse to run secrets bound to other files."""
        if not ctx.secrets:
            return
        staged = tree_digest(layout.root, layout.code.name)
        bound = ctx.secrets.get(BOUND_TO)
        if bound is not None and bound != staged:
            names = " and ".join(sorted(name for name, value in ctx.secrets.items() if value and name != BOUND_TO))
            raise BackendError(f"the pipeline's files changed since the job it reruns ran them: the {names} it "
                               "inherited are handed only to those files, and nothing ran; rerun it with them "
                               "sent anew")
        if "staged_sha256" not in ctx.job.details:
            ctx.merge_details(staged_sha256=staged)

    def _run_process(self, ctx: JobReporter, sandbox: Sandbox, argv: list[str], layout: ContainerLayout,
                     env: dict[str, str], max_runtime: int, readable: list[Path]) -> ProcessEnd:
        if self._stopping.is_set():
            raise BackendError("executor is stopping")
        process = JobProcess(sandbox, argv, cwd=layout.code, env=env, marker=ctx.job_id,
                             max_line_bytes=self.config.max_log_line_bytes, writable=layout.writable(),
                             read_only=[layout.channel],
                             readable=readable, confinement=self.confinement, tmp=layout.tmp, umask=PRIVATE_UMASK)
        with self._lock:
            self._processes[ctx.job_id] = process
        timer = threading.Timer(max_runtime, self._stop_process, args=(ctx.job_id, "MaxRuntimeExceeded"))
        timer.daemon = True
        watch = None
        try:
            assert process.enclosure is not None
            watch = LimitWatch(process.enclosure, layout.root,
                               lambda _reached: self._stop_process(ctx.job_id, "limit", grace=0),
                               placed=[layout.channel])
            ctx.set_pid(process.pid)
            timer.start()
            if ctx.cancel_requested():
                self._stop_process(ctx.job_id, "cancelled")
            follower = OutputFollower(ctx)
            follower.follow(process.lines())
            returncode = process.wait()
        finally:
            timer.cancel()
            limit_reached = watch.close() if watch is not None else None
            # Also where following the job failed before its end was waited for: its cgroup goes with it.
            process.close()
            # A stop reason is recorded only while the process is listed: none outlives this.
            with self._lock:
                self._processes.pop(ctx.job_id, None)
                stop_reason = self._stop_reasons.pop(ctx.job_id, None)
        return ProcessEnd(returncode, stop_reason, follower.failure, list(follower.tail), limit_reached)

    def _decide_end(self, ctx: JobReporter, layout: ContainerLayout, process_end: ProcessEnd,
                    max_runtime: int) -> JobEnd | None:
        """Return the end the job's process decided; None when the executor's shutdown stopped it."""
        if process_end.stop_reason == "cancelled" or ctx.cancel_requested():
            return JobEnd(JobStatus.CANCELLED, message="stopped at the user's request")
        if process_end.stop_reason == "shutdown":
            return None
        if process_end.limit_reached:
            return JobEnd(JobStatus.ERROR, process_end.limit_reached)
        if process_end.output_failure:
            return JobEnd(JobStatus.ERROR, process_end.output_failure)
        if process_end.stop_reason == "MaxRuntimeExceeded":
            return JobEnd(JobStatus.ERROR,
                          f"MaxRuntimeExceeded: the job ran longer than {max_runtime} s and was stopped")
        if process_end.returncode != 0:
            return JobEnd(JobStatus.ERROR, self._failure_reason(layout, process_end.returncode, process_end.tail))
        return JobEnd(JobStatus.COMPLETED)

    def _record_outputs(self, ctx: JobReporter, layout: ContainerLayout) -> str | None:
        """Record, redact and publish the job's outputs; return why a step failed, or None."""
        step = "recording the job's outputs"
        try:
            ctx.set_artifacts(list_outputs(layout.root))
            step = "redacting secrets from the job's outputs"
            redact_outputs(layout.root, ctx.job.artifacts["files"], ctx.redact)
            if isinstance(ctx.request, PipelineRequest) and remote_log_uri(ctx.request):
                step = "publishing the job's log and outputs"
                self._publish(ctx, layout)
        except (StoreError, OSError) as exc:
            return f"{step} failed: {str(exc)[:LATER_FAILURE_CHARS]}"
        return None

    def _end(self, ctx: JobReporter, end: JobEnd | None, later_failure: str | None) -> None:
        """End the job as its process decided, with the failure of a step after it, if any."""
        if end is None:
            if later_failure:
                logger.warning("job %s: stopped by the executor's shutdown; then: %s", ctx.job_id,
                               ctx.redact(later_failure))
            raise InterruptedError("executor stopped while the job was running")
        then = f"; then: {later_failure}" if later_failure else ""
        if later_failure and end.status is not JobStatus.CANCELLED:
            # The job ends ERROR (a completed one for the failed step); the queue holds this reason,
            # not the store's, until the store takes it.
            raise BackendError(f"{end.failure_reason}{then}" if end.failure_reason else later_failure)
        decided = f"{end.message}{then}" if end.status is JobStatus.CANCELLED else end.failure_reason
        try:
            if end.status is JobStatus.CANCELLED:
                ctx.finish(JobStatus.CANCELLED, message=ctx.redact(decided))
            else:
                ctx.finish(end.status, decided)
            self._forget_end(ctx.job_id)
        except StoreError as exc:
            if decided is None:  # a completed job: the store's failure is all there is to say
                raise
            # As above: the queue holds the decided reason until the store takes the job's end (a
            # stopped job's then ends CANCELLED: the store keeps every stop answered so).
            raise BackendError(decided) from exc

    def _publish(self, ctx: JobReporter, layout: ContainerLayout) -> None:
        """Upload the log and outputs where Essedum reads them; a failed upload is recorded, not hidden."""
        try:
            request = cast(PipelineRequest, ctx.request)
            client = pipeline_storage_client(request, ctx.secrets, self.config, self.clients)
            ctx.log(f"[executor] publishing the log and outputs to {remote_log_uri(request)}")
            count = publish_outputs(client, request, ctx.log_path, [layout.model, layout.output_data])
            ctx.merge_details(published_files=count)
        except (BackendError, InvalidRequest) as exc:
            logger.warning("job %s: %s", ctx.job_id, ctx.redact(str(exc)))
            ctx.merge_details(publish_error=ctx.redact(str(exc)))

    def _failure_reason(self, layout: ContainerLayout, returncode: int, tail: list[str]) -> str:
        """Say why the script failed: its own output/failure file, else the exit code and its last lines."""
        try:
            data, _size = read_bounded(layout.root, layout.failure.relative_to(layout.root), FAILURE_TEXT_LIMIT)
            written = data.decode("utf-8", errors="replace").strip()
        except OSError:  # none written, or not a regular file
            written = ""
        if returncode < 0:
            exit_text = f"killed by signal {-returncode}"
        else:
            exit_text = f"exit code {returncode}"
        if written:
            return f"{written} ({exit_text})"
        if not tail:
            return f"the script failed with {exit_text}"
        # The end of its output holds the cause (a traceback ends with its exception); already redacted.
        cause = "\n".join(tail)[-TAIL_TEXT_CHARS:]
        return f"the script failed with {exit_text}; its last lines:\n{cause}"

    # -- the container contract ------------------------------------------------------------------

    def _write_config(self, layout: ContainerLayout, hyperparameters: dict[str, str]) -> None:
        files = {
            "hyperparameters.json": hyperparameters,
            "resourceconfig.json": {"current_host": CURRENT_HOST, "hosts": [CURRENT_HOST],
                                    "network_interface_name": "lo"},
            "inputdataconfig.json": {CHANNEL: {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated",
                                               "RecordWrapperType": "None"}},
        }
        for name, content in files.items():
            (layout.config / name).write_text(json.dumps(content, indent=2), encoding="utf-8")

    def _environment(self, layout: ContainerLayout, hyperparameters: dict[str, str], entry_point: str,
                     user_environment: dict[str, str]) -> dict[str, str]:
        env = self._base_environment(layout.tmp)
        # Every torch or numpy process would start a thread per core; jobs running together would
        # then fight over the cores and finish later than one after another. A job's own setting wins.
        cores = self._core_share()
        env["OMP_NUM_THREADS"] = str(cores)
        env.update(user_environment)
        sm = {
            "SM_MODEL_DIR": str(layout.model),
            "SM_CHANNELS": json.dumps([CHANNEL]),
            f"SM_CHANNEL_{CHANNEL.upper()}": str(layout.channel),
            "SM_HPS": json.dumps(hyperparameters),
            "SM_OUTPUT_DIR": str(layout.output),
            "SM_OUTPUT_DATA_DIR": str(layout.output_data),
            "SM_INPUT_DIR": str(layout.input),
            "SM_INPUT_CONFIG_DIR": str(layout.config),
            "SM_CHECKPOINT_DIR": str(layout.checkpoints),
            "SM_NUM_GPUS": str(_gpu_count()),
            "SM_NUM_CPUS": str(cores),
            "SM_HOSTS": json.dumps([CURRENT_HOST]),
            "SM_CURRENT_HOST": CURRENT_HOST,
            "SM_USER_ENTRY_POINT": entry_point,
            "SM_MODULE_DIR": str(layout.code),
        }
        for name, value in hyperparameters.items():
            sm["SM_HP_" + "".join(ch if ch.isalnum() else "_" for ch in name).upper()] = value
        sm["SM_TRAINING_ENV"] = json.dumps({key[3:].lower(): value for key, value in sm.items()})
        env.update(sm)
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        return env

    def _core_share(self) -> int:
        """Return the cores a job starting now may use: this machine's cores shared by the jobs running."""
        with self._lock:
            return max(1, self._cores // max(1, self._running_jobs))

    def _base_environment(self, tmp: Path) -> dict[str, str]:
        env = {key: os.environ[key] for key in INHERITED_ENV if key in os.environ}
        if self.sandbox.isolating:
            return {key: value for key, value in env.items() if key not in ("TMP", "TEMP")} | SANDBOX_ENV
        # Bare, the job's temporary files still go to its own folder, where its disk use counts them.
        return env | {"TMPDIR": str(tmp), "TMP": str(tmp), "TEMP": str(tmp)}

    def _python_for(self, ctx: JobReporter, sandbox: Sandbox, layout: ContainerLayout) -> str:
        """Return the interpreter for a job, installing its requirements.txt as the container would."""
        requirements = layout.code / "requirements.txt"
        if not requirements.is_file():
            return self.python
        digest = hashlib.sha256(requirements.read_bytes()).hexdigest()[:32]
        with self._lock:
            lock = self._venv_locks.setdefault(digest, threading.Lock())
        with lock:
            venv = self.venv_root / digest
            if not venv.is_dir():
                ctx.set_phase("Installing", "installing requirements.txt")
                self._build_venv(ctx, sandbox, venv, layout)
            else:
                ctx.log(f"[executor] using the cached environment for requirements.txt ({digest})")
        return str(_venv_python(venv))

    def _build_venv(self, ctx: JobReporter, sandbox: Sandbox, venv: Path, layout: ContainerLayout) -> None:
        staging = venv.with_name(f"{venv.name}.tmp-{uuid.uuid4().hex[:8]}")
        staging.mkdir(parents=True)
        sandbox.hand_over(staging)
        requirements = layout.code / "requirements.txt"
        try:
            # The executor's own packages stay visible, as the framework's are inside the container.
            self._installer(ctx, sandbox, [self.python, "-m", "venv", "--system-site-packages", str(staging)],
                            staging, layout)
            # Installing runs the packages' own build code: in the sandbox, like the job.
            self._installer(ctx, sandbox, [str(_venv_python(staging)), "-m", "pip", "install",
                                           "--disable-pip-version-check", "--no-input", "-r", str(requirements)],
                            staging, layout)
            os.replace(staging, venv)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _installer(self, ctx: JobReporter, sandbox: Sandbox, argv: list[str], staging: Path,
                   layout: ContainerLayout) -> None:
        code, output = run_to_end(sandbox, argv, cwd=layout.code, env=self._base_environment(layout.tmp),
                                  marker=ctx.job_id, max_line_bytes=self.config.max_log_line_bytes,
                                  writable=[staging], readable=[layout.code], timeout=INSTALL_TIMEOUT_S,
                                  confinement=self.confinement, tmp=layout.tmp)
        ctx.log(output)
        if code != 0:
            tail = output.strip().splitlines()[-5:]
            raise BackendError("installing requirements.txt failed: " + " | ".join(tail))

    # -- stopping --------------------------------------------------------------------------------

    def cancel(self, job: Job) -> Stop:
        """Stop the job's process; one not started yet sees the stop flag before it starts."""
        return Stop.STOPPED if self._stop_process(job.id, "cancelled") else Stop.REQUESTED

    def let_go(self, job_id: str) -> None:
        """Stop the job's process as a shutdown does, writing no end: another executor takes the job over."""
        self._stop_process(job_id, "shutdown")

    def _stop_process(self, job_id: str, reason: str, grace: float = STOP_GRACE_S) -> bool:
        with self._lock:
            process = self._processes.get(job_id)
            if process is None:
                return False
            self._stop_reasons.setdefault(job_id, reason)
        threading.Thread(target=process.stop, args=(grace,), name=f"stop-{job_id[:8]}", daemon=True).start()
        return True

    def resumable(self, job: Job) -> bool:
        """True for a tuning (its study is kept), training with the bundled script, or one with checkpoints to resume."""
        if job.kind == TUNING:
            return True
        if job.kind != TRAINING:
            return False
        training = TrainingRequest.from_stored(job.request)
        if script_contract.is_bundled(Path(training.source_dir), training.entry_point):
            return True
        checkpoints = ContainerLayout(Path(job.output_dir)).checkpoints
        return checkpoints.is_dir() and any(checkpoints.iterdir())

    def clean_up_abandoned(self, job: Job) -> None:
        """Kill the processes a killed executor left running for this job, and remove their cgroups."""
        # In the sandbox they died with the executor; bare, they may still run.
        sweep_orphans(job.id)
        # Sharing a store, no executor sweeps the data folder's cgroups at start (a live neighbour's are
        # among them): those of the job it takes over go here. Alone, the start-up sweep took them already.
        self.confinement.remove_cgroups_of(job.id)

    def running_job_ids(self) -> list[str]:
        """Return the ids of jobs whose process is running now."""
        with self._lock:
            return list(self._processes)

    def stop_all(self, job_ids: Collection[str] | None = None) -> None:
        """Stop the running processes of these jobs, or of every job: the executor is shutting down."""
        self._stopping.set()
        for job_id in self.running_job_ids():
            if job_ids is None or job_id in job_ids:
                self._stop_process(job_id, "shutdown")

    # -- results ---------------------------------------------------------------------------------

    def output_artifacts(self, job: Job) -> dict[str, Any]:
        """Return the job's output files with their content."""
        return read_outputs(Path(job.output_dir), job.artifacts.get("files", []))


def _usable_cores() -> int:
    # A service limited to some cores (systemd CPUAffinity, cpusets) reports them here, not in cpu_count.
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if IS_WINDOWS else "bin/python")


_gpus: int | None = None


def _gpu_count() -> int:
    global _gpus
    if _gpus is None:
        try:
            listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
            _gpus = sum(1 for line in listing.stdout.splitlines() if line.startswith("GPU "))
        except (OSError, subprocess.TimeoutExpired):
            _gpus = 0
    return _gpus
