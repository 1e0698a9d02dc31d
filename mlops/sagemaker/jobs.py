"""Training, pipeline and AutoML jobs on SageMaker: checks requests, launches training and AutoML jobs, follows them, stops them.

Monitoring cost: a cycle lists each job family once, bounded by the oldest followed job's creation
and a page cap (mlops/sagemaker/job_feed.py), and describes only the jobs the list names as changed
or cannot vouch for. Logs of all training jobs come from one paged FilterLogEvents query
(mlops/sagemaker/logs.py), which never holds up status. So a cycle costs O(followed jobs / 100 +
jobs that changed + new log volume), whatever else the account holds. A cycle whose Describe calls
are throttled backs off exponentially.
"""
from __future__ import annotations

import csv
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, cast

from config import Config
from job import AUTOML, PIPELINE, TRAINING, TUNING, Job, JobStatus
from mlops import script_contract
from mlops.sagemaker import automl, pricing
from mlops.sagemaker import validation as v
from mlops.aws import AWS_ERRORS, ClientFactory, is_not_found, is_throttled
from mlops.aws_statuses import (AUTOML_STATES, COMPLETED, FAILED, IN_PROGRESS, STOPPED, STOPPING,
                                TRAINING_STATES, TUNING_STATES)
from mlops import tuning as tuning_domain
from mlops.sagemaker.dataset_upload import upload_source
from mlops.errors import InvalidRequest, MalformedRequest, SageMakerJobError, Throttled, error_code, error_text
from mlops.job_requests import AutoMLRequest, Checked, JobRequest, PipelineRequest, TrainingRequest
from mlops.job_files import remove_tree
from mlops.sagemaker.job_feed import AUTOML_FEED, TRAINING_FEED, JobFeed
from mlops.sagemaker.settings import SageMakerSettings
from mlops.shapes import best_candidate
from mlops.sagemaker.job_secrets import ENTRY_POINT_VARIABLE, JobSecrets
from mlops.platform import Ran, Stop
from mlops.reporter import JobReporter
from mlops.sagemaker.logs import TrainingLogTail
from mlops.sagemaker import tuning as sagemaker_tuning
from mlops.sagemaker.training_service import (JOB_NAME_PREFIX, SageMakerJobConfig, SageMakerTrainingService,
                                               training_job_name)
from mlops.sandbox import sandbox_for
from mlops.staging import S3_URI, check_pipeline_inputs, check_training_inputs, stage_pipeline_files

logger = logging.getLogger(__name__)
# The entry point of a pipeline whose arguments are not --name value pairs (training_scripts/).
LAUNCHER = "essedum_launch.py"
LAUNCHER_ARGUMENT = "essedum-argv"

# AWS may answer not-found for a job it created a moment ago (and a job may vanish for good): one
# miss is asked again next cycle, the second ends the job.
NOT_FOUND_MISSES = 2
MAX_BACKOFF_SECONDS = 600.0
DEFAULT_VOLUME_GB = 30
CSV_HEADER_BYTES = 65536
EXECUTOR_TAGS = 2  # essedum:job-id and essedum:kind
# SecondaryStatus values AWS documents; any other value becomes the phase as it is.
KNOWN_SECONDARY = frozenset(v.sagemaker_model().shape_for("SecondaryStatus").enum)
AUTOML_SECONDARY = frozenset(v.sagemaker_model().shape_for("AutoMLJobSecondaryStatus").enum)
TIME_LIMIT_STATUSES = ("MaxRuntimeExceeded", "MaxWaitTimeExceeded")


# Probes come every few seconds; AWS need not be asked that often.
READY_CACHE_S = 30


class SageMakerJobs:
    """Runs training and pipeline jobs as SageMaker training jobs, and AutoML jobs; follows and stops them."""

    kinds = frozenset({PIPELINE, TRAINING, AUTOML, TUNING})

    def __init__(self, config: Config, clients: ClientFactory, *, clock: Callable[[], float] = time.time):
        self.config = config
        self.clients = clients
        self.clock = clock
        self.service = SageMakerTrainingService(config, clients)
        self.logs = TrainingLogTail(lambda: clients.client("logs"), clock=clock)
        self.prices = pricing.PriceList(lambda: clients.client("pricing", region=pricing.PRICE_LIST_API_REGION),
                                        clock=clock)
        self.secrets = JobSecrets(lambda: clients.client("secretsmanager"))
        self.feed = JobFeed(lambda: clients.client("sagemaker"), clock, JOB_NAME_PREFIX)
        self.tunings = sagemaker_tuning.SageMakerTunings(lambda: clients.client("sagemaker"))
        self._backoff = 0.0
        self._backoff_until = 0.0
        self._ready: tuple[float, bool, str | None] | None = None

    def ready_check(self) -> tuple[bool, str | None]:
        """Say whether AWS answers with the executor's credentials (STS, cached a while), noting unreadable logs."""
        now = self.clock()
        if not self._ready or now - self._ready[0] >= READY_CACHE_S:
            try:
                self.clients.client("sts").get_caller_identity()
                result: tuple[bool, str | None] = (True, None)
            except AWS_ERRORS as exc:
                result = (False, f"AWS is not reachable with the executor's credentials: {error_text(exc)}")
            self._ready = (now, *result)
        ok, reason = self._ready[1], self._ready[2]
        # Unreadable logs do not stop the executor from taking and following jobs: a note, not a failure.
        if ok and self.logs.problem:
            reason = self.logs.problem
        return ok, reason

    # -- submission ------------------------------------------------------------------------------

    def check(self, kind: str, request: JobRequest, secrets: dict[str, Any]) -> Checked:
        """Validate a request without any AWS call; return it normalised, with its resolved SageMaker settings."""
        if isinstance(request, PipelineRequest):
            return self._check_pipeline(request, secrets)
        if isinstance(request, AutoMLRequest):
            role = request.role_arn or self.config.sagemaker_role_arn
            if not role:
                raise InvalidRequest("role_arn", "no execution role: set EXECUTOR_SAGEMAKER_ROLE_ARN or role_arn")
            return Checked(automl.check_automl(request, v.validate_role_arn(role, "role_arn")))
        if not isinstance(request, TrainingRequest):
            raise TypeError(f"a {kind} job takes a training request, not {type(request).__name__}")
        if kind == TUNING:
            return self._check_tuning(request)
        return self._check_training(request)

    def _settings(self, request: TrainingRequest | PipelineRequest) -> dict[str, Any]:
        # A training request names its SageMaker settings as fields (its configs are read too); an Essedum
        # pipeline only in its configs.
        asked = request.to_stored() if isinstance(request, TrainingRequest) else {}
        takes_configs = isinstance(request, PipelineRequest)
        configs = request.configs if isinstance(request, PipelineRequest) else asked.get("configs") or {}
        if not isinstance(configs, Mapping):
            raise InvalidRequest("configs", "must be an object")

        def pick(name: str, *config_names: str, default: Any = None) -> tuple[Any, str]:
            if asked.get(name) is not None:
                return asked[name], name
            for config_name in config_names:
                if configs.get(config_name) not in (None, ""):
                    return configs[config_name], f"configs.{config_name}"
            return default, name

        instance_type, field = pick("instance_type", "instance_type", default=self.config.instance_type)
        v.validate_instance_type(instance_type, field)
        count, field = pick("instance_count", "instance_count", default=1)
        count = v.validate_instance_count(_as_int(count), field)
        runtime, field = pick("max_runtime_seconds", "max_runtime_seconds", "max_run",
                              default=self.config.max_runtime_seconds)
        runtime = v.validate_max_runtime(_as_int(runtime), field)
        volume, field = pick("volume_size_gb", "volume_size", default=DEFAULT_VOLUME_GB)
        volume = v.validate_volume_size(_as_int(volume), field)
        spot, _ = pick("spot", "use_spot_instances", "spot", default=False)
        spot = spot is True or str(spot).lower() == "true"
        max_wait = None
        if spot:
            wait, field = pick("max_wait_seconds", "max_wait", default=min(2 * runtime, v.MAX_RUNTIME_LIMIT_SECONDS))
            max_wait = v.validate_int(_as_int(wait), field, runtime, v.MAX_RUNTIME_LIMIT_SECONDS)
        role, field = pick("role_arn", "role", default=self.config.sagemaker_role_arn)
        if not role:
            raise _unset("no execution role", "EXECUTOR_SAGEMAKER_ROLE_ARN", "configs.role", takes_configs)
        v.validate_role_arn(role, field)
        bucket, field = pick("s3_bucket", "bucket", default=self.config.s3_bucket)
        if not bucket:
            raise _unset("no bucket", "EXECUTOR_S3_BUCKET", "configs.bucket", takes_configs)
        v.validate_bucket_name(bucket, field)
        prefix = v.validate_s3_prefix(self.config.s3_prefix, "EXECUTOR_S3_PREFIX")
        region = configs.get("region_name")
        if region and region != self.clients.region_name:
            v.validate_region(region, "configs.region_name")
            raise InvalidRequest("configs.region_name", f"this executor runs SageMaker jobs in "
                                                        f"{self.clients.region_name}, not {region}")
        container, field = pick("image_uri", "container")
        container = container or None
        if container:
            v.validate_image_uri(container, field)
        # Where the model goes: the executor's job folder in the bucket, unless the request names a place.
        output = asked.get("output_s3_uri") or None
        if output:
            v.validate_s3_uri(output, "output_s3_uri")
        py_version = configs.get("py_version") or self.config.py_version
        if not isinstance(py_version, str) or not py_version.startswith("py") or not py_version[2:].isdigit():
            raise InvalidRequest("configs.py_version", "must look like py311")
        tags = v.validate_tags(asked.get("tags") or {}, "tags", reserved=EXECUTOR_TAGS)
        return {"instance_type": instance_type, "instance_count": count, "max_runtime_seconds": runtime,
                "volume_size_gb": volume, "spot": spot, "max_wait_seconds": max_wait, "role_arn": role,
                "bucket": bucket, "prefix": prefix, "container": container, "py_version": py_version, "tags": tags,
                "output_s3_uri": output}

    def _check_training(self, training: TrainingRequest) -> Checked:
        settings = self._settings(training)
        if S3_URI.match(training.dataset):
            v.validate_s3_uri(training.dataset, "dataset")
        training = training.with_changes(entry_point=training.entry_point or script_contract.BUNDLED_ENTRY_POINT)
        folder = check_training_inputs(training, self.config)
        if folder is not None:
            training = training.with_changes(dataset_path=str(folder))
        source_dir, entry_point = Path(training.source_dir), training.entry_point
        description = script_contract.describe(source_dir, entry_point, sandbox_for(self.config)) or {}
        hyperparameters = script_contract.check_hyperparameters(dict(training.hyperparameters or {}), description)
        declared = description.get("hyperparameters") or {}
        if training.metadata_file and "metadata-file" in declared:
            hyperparameters.setdefault("metadata-file", training.metadata_file)
        metrics = v.validate_metric_definitions(description.get("metrics") or [], "metrics")
        v.validate_hyperparameter_names(hyperparameters, "hyperparameters")
        v.validate_hyperparameter_map(hyperparameters, "hyperparameters")
        settings.update(entry_point=entry_point, hyperparameters=hyperparameters, metric_definitions=metrics)
        return Checked(training, SageMakerSettings(**settings).to_stored())

    def _check_tuning(self, request: TrainingRequest) -> Checked:
        checked = self._check_training(request)
        training = cast(TrainingRequest, checked.request)
        settings = SageMakerSettings.from_stored(checked.settings or {})
        description = script_contract.describe(Path(training.source_dir), training.entry_point,
                                               sandbox_for(self.config))
        tuning = tuning_domain.check_tuning(training.search(), settings.hyperparameters, description)
        sagemaker_tuning.check_sagemaker_limits(tuning, [item["Name"] for item in settings.metric_definitions])
        return Checked(training.with_changes(tuning=tuning), checked.settings)

    def _check_pipeline(self, request: PipelineRequest, secrets: dict[str, Any]) -> Checked:
        settings = self._settings(request)
        argv = check_pipeline_inputs(request, secrets, self.config)
        entry_point, hyperparameters = _entry_point(argv)
        settings.update(entry_point=entry_point, hyperparameters=hyperparameters, metric_definitions=[])
        v.validate_hyperparameter_names(hyperparameters, "command")
        v.validate_hyperparameter_map(hyperparameters, "command")
        v.validate_environment(secrets.get("environment") or {}, "environment")
        return Checked(request, SageMakerSettings(**settings).to_stored())

    # -- launching -------------------------------------------------------------------------------

    def run(self, ctx: JobReporter) -> Ran:
        """Upload the inputs and create the training job; return once SageMaker has it."""
        if ctx.job.kind == AUTOML:
            return self._run_automl(ctx)
        job, request = ctx.job, cast(TrainingRequest | PipelineRequest, ctx.request)
        if job.settings is None:
            raise SageMakerJobError(f"job {job.id} was stored without its SageMaker settings")
        settings = SageMakerSettings.from_stored(job.settings)
        trial = request if isinstance(request, TrainingRequest) and job.kind == TRAINING else None
        trial_of = trial.sagemaker_training_job_name if trial else None
        if job.kind == TUNING:
            name = sagemaker_tuning.tuning_job_name(job.id)
        elif trial_of:
            # A tuning's trial: SageMaker created its training job; this follows it and creates nothing.
            name = trial_of
        else:
            name = training_job_name(job.id, request.name or job.kind)
        try:
            if job.kind == TUNING:
                tuning = self.tunings.describe(name)
                existing = tuning and {"TrainingJobStatus": tuning["HyperParameterTuningJobStatus"],
                                       "TrainingJobArn": tuning["HyperParameterTuningJobArn"]}
            else:
                existing = self.service.describe_training_job(name)
            if existing is not None:
                # A worker died after CreateTrainingJob: follow that job instead of creating another.
                ctx.log(f"[executor] SageMaker already has training job {name} "
                        f"({existing['TrainingJobStatus']}); following it")
                self._record_launch(ctx, name, existing["TrainingJobArn"], instance_count=settings.instance_count,
                                    instance_type=settings.instance_type)
                return Ran.LAUNCHED
            if trial_of:
                ctx.finish(JobStatus.ERROR, f"SageMaker has no training job named {name} (a trial of tuning "
                                            f"{trial.parent if trial else None})")
                return Ran.ENDED
            if ctx.cancel_requested():
                ctx.finish(JobStatus.CANCELLED, message="cancelled before it was submitted to SageMaker")
                return Ran.ENDED
            try:
                self._launch(ctx, name, settings)
            except BaseException:
                # A job SageMaker did not take must not leave its secret behind.
                self.secrets.forget(ctx)
                raise
        except AWS_ERRORS as exc:
            raise SageMakerJobError(f"SageMaker call failed: {error_text(exc)}") from exc
        return Ran.LAUNCHED

    def _launch(self, ctx: JobReporter, name: str, settings: SageMakerSettings) -> None:
        job, request = ctx.job, ctx.request
        bucket, prefix = settings.bucket, settings.prefix
        job_prefix = v.s3_key(prefix, "jobs", job.id)
        ctx.set_phase("Preparing", "uploading code and data")
        entry_point, environment = settings.entry_point, {}
        if isinstance(request, PipelineRequest):
            # Afresh: an attempt a restart cut short may have left a part of the files, which the copy never merges.
            remove_tree(ctx.job_dir / "code")
            code_dir = stage_pipeline_files(request, ctx.secrets, ctx.job_dir / "code", self.config, self.clients)
            if ctx.secrets.get("environment"):
                environment = self.secrets.hand_over(ctx, name)
                if entry_point != LAUNCHER:
                    environment[ENTRY_POINT_VARIABLE] = entry_point
                    entry_point = LAUNCHER
            if entry_point == LAUNCHER:
                shutil.copyfile(script_contract.BUNDLED_SCRIPTS / LAUNCHER, code_dir / LAUNCHER)
        else:
            code_dir = Path(cast(TrainingRequest, request).source_dir)
        source = upload_source(self.clients.client("s3"), code_dir, bucket, prefix)
        ctx.log(f"[executor] code {'uploaded' if source.uploaded else 'already'} at {source.uri}")
        input_uri = ""
        if isinstance(request, TrainingRequest):
            training = request
            if S3_URI.match(training.dataset):
                input_uri = training.dataset
            else:
                input_uri = self.service.upload_training_data(training.dataset_path, training.metadata_file,
                                                              bucket, prefix)
            ctx.log(f"[executor] training data at {input_uri}")
        image = self.service.resolve_image(settings.instance_type, settings.container)
        job_config = SageMakerJobConfig(
            job_name=name, role_arn=settings.role_arn, image_uri=image, instance_type=settings.instance_type,
            instance_count=settings.instance_count, volume_size_gb=settings.volume_size_gb,
            max_runtime_seconds=settings.max_runtime_seconds, hyperparameters=dict(settings.hyperparameters),
            environment_variables=environment, entry_point=entry_point, source_s3_uri=source.uri,
            region=self.clients.region_name, spot=settings.spot, max_wait_seconds=settings.max_wait_seconds,
            checkpoint_s3_uri=f"s3://{bucket}/{job_prefix}/checkpoints" if settings.spot else None,
            metric_definitions=settings.metric_definitions,
            tags={**settings.tags, "essedum:job-id": job.id, "essedum:kind": job.kind},
            executor_job_id=job.id, input_data_s3_uri=input_uri,
            output_s3_uri=settings.output_s3_uri or f"s3://{bucket}/{job_prefix}/output")
        # run() described the name just now: create without describing it again.
        if job.kind == TUNING:
            arn = self.tunings.create(sagemaker_tuning.tuning_job_request(
                name, job_config.to_sagemaker_config(), cast(TrainingRequest, request).search()))
        else:
            arn = self.service.create_training_job(job_config)
        self._record_launch(ctx, name, arn, region=job_config.region, instance_type=job_config.instance_type,
                            instance_count=job_config.instance_count, image_uri=image,
                            input_s3_uri=input_uri or None, output_s3_uri=job_config.output_s3_uri,
                            spot=job_config.spot)
        family = "tuning" if job.kind == TUNING else "training"
        ctx.set_phase("Starting", f"submitted as SageMaker {family} job {name}")
        ctx.log(f"[executor] submitted SageMaker {family} job {name} on {settings.instance_count} x "
                f"{settings.instance_type} with image {image}")

    @staticmethod
    def _record_launch(ctx: JobReporter, name: str, arn: str, **details: Any) -> None:
        """Record once that SageMaker has the job: its name as the external id, its ARN and settings."""
        ctx.set_external_id(name)
        ctx.merge_details(sagemaker_job_name=name, sagemaker_job_arn=arn, **details)

    def _run_automl(self, ctx: JobReporter) -> Ran:
        job, request = ctx.job, cast(AutoMLRequest, ctx.request)
        name = request.job_name or automl.automl_job_name(job.id)
        sagemaker = self.clients.client("sagemaker")
        try:
            existing = self.describe_automl(name)
            if existing is not None and not job.details.get("create_attempted"):
                raise InvalidRequest("job_name", f"an AutoML job named {name} already exists in this account "
                                                 "and region; choose another name")
            if existing is None:
                if ctx.cancel_requested():
                    ctx.finish(JobStatus.CANCELLED, message="cancelled before it was submitted to SageMaker")
                    return Ran.ENDED
                # Recorded first: a re-run that then finds the job knows this executor created it.
                ctx.merge_details(create_attempted=True, automl_job_name=name)
                params = automl.create_request(name, request, {**request.tags,
                                                               "essedum:job-id": job.id, "essedum:kind": job.kind})
                try:
                    arn = sagemaker.create_auto_ml_job_v2(**params)["AutoMLJobArn"]
                except AWS_ERRORS as exc:
                    if error_code(exc) != "ResourceInUse":
                        raise
                    arn = sagemaker.describe_auto_ml_job_v2(AutoMLJobName=name)["AutoMLJobArn"]
            else:
                arn = existing["AutoMLJobArn"]
        except AWS_ERRORS as exc:
            raise SageMakerJobError(f"CreateAutoMLJobV2 {name} failed: {error_text(exc)}") from exc
        ctx.set_external_id(name)
        ctx.merge_details(automl_job_arn=arn, automl_job_name=name)
        ctx.set_phase("Starting", f"submitted as SageMaker AutoML job {name}")
        ctx.log(f"[executor] submitted SageMaker AutoML job {name} on {request.input_s3_uri}")
        return Ran.LAUNCHED

    def describe_automl(self, name: str) -> dict[str, Any] | None:
        """Return DescribeAutoMLJobV2's answer, or None when there is no such job."""
        try:
            return self.clients.client("sagemaker").describe_auto_ml_job_v2(AutoMLJobName=name)
        except AWS_ERRORS as exc:
            if is_not_found(exc):
                return None
            raise

    def describe(self, job: Job) -> dict[str, Any] | None:
        """Return AWS's description of a launched job (a read-only call), or None before launch."""
        if not job.external_id:
            return None
        try:
            if job.kind == AUTOML:
                return self.describe_automl(job.external_id)
            return self.service.describe_training_job(job.external_id)
        except AWS_ERRORS as exc:
            raise SageMakerJobError(f"cannot describe {job.external_id}: {error_text(exc)}") from exc

    def csv_columns(self, s3_uri: str, field: str = "inputs") -> list[str]:
        """Return the header of a CSV in S3 (the object, or the first .csv under a prefix): read-only calls."""
        bucket, key = v.validate_s3_uri(s3_uri, field)
        s3 = self.clients.client("s3")
        try:
            if not key.lower().endswith(".csv"):
                listed = s3.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1000).get("Contents", [])
                csvs = sorted(item["Key"] for item in listed if item["Key"].lower().endswith(".csv"))
                if not csvs:
                    raise MalformedRequest(field, f"no .csv file under {s3_uri}")
                key = csvs[0]
            head = s3.get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{CSV_HEADER_BYTES - 1}")["Body"].read()
        except AWS_ERRORS as exc:
            if is_not_found(exc):
                raise MalformedRequest(field, f"{s3_uri} does not exist") from exc
            raise SageMakerJobError(f"cannot read {s3_uri}: {error_text(exc)}") from exc
        first_line = head.decode("utf-8-sig", errors="replace").splitlines()[:1]
        return next(csv.reader(first_line), []) if first_line else []

    # -- monitoring ------------------------------------------------------------------------------

    def follow(self, reporters: list[JobReporter]) -> None:
        """One monitor cycle: new log lines of every job, then the jobs SageMaker says changed."""
        if self.clock() < self._backoff_until:
            return
        training = {ctx.job.external_id: ctx for ctx in reporters
                    if ctx.job.external_id and ctx.job.kind not in (AUTOML, TUNING)}
        automl_jobs = {ctx.job.external_id: ctx for ctx in reporters if ctx.job.external_id and ctx.job.kind == AUTOML}
        try:
            # Few and long: each running tuning is described every cycle, its trials paged a bounded amount.
            for ctx in reporters:
                if ctx.job.external_id and ctx.job.kind == TUNING:
                    self._guard(lambda ctx=ctx: self._refresh_tuning(ctx))
            if training:
                self.logs.tail(training, JOB_NAME_PREFIX)
                self._report_log_problem(training.values())
            for feed, by_name in ((TRAINING_FEED, training), (AUTOML_FEED, automl_jobs)):
                if by_name:
                    jobs = {name: ctx.job for name, ctx in by_name.items()}
                    for name in self.feed.to_describe(feed, jobs):
                        self._guard(lambda: self._refresh(by_name[name]))
        except Throttled as exc:
            self._backoff = min(max(2 * self._backoff, self.config.monitor_interval, 1.0), MAX_BACKOFF_SECONDS)
            self._backoff_until = self.clock() + self._backoff
            logger.warning("SageMaker throttled the monitor (%s); next cycle in %.0f s", exc, self._backoff)
            return
        self._backoff = 0.0

    def _report_log_problem(self, reporters: Iterable[JobReporter]) -> None:
        """Put a log read error on each job's events once, so a user sees why its log stands still."""
        problem = self.logs.problem
        if problem is None:
            return
        for ctx in reporters:
            if ctx.job.details.get("log_warning") != problem:
                ctx.warn(f"{problem}; the job's status is still followed")
                ctx.merge_details(log_warning=problem)

    @staticmethod
    def _guard(call: Callable[[], Any]) -> Any:
        try:
            return call()
        except AWS_ERRORS as exc:
            if is_throttled(exc):
                raise Throttled(error_text(exc)) from exc
            raise

    def _refresh(self, ctx: JobReporter) -> None:
        job = ctx.job
        described = (self.describe_automl(job.external_id) if job.kind == AUTOML
                     else self.service.describe_training_job(job.external_id))
        if described is None:
            misses = int(job.details.get("not_found_misses", 0)) + 1
            if misses < NOT_FOUND_MISSES:
                ctx.merge_details(not_found_misses=misses, describe_next=True)
                return
            ctx.finish(JobStatus.ERROR, f"SageMaker has no {job.kind} job named {job.external_id} "
                                        f"({misses} answers in a row)")
            return
        if job.kind == AUTOML:
            self.apply_automl_description(ctx, described)
        else:
            self.apply_description(ctx, described)
        # Marked seen only once applied in full: a cycle cut short between the two (a throttled log
        # read, a kill -9) leaves the job looking changed, so the next cycle or run describes it again
        # instead of leaving it RUNNING until the resync.
        ctx.merge_details(last_modified=described["LastModifiedTime"].timestamp(), described_at=self.clock(),
                          created_at=described["CreationTime"].timestamp(), describe_next=False, not_found_misses=0)

    def _refresh_tuning(self, ctx: JobReporter) -> None:
        job = ctx.job
        described = self.tunings.describe(job.external_id)
        if described is None:
            misses = int(job.details.get("not_found_misses", 0)) + 1
            if misses < NOT_FOUND_MISSES:
                ctx.merge_details(not_found_misses=misses)
            else:
                ctx.finish(JobStatus.ERROR, f"SageMaker has no tuning job named {job.external_id} "
                                            f"({misses} answers in a row)")
            return
        ended = described["HyperParameterTuningJobStatus"] in TUNING_STATES.terminal_states
        stopping = job.cancel_requested or bool(job.details.get("stop_requested"))
        trials, token = job.details.get("trials", []), job.details.get("trials_token")
        # Once it has ended, its trials are read to the end from the first: the last table is whole.
        summaries, token = self.tunings.training_jobs(job.external_id, None if ended else token)
        while ended and token:
            more, token = self.tunings.training_jobs(job.external_id, token)
            summaries.extend(more)
        self._add_trials(ctx, trials, summaries)
        trials = sagemaker_tuning.merge_trials(job.id, trials, summaries, stopping)
        sagemaker_tuning.apply_tuning_description(ctx, described, trials, token)

    @staticmethod
    def _add_trials(ctx: JobReporter, known: list[dict[str, Any]], summaries: list[dict[str, Any]]) -> None:
        """Queue a trial job for each training job of the tuning not yet in its table; a worker then follows it."""
        numbers = {row["training_job_name"]: row["number"] for row in known}
        for summary in summaries:
            name = summary["TrainingJobName"]
            if name in numbers:
                continue
            numbers[name] = len(numbers) + 1
            # Written before the table that names it: a cycle cut short between the two finds the row again.
            if ctx.add_child(sagemaker_tuning.trial_job_id(ctx.job_id, name), TRAINING,
                             sagemaker_tuning.trial_request(ctx.job, numbers[name], summary)):
                ctx.log(f"[executor] trial {numbers[name]}: SageMaker training job {name}")

    def _note_status(self, ctx: JobReporter, status: str, secondary: str, described: dict[str, Any],
                     message: str | None) -> None:
        ctx.merge_details(sagemaker_status=status, secondary_status=secondary)
        if secondary not in KNOWN_SECONDARY | AUTOML_SECONDARY:
            logger.warning("job %s: unknown SageMaker secondary status %r", ctx.job_id, secondary)
        phase = str(secondary)[:64]
        if phase != ctx.job.phase:
            ctx.set_phase(phase, message)
            ctx.log(f"[executor] SageMaker: {status} / {secondary}{f' - {message}' if message else ''}")

    def apply_automl_description(self, ctx: JobReporter, described: dict[str, Any]) -> None:
        """Bring an AutoML job up to date with DescribeAutoMLJobV2's answer, ending it when SageMaker has."""
        status = described["AutoMLJobStatus"]
        secondary = described.get("AutoMLJobSecondaryStatus") or status
        self._note_status(ctx, status, secondary, described, None)
        if status not in AUTOML_STATES.terminal_states:
            return
        best = best_candidate(described)
        ctx.merge_details(best_candidate=best, cost_note="no estimate for AutoML jobs (many training jobs)")
        artifacts = automl.model_artifacts(described)
        if artifacts:
            ctx.set_artifacts(artifacts)
        objective = (best or {}).get("objectiveMetric") or {}
        if objective.get("name") and objective.get("value") is not None:
            ctx.add_metrics({objective["name"]: objective["value"]})
        if status == COMPLETED:
            ctx.finish(JobStatus.COMPLETED)
        elif status == FAILED:
            ctx.finish(JobStatus.ERROR, described.get("FailureReason") or
                       "SageMaker reported the AutoML job Failed and gave no reason")
        elif ctx.job.cancel_requested or ctx.job.details.get("stop_requested"):
            ctx.finish(JobStatus.CANCELLED)
        else:
            ctx.finish(JobStatus.CANCELLED, f"stopped outside the executor ({secondary})")

    def apply_description(self, ctx: JobReporter, described: dict[str, Any]) -> None:
        """Bring a job up to date with DescribeTrainingJob's answer, ending it when SageMaker has."""
        job = ctx.job
        status = described["TrainingJobStatus"]
        secondary = described.get("SecondaryStatus") or status
        transitions = described.get("SecondaryStatusTransitions") or []
        self._note_status(ctx, status, secondary, described,
                          transitions[-1].get("StatusMessage") if transitions else None)
        if status not in TRAINING_STATES.terminal_states:
            return
        self.logs.tail_job(job, ctx)
        self.secrets.forget(ctx)
        self._record_results(ctx, described)
        if status == COMPLETED:
            ctx.finish(JobStatus.COMPLETED)
        elif status == FAILED:
            ctx.finish(JobStatus.ERROR, described.get("FailureReason") or
                       "SageMaker reported the job Failed and gave no reason")
        else:
            ctx.finish(*self._stopped_outcome(job, described))

    @staticmethod
    def _stopped_outcome(job: Job, described: dict[str, Any]) -> tuple[JobStatus, str | None]:
        statuses = [described.get("SecondaryStatus")] + [
            item.get("Status") for item in described.get("SecondaryStatusTransitions") or []]
        limit = next((status for status in statuses if status in TIME_LIMIT_STATUSES), None)
        if limit:
            stopping = described.get("StoppingCondition") or {}
            return JobStatus.ERROR, (f"SageMaker stopped the job: {limit} (MaxRuntimeInSeconds="
                                     f"{stopping.get('MaxRuntimeInSeconds')}, MaxWaitTimeInSeconds="
                                     f"{stopping.get('MaxWaitTimeInSeconds')})")
        if job.cancel_requested or job.details.get("stop_requested"):
            return JobStatus.CANCELLED, None
        if job.kind == TRAINING and TrainingRequest.from_stored(job.request).sagemaker_training_job_name:
            return JobStatus.CANCELLED, ("stopped by its tuning: early stopping, or the tuning's stop "
                                         "(the tuning's trials table says which)")
        return JobStatus.CANCELLED, "stopped outside the executor (StopTrainingJob from another client)"

    def _record_results(self, ctx: JobReporter, described: dict[str, Any]) -> None:
        artifacts = {}
        model = (described.get("ModelArtifacts") or {}).get("S3ModelArtifacts")
        if model:
            artifacts["model"] = model
        output = (described.get("OutputDataConfig") or {}).get("S3OutputPath")
        if output:
            artifacts["output_path"] = f"{output.rstrip('/')}/{described['TrainingJobName']}/"
        checkpoints = (described.get("CheckpointConfig") or {}).get("S3Uri")
        if checkpoints:
            artifacts["checkpoints"] = checkpoints
        if artifacts:
            ctx.set_artifacts(artifacts)
        final = {item["MetricName"]: item.get("Value") for item in described.get("FinalMetricDataList") or []}
        latest = ctx.latest_metrics()
        unseen = {name: value for name, value in final.items()
                  if name != "epoch" and (latest.get(name) is None or value is None
                                          or abs(latest[name] - value) > 1e-6 * max(1.0, abs(value)))}
        if unseen:
            ctx.add_metrics(unseen, step=int(final["epoch"]) if final.get("epoch") is not None else None)
        resources = described.get("ResourceConfig") or {}
        instance_type = resources.get("InstanceType") or ctx.job.details.get("instance_type")
        count = int(resources.get("InstanceCount") or 1)
        billable = described.get("BillableTimeInSeconds")
        training = described.get("TrainingTimeInSeconds")
        cost, note = self.prices.estimate(instance_type or "", self.clients.region_name or "", billable, count)
        details: dict[str, Any] = {"final_metrics": final, "training_seconds": training,
                                   "billable_seconds": billable, "instance_type": instance_type,
                                   "instance_count": count, "estimated_cost_usd": cost, "cost_note": note}
        if described.get("EnableManagedSpotTraining") and training and billable is not None:
            details["spot_savings_percent"] = round(100.0 * (1 - billable / training), 1)
        ctx.merge_details(**details)

    # -- stopping and recovery -------------------------------------------------------------------

    def cancel(self, job: Job, ctx: JobReporter) -> Stop:
        """Stop the training job if SageMaker can still stop it; the monitor ends it once Stopped."""
        if not job.external_id or job.details.get("stop_requested"):
            # Not submitted yet: run() sees the cancel flag before it submits.
            return Stop.REQUESTED
        operation = {AUTOML: "StopAutoMLJob", TUNING: "StopHyperParameterTuningJob"}.get(job.kind, "StopTrainingJob")
        try:
            if job.kind == TUNING:
                status = self.tunings.stop(job.external_id)
            elif job.kind == AUTOML:
                status = self._stop_automl(job.external_id)
            else:
                status = self.service.stop_training_job(job.external_id)
        except AWS_ERRORS as exc:
            raise SageMakerJobError(f"{operation} {job.external_id} failed: {error_text(exc)}") from exc
        if status is None:
            return Stop.NOTHING
        # Written once, here: a job that already ended is described next cycle, which ends it with its real status.
        ctx.merge_details(stop_requested=True, describe_next=True)
        return Stop.REQUESTED if status in (IN_PROGRESS, STOPPING, STOPPED) else Stop.NOTHING

    def _stop_automl(self, name: str) -> str | None:
        """Stop an AutoML job if it still runs; return the status SageMaker reported first (None: no such job)."""
        described = self.describe_automl(name)
        if described is None:
            return None
        if described["AutoMLJobStatus"] in AUTOML_STATES.stoppable_states:
            self.clients.client("sagemaker").stop_auto_ml_job(AutoMLJobName=name)
        return described["AutoMLJobStatus"]

    def output_artifacts(self, job: Job) -> dict[str, Any]:
        """Return where the job's outputs are in S3, as {name: {"content": uri}}."""
        return {name: {"content": uri} for name, uri in job.artifacts.items()}


def _unset(what: str, setting: str, config_field: str, takes_configs: bool) -> InvalidRequest:
    """Refuse a request that needs a setting the executor lacks, naming only what the route accepts."""
    if takes_configs:
        return InvalidRequest(config_field, f"{what}: set {setting} or {config_field}")
    return InvalidRequest(setting, f"{what}: set the executor's {setting} (this request cannot carry one)")


def _as_int(value: Any) -> Any:
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return value


def _entry_point(argv: list[str]) -> tuple[str, dict[str, str]]:
    """Return the entry point and hyperparameters that run `python script args...` on SageMaker.

    --name value arguments become hyperparameters, which the container passes back as they were.
    Any other command line (the backend appends "Last_Execution_Time":"-1" and the like to scheduled
    runs) goes whole to the bundled launcher, which runs the script with exactly that argv.
    """
    try:
        return argv[1], script_contract.flag_pairs(argv[2:])
    except InvalidRequest:
        return LAUNCHER, {LAUNCHER_ARGUMENT: json.dumps(argv[1:])}
