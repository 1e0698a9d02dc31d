"""The model lifecycle on SageMaker: CreateModel, endpoint configs, endpoints, InvokeEndpoint, batch
transform, and datasets in S3.

Quick calls (create a model or a configuration, invoke, delete) are made by the request; what takes
minutes (an endpoint reaching InService, a transform job) is a queued job: run() makes the one API
call that starts it and the monitor cycle follows it, so no request thread waits on AWS.
Every client comes from the ClientFactory, for the adapter instance the request named.
"""
from __future__ import annotations

import json
import logging
import threading
from http import HTTPStatus
from typing import Any, BinaryIO, cast

from config import Config
from db import Record
from job import ENDPOINT, TRANSFORM, Job, JobStatus
from mlops.aws import AWS_ERRORS, ClientFactory, aws_error, is_not_found, is_read_timeout
from mlops.errors import (AccessDenied, BackendError, Conflict, DeadlineExceeded, InvalidRequest, MalformedRequest,
                          NotAcceptable, NotFound, NotSupported, TooLarge, error_code, error_text)
from mlops.aws_statuses import (COMPLETED, CREATING, ENDPOINT_FAILED_STATES, ENDPOINT_NON_TERMINAL_STATES,
                                FAILED, IN_PROGRESS, IN_SERVICE, STOPPED, TRANSFORM_STATES, UPDATING)
from mlops.platform import Ran, Stop
from mlops.records import (DATASET, ENDPOINT_CONFIG, ENDPOINT_RECORD, MODEL, TRANSFORM_RECORD, ModelRecords, RecordBook,
                           as_list, finished_training_job, model_body, production_variant, public_request)
from mlops.reporter import JobReporter
from mlops.sagemaker import validation as v
from mlops.shapes import tag_list
from mlops.job_requests import DeployRequest, JobRequest, TransformRequest
from mlops.staging import S3_URI

logger = logging.getLogger(__name__)

INFERENCE_PROGRAM = "inference.py"
# train.py writes code/inference.py into the model folder, which SageMaker unpacks at /opt/ml/model.
INFERENCE_ENVIRONMENT = {"SAGEMAKER_PROGRAM": INFERENCE_PROGRAM, "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code",
                         "SAGEMAKER_CONTAINER_LOG_LEVEL": "20"}
DEFAULT_INFERENCE_INSTANCE = "ml.m5.large"
PRESIGN_SECONDS = 3600
# A ModelError carries the container's own status as OriginalStatusCode (botocore's sagemaker-runtime
# model); these say the caller's request is at fault, as the local model host reads them. Any other
# status, or none, is the model failing.
REFUSALS_BY_MODEL_STATUS: dict[int, tuple[type[InvalidRequest], str]] = {
    HTTPStatus.BAD_REQUEST: (MalformedRequest, "body"), HTTPStatus.UNSUPPORTED_MEDIA_TYPE: (MalformedRequest, "body"),
    HTTPStatus.NOT_ACCEPTABLE: (NotAcceptable, "Accept"), HTTPStatus.REQUEST_ENTITY_TOO_LARGE: (TooLarge, "body"),
}


class SageMakerModelLifecycle(ModelRecords):
    """Models, endpoints and batch transforms on Amazon SageMaker."""

    source_org = "AWS SageMaker"

    def __init__(self, config: Config, book: RecordBook, clients: ClientFactory):
        super().__init__(config, book, clients)
        self._images: dict[tuple[str, str], str] = {}
        self._images_lock = threading.Lock()

    def _sagemaker(self, adapter: str | None = None) -> Any:
        return self.clients.client("sagemaker", adapter)

    def _call(self, field: str, operation: str, adapter: str | None = None, **params: Any) -> dict[str, Any]:
        """Make one SageMaker call; an AWS refusal becomes a 4xx naming the field."""
        try:
            answer = getattr(self._sagemaker(adapter), operation)(**params)
        except AWS_ERRORS as exc:
            raise aws_error(exc, field, operation) from exc
        answer.pop("ResponseMetadata", None)
        return answer

    def _exists(self, operation: str, adapter: str | None = None, **params: Any) -> dict[str, Any] | None:
        """Describe a resource; None when SageMaker says it does not exist."""
        try:
            answer = getattr(self._sagemaker(adapter), operation)(**params)
        except AWS_ERRORS as exc:
            if is_not_found(exc):
                return None
            raise aws_error(exc, "", operation) from exc
        answer.pop("ResponseMetadata", None)
        return answer

    # -- models ----------------------------------------------------------------------------------

    def inference_image(self, instance_type: str | None) -> str:
        """The AWS PyTorch inference image for the configured framework version (from sagemaker-core)."""
        instance_type = instance_type or DEFAULT_INFERENCE_INSTANCE
        region = self.clients.region_name or "us-east-1"
        key = (region, instance_type)
        with self._images_lock:
            if key not in self._images:
                # Imported here: sagemaker-core takes seconds to import and only this needs it.
                from sagemaker.core import image_uris

                self._images[key] = image_uris.retrieve(
                    framework="pytorch", region=region, version=self.config.framework_version,
                    py_version=self.config.py_version, instance_type=instance_type, image_scope="inference")
            return self._images[key]

    def _training_artifact(self, job_id: str, adapter: str | None) -> str:
        job = finished_training_job(self.book, job_id)
        uri = (job.artifacts.get("model") or job.artifacts.get("model_artifact")
               or job.artifacts.get("S3ModelArtifacts"))
        if not uri and job.backend == "sagemaker" and job.external_id:
            described = self._call("TrainingJobId", "describe_training_job", adapter, TrainingJobName=job.external_id)
            uri = described.get("ModelArtifacts", {}).get("S3ModelArtifacts")
        if not uri:
            raise InvalidRequest("TrainingJobId", f"training job {job_id} has no model in S3 (a local training "
                                                  "job's model stays on the machine that trained it)")
        return uri

    def _containers(self, body: dict[str, Any], adapter: str | None) -> list[dict[str, Any]]:
        if body.get("TrainingJobId"):
            if body.get("Containers") or body.get("PrimaryContainer"):
                raise MalformedRequest("TrainingJobId", "give a training job or containers, not both")
            return [{"Image": self.inference_image(body.get("InstanceType")),
                     "ModelDataUrl": self._training_artifact(body["TrainingJobId"], adapter),
                     "Environment": {**INFERENCE_ENVIRONMENT,
                                     "SAGEMAKER_REGION": self.clients.region_name or "us-east-1"}}]
        containers = body.get("Containers") or ([body["PrimaryContainer"]] if body.get("PrimaryContainer") else [])
        if not containers:
            raise MalformedRequest("Containers", "give Containers, PrimaryContainer or TrainingJobId")
        filled = []
        for number, container in enumerate(containers):
            url = container.get("ModelDataUrl")
            if url and not S3_URI.match(url):
                raise InvalidRequest(f"Containers.{number}.ModelDataUrl", "must be an s3:// URI")
            filled.append({**container, "Image": container.get("Image") or self.inference_image(body.get("InstanceType"))})
        return filled

    def _role(self, body: dict[str, Any]) -> str:
        role = body.get("ExecutionRoleArn") or self.config.sagemaker_role_arn
        if not role:
            raise MalformedRequest("ExecutionRoleArn", "is required (or set EXECUTOR_SAGEMAKER_ROLE_ARN)")
        return role

    def register_model(self, body: dict[str, Any], origin: dict[str, Any]) -> Record:
        """CreateModel, then record it."""
        name, adapter = body["ModelName"], origin.get("adapter")
        if self.find(MODEL, name) or self._exists("describe_model", adapter, ModelName=name):
            raise Conflict("ModelName", f"a model named {name!r} exists")
        role = self._role(body)
        containers = self._containers(body, adapter)
        params: dict[str, Any] = {"ModelName": name, "ExecutionRoleArn": role}
        if len(containers) == 1:
            params["PrimaryContainer"] = containers[0]
        else:
            params["Containers"] = containers
        if body.get("Tags"):
            params["Tags"] = tag_list(body["Tags"])
        self._call("ModelName", "create_model", adapter, **params)
        raw = self._exists("describe_model", adapter, ModelName=name) or params
        return self.put(MODEL, name, "Created", {
            **origin, "arn": raw.get("ModelArn"), "description": body.get("Description", ""),
            "container": containers[0] if len(containers) == 1 else containers,
            "artifacts": {"ModelDataUrl": [c.get("ModelDataUrl") for c in containers if c.get("ModelDataUrl")]},
            "training_job": body.get("TrainingJobId"), "raw": raw})

    def delete_model(self, name: str, adapter: str | None = None) -> None:
        record = self.record(MODEL, name)
        self.check_model_deletable(name)
        self._delete("delete_model", adapter, ModelName=name)
        self.book.delete(record.id)

    def _delete(self, operation: str, adapter: str | None, **params: Any) -> None:
        """Delete a SageMaker resource; one that is already gone is fine."""
        try:
            getattr(self._sagemaker(adapter), operation)(**params)
        except AWS_ERRORS as exc:
            if not is_not_found(exc):
                raise aws_error(exc, "id", operation) from exc

    # -- endpoint configurations -----------------------------------------------------------------

    def register_endpoint(self, body: dict[str, Any], origin: dict[str, Any]) -> Record:
        """CreateEndpointConfig (after CreateModel when the body describes the model); all or nothing."""
        config_name, adapter = body["EndpointConfigName"], origin.get("adapter")
        if not body.get("InstanceType"):
            raise MalformedRequest("InstanceType", "is required on SageMaker (e.g. ml.m5.large)")
        if self.find(ENDPOINT_CONFIG, config_name) or self._exists("describe_endpoint_config", adapter,
                                                                    EndpointConfigName=config_name):
            raise Conflict("EndpointConfigName", f"an endpoint configuration named {config_name!r} exists")
        created = None
        if body.get("PrimaryContainer") or body.get("TrainingJobId"):
            created = self.register_model(model_body(body), origin)
        elif not (self.find(MODEL, body["ModelName"]) or
                  self._exists("describe_model", adapter, ModelName=body["ModelName"])):
            raise InvalidRequest("ModelName", f"no model named {body['ModelName']!r}: register it, or give "
                                              "PrimaryContainer or TrainingJobId")
        variant = production_variant(body)
        try:
            self._call("EndpointConfigName", "create_endpoint_config", adapter, EndpointConfigName=config_name,
                       ProductionVariants=[{**variant, "InitialVariantWeight": 1.0}],
                       **({"Tags": tag_list(body["Tags"])} if body.get("Tags") else {}))
        except BaseException:
            if created is not None:
                # The model was made for this configuration only: take it away again.
                self.delete_model(created.name, adapter)
            raise
        raw = self._exists("describe_endpoint_config", adapter, EndpointConfigName=config_name) or {}
        model = self.find(MODEL, body["ModelName"])
        return self.put(ENDPOINT_CONFIG, config_name, "Created", {
            **origin, "arn": raw.get("EndpointConfigArn"), "description": body.get("Description", ""),
            "model_names": [body["ModelName"]], "deployment": variant,
            "container": model.payload.get("container") if model else None,
            "artifacts": model.payload.get("artifacts") if model else None, "raw": raw})

    def delete_endpoint_config(self, name: str, adapter: str | None = None) -> None:
        record = self.record(ENDPOINT_CONFIG, name)
        self.check_endpoint_config_deletable(name)
        self._delete("delete_endpoint_config", adapter, EndpointConfigName=name)
        self.book.delete(record.id)

    # -- endpoints -------------------------------------------------------------------------------

    def delete_endpoint(self, name: str, adapter: str | None = None) -> None:
        record = self.record(ENDPOINT_RECORD, name)
        self.check_endpoint_deletable(record)
        if record.payload.get("exists", True):
            self._delete("delete_endpoint", adapter, EndpointName=name)
        self.book.delete(record.id)

    def take_down(self, record: Record, adapter: str | None) -> None:
        self._delete("delete_endpoint", adapter, EndpointName=record.name)

    def explain(self, name: str, body: bytes, content_type: str, adapter: str | None = None) -> dict[str, Any]:
        """InvokeEndpoint with EnableExplanations, where the endpoint's configuration has a Clarify explainer."""
        described = self._exists("describe_endpoint", adapter, EndpointName=name)
        if described is None:
            raise NotFound("id", f"no endpoint named {name!r}")
        config_name = described["EndpointConfigName"]
        config = self._call("id", "describe_endpoint_config", adapter, EndpointConfigName=config_name)
        if not (config.get("ExplainerConfig") or {}).get("ClarifyExplainerConfig"):
            raise NotSupported("id", f"endpoint {name!r} serves configuration {config_name!r}, which has no SageMaker "
                                     "Clarify explainer (ExplainerConfig.ClarifyExplainerConfig): create the "
                                     "configuration with one to get explanations")
        timeout = self.config.explain_timeout
        try:
            # "`true`" is the JMESPath literal that explains every record of the request. Clarify computes
            # the explanation inside the one call: its read is what the deadline bounds.
            answer, answer_type = self._invoke(name, body, content_type, "application/json", adapter,
                                               enable_explanations="`true`", read_timeout=timeout)
        except DeadlineExceeded as exc:
            raise DeadlineExceeded(f"explaining endpoint {name!r} took longer than EXECUTOR_EXPLAIN_TIMEOUT "
                                   f"({timeout:g} s): {exc}") from None
        try:
            document = json.loads(answer)
        except ValueError:
            document = {"predictions": answer.decode("utf-8", errors="replace"), "contentType": answer_type}
        return {"endpoint": name, "method": "sagemaker-clarify",
                **(document if isinstance(document, dict) else {"predictions": document})}

    def invoke(self, name: str, body: bytes, content_type: str, accept: str | None,
               adapter: str | None = None) -> tuple[bytes, str]:
        """InvokeEndpoint; returns (answer, content type)."""
        return self._invoke(name, body, content_type, accept, adapter)

    def _invoke(self, name: str, body: bytes, content_type: str, accept: str | None, adapter: str | None,
                enable_explanations: str | None = None, read_timeout: float | None = None) -> tuple[bytes, str]:
        """InvokeEndpoint, read for at most read_timeout seconds (else the runtime client's own bound)."""
        record = self.find(ENDPOINT_RECORD, name)
        if record is not None and record.status != IN_SERVICE:
            raise Conflict("id", f"endpoint {name!r} is {record.status}, not InService",
                                 endpoint_status=record.status)
        params = {"EndpointName": name, "Body": body, "ContentType": content_type}
        if accept:
            params["Accept"] = accept
        if enable_explanations:
            params["EnableExplanations"] = enable_explanations
        runtime = self.clients.client("sagemaker-runtime", adapter, read_timeout=read_timeout)
        try:
            answer = runtime.invoke_endpoint(**params)
        except AWS_ERRORS as exc:
            if is_read_timeout(exc):
                raise DeadlineExceeded(f"endpoint {name!r} gave no answer within "
                                       f"{runtime.meta.config.read_timeout:g} s") from None
            if error_code(exc) == "ModelError":
                raise _model_error(name, exc) from None
            raise aws_error(exc, "id", f"invoke_endpoint {name}") from exc
        return answer["Body"].read(), answer.get("ContentType") or "application/octet-stream"

    # -- jobs ------------------------------------------------------------------------------------

    def check_record_job(self, kind: str, request: JobRequest) -> JobRequest:
        """Validate a deployment or transform and return it with the defaults SageMaker needs."""
        if isinstance(request, DeployRequest):
            if not self.find(ENDPOINT_CONFIG, request.EndpointConfigName):
                raise InvalidRequest("EndpointConfigName", f"no endpoint configuration named "
                                                           f"{request.EndpointConfigName!r}: register it first")
            return request
        if not isinstance(request, TransformRequest):
            raise TypeError(f"a {kind} job takes a deployment or a transform, not {type(request).__name__}")
        if not (self.find(MODEL, request.ModelName) or
                self._exists("describe_model", request.adapter, ModelName=request.ModelName)):
            raise InvalidRequest("ModelName", f"no model named {request.ModelName!r}")
        if not S3_URI.match(request.input_uri):
            raise InvalidRequest("TransformInput.DataSource.S3DataSource.S3Uri", "must be an s3:// URI")
        resources = {**(request.TransformResources or {})}
        if not resources.get("InstanceType"):
            raise MalformedRequest("TransformResources.InstanceType", "is required on SageMaker")
        resources.setdefault("InstanceCount", 1)
        output = {**(request.TransformOutput or {})}
        if not output.get("S3OutputPath"):
            if not self.config.s3_bucket:
                raise MalformedRequest("TransformOutput.S3OutputPath", "is required (or set EXECUTOR_S3_BUCKET)")
            key = v.s3_key(self.config.s3_prefix, "transform", request.TransformJobName)
            output["S3OutputPath"] = f"s3://{self.config.s3_bucket}/{key}"
        source = {**request.TransformInput["DataSource"]["S3DataSource"]}
        source.setdefault("S3DataType", "S3Prefix")
        transform_input = {**request.TransformInput, "DataSource": {**request.TransformInput["DataSource"],
                                                                    "S3DataSource": source}}
        return request.with_changes(TransformInput=transform_input, TransformResources=resources,
                                    TransformOutput=output)

    def run_record_job(self, ctx: JobReporter) -> Ran:
        """Start the endpoint creation or update, or the transform job; the monitor follows it."""
        if ctx.job.kind == ENDPOINT:
            return self._start_endpoint(ctx)
        return self._start_transform(ctx)

    def _start_endpoint(self, ctx: JobReporter) -> Ran:
        request = cast(DeployRequest, ctx.request)
        adapter, name, config_name = request.adapter, request.EndpointName, request.EndpointConfigName
        record = self.record(ENDPOINT_RECORD, name)
        current = self._exists("describe_endpoint", adapter, EndpointName=name)
        try:
            if current is None:
                self._call("EndpointName", "create_endpoint", adapter, EndpointName=name,
                           EndpointConfigName=config_name,
                           **({"Tags": tag_list(request.Tags)} if request.Tags else {}))
                action = "create"
            elif current["EndpointConfigName"] == config_name and current["EndpointStatus"] != FAILED:
                # Started before a restart: follow it instead of starting it twice.
                action = ctx.job.details.get("action") or "create"
            elif current["EndpointStatus"] in ENDPOINT_NON_TERMINAL_STATES:
                raise BackendError(f"endpoint {name} is {current['EndpointStatus']}; deploy again once it settles")
            else:
                self._call("EndpointName", "update_endpoint", adapter, EndpointName=name,
                           EndpointConfigName=config_name)
                action = "update"
        except (InvalidRequest, BackendError) as exc:
            reason = str(exc)
            if current is None:
                reason = self._fail_create(record, reason, adapter)
            else:
                self.update(record, None, target_config=None, failure_reason=reason)
            ctx.finish(JobStatus.ERROR, reason)
            return Ran.ENDED
        ctx.merge_details(action=action, previous_config=(current or {}).get("EndpointConfigName"))
        ctx.set_external_id(name)
        phase = CREATING if action == "create" else UPDATING
        ctx.set_phase(phase, f"{action} endpoint {name} with {config_name}")
        self.update(record, phase)
        return Ran.LAUNCHED

    def _start_transform(self, ctx: JobReporter) -> Ran:
        request = cast(TransformRequest, ctx.request)
        adapter, name = request.adapter, request.TransformJobName
        if self._exists("describe_transform_job", adapter, TransformJobName=name) is None:
            params = {key: value for key, value in public_request(request.to_stored()).items() if key != "Tags"}
            if request.Tags:
                params["Tags"] = tag_list(request.Tags)
            try:
                answer = self._call("TransformJobName", "create_transform_job", adapter, **params)
            except (InvalidRequest, BackendError) as exc:
                self.update(self.record(TRANSFORM_RECORD, name), FAILED, failure_reason=str(exc))
                ctx.finish(JobStatus.ERROR, str(exc))
                return Ran.ENDED
            self.update(self.record(TRANSFORM_RECORD, name), IN_PROGRESS, arn=answer.get("TransformJobArn"))
        ctx.set_external_id(name)
        ctx.set_phase("Transforming", f"transform job {name} started")
        return Ran.LAUNCHED

    def follow_record_jobs(self, reporters: list[JobReporter]) -> None:
        """Describe each deployment's endpoint and each transform job once; end the jobs that settled."""
        for ctx in reporters:
            job = ctx.job
            try:
                if job.kind == ENDPOINT:
                    self._follow_endpoint(job, ctx)
                elif job.kind == TRANSFORM:
                    self._follow_transform(job, ctx)
            except (InvalidRequest, BackendError, *AWS_ERRORS) as exc:
                # Throttling or a network blip: the next cycle asks again.
                logger.warning("job %s (%s): cannot follow %s: %s", job.id, job.kind, job.external_id, exc)

    def _follow_endpoint(self, job: Job, ctx: JobReporter) -> None:
        request = cast(DeployRequest, ctx.request)
        adapter, name, config_name = request.adapter, request.EndpointName, request.EndpointConfigName
        record = self.record(ENDPOINT_RECORD, name)
        action = job.details.get("action", "create")
        described = self._exists("describe_endpoint", adapter, EndpointName=name)
        if described is None:
            self.update(record, FAILED, exists=False, failure_reason="the endpoint was deleted while it was deployed")
            ctx.finish(JobStatus.ERROR, f"endpoint {name} disappeared while it was being deployed")
            return
        status = described["EndpointStatus"]
        reason = described.get("FailureReason")
        if status == IN_SERVICE and described.get("EndpointConfigName") == config_name:
            self.job_finished_endpoint(record, self.record(ENDPOINT_CONFIG, config_name), described)
            self.update(self.record(ENDPOINT_RECORD, name), None, arn=described.get("EndpointArn"))
            ctx.finish(JobStatus.COMPLETED)
        elif status == IN_SERVICE:
            # An update that failed: SageMaker rolled back and the old configuration still serves.
            old = described.get("EndpointConfigName")
            text = f"update to {config_name} failed ({reason or 'rolled back'}); the endpoint still serves {old}"
            self.update(record, IN_SERVICE, target_config=None, failure_reason=text, raw=described)
            ctx.finish(JobStatus.ERROR, text)
        elif status == FAILED and action == "create":
            ctx.finish(JobStatus.ERROR, self._fail_create(record, f"endpoint creation failed: {reason}", adapter))
        elif status in ENDPOINT_FAILED_STATES:
            self.update(record, status, target_config=None, failure_reason=reason, raw=described)
            ctx.finish(JobStatus.ERROR, f"endpoint {name} is {status}: {reason}")
        elif status != record.status:
            self.update(record, status, raw=described)
            ctx.set_phase(status)

    def _fail_create(self, record: Record, reason: str, adapter: str | None) -> str:
        """Delete what a failed creation left (the endpoint, its configuration); say what remains."""
        config_name = record.payload.get("target_config")
        deleted, remaining = [], [f"model {name}" for name in as_list(record.payload.get("model_names"))]
        steps = [("endpoint", record.name, "delete_endpoint", {"EndpointName": record.name})]
        if config_name and not set(self.endpoints_using("endpoint_config", config_name)) - {record.name}:
            steps.append(("endpoint configuration", config_name, "delete_endpoint_config",
                          {"EndpointConfigName": config_name}))
        for label, name, operation, params in steps:
            try:
                self._delete(operation, adapter, **params)
                deleted.append(f"{label} {name}")
                if label != "endpoint":
                    self.book.delete(self.record_id(ENDPOINT_CONFIG, name))
            except (InvalidRequest, BackendError, *AWS_ERRORS) as exc:
                remaining.append(f"{label} {name} (delete failed: {exc})")
        self.update(record, FAILED, exists=False, failure_reason=reason,
                    cleanup={"deleted": deleted, "remaining": remaining})
        return f"{reason}; removed: {', '.join(deleted) or 'nothing'}; remaining: {', '.join(remaining) or 'nothing'}"

    def _follow_transform(self, job: Job, ctx: JobReporter) -> None:
        request = cast(TransformRequest, ctx.request)
        name = request.TransformJobName
        record = self.record(TRANSFORM_RECORD, name)
        described = self._exists("describe_transform_job", request.adapter, TransformJobName=name)
        if described is None:
            self.update(record, FAILED, failure_reason="the transform job is gone")
            ctx.finish(JobStatus.ERROR, f"transform job {name} is gone")
            return
        status = described["TransformJobStatus"]
        artifacts = {"S3OutputPath": described.get("TransformOutput", {}).get("S3OutputPath")}
        if status == COMPLETED:
            self.update(record, status, raw=described, artifacts=artifacts)
            ctx.set_artifacts(artifacts)
            ctx.finish(JobStatus.COMPLETED)
        elif status == FAILED:
            reason = described.get("FailureReason") or "the transform job failed"
            self.update(record, status, raw=described, failure_reason=reason)
            ctx.finish(JobStatus.ERROR, reason)
        elif status == STOPPED:
            self.update(record, status, raw=described)
            ctx.finish(JobStatus.CANCELLED, message="stopped at the user's request")
        elif status != record.status:
            self.update(record, status, raw=described)

    def cancel_record_job(self, job: Job) -> Stop:
        """Stop a transform job (once); an endpoint deployment cannot be stopped, only deleted later."""
        if job.kind != TRANSFORM:
            return Stop.NOTHING
        if not job.external_id:
            return Stop.REQUESTED  # run() sees the cancel flag before it starts the transform
        adapter = TransformRequest.from_stored(job.request).adapter
        described = self._exists("describe_transform_job", adapter, TransformJobName=job.external_id)
        if described is None:
            return Stop.NOTHING
        if described["TransformJobStatus"] in TRANSFORM_STATES.stoppable_states:
            self._call("TransformJobName", "stop_transform_job", adapter, TransformJobName=job.external_id)
        return (Stop.REQUESTED if described["TransformJobStatus"] in TRANSFORM_STATES.non_terminal_states
                else Stop.NOTHING)

    # -- datasets --------------------------------------------------------------------------------

    def upload_dataset(self, bucket: str | None, key: str, stream: BinaryIO, filename: str | None,
                       origin: dict[str, Any], description: str = "") -> Record:
        """Put an uploaded file into S3 (managed multipart for large files) and record it."""
        bucket, key, original = self.dataset_key(bucket or self.config.s3_bucket, key, filename)
        s3 = self.clients.client("s3", origin.get("adapter"))
        try:
            s3.upload_fileobj(stream, bucket, key)
            head = s3.head_object(Bucket=bucket, Key=key)
        except AWS_ERRORS as exc:
            refused = aws_error(exc, "Bucket", "PutObject")
            if isinstance(refused, NotFound):
                raise NotFound("Bucket", f"no bucket {bucket!r}") from None
            if isinstance(refused, AccessDenied):
                raise AccessDenied("Bucket", f"the executor may not write to {bucket!r}") from None
            raise BackendError(f"cannot upload to s3://{bucket}/{key}: {error_text(exc)}") from exc
        head.pop("ResponseMetadata", None)
        return self.put(DATASET, f"{bucket}/{key}", "Available", {
            **origin, "description": description, "bucket": bucket, "key": key, "original_key": original,
            "arn": f"s3://{bucket}/{key}",
            "artifacts": {"S3Uri": f"s3://{bucket}/{key}", "size": head.get("ContentLength")},
            "raw": {"Bucket": bucket, "Key": key, **head}})

    def delete_dataset(self, name: str, adapter: str | None = None) -> None:
        record = self.record(DATASET, name)
        try:
            self.clients.client("s3", adapter).delete_object(Bucket=record.payload["bucket"],
                                                             Key=record.payload["key"])
        except AWS_ERRORS as exc:
            raise BackendError(f"cannot delete s3://{record.payload['bucket']}/{record.payload['key']}: "
                               f"{error_text(exc)}") from exc
        self.book.delete(record.id)

    # -- exports ---------------------------------------------------------------------------------

    def export(self, record: Record, body: dict[str, Any], adapter: str | None = None) -> dict[str, Any]:
        """Presign the record's S3 objects, or copy them under an S3 prefix of a bucket exports may write."""
        s3 = self.clients.client("s3", adapter)
        sources = [self._s3_object(s3, uri) for uri in self._export_uris(record)]
        answer: dict[str, Any] = {"id": record.name, "type": record.type}
        if body.get("S3Uri"):
            return {**answer, "format": "s3", "files": self._copy(s3, sources, body["S3Uri"])}
        expires = body.get("ExpiresIn", PRESIGN_SECONDS)
        files = [{"S3Uri": f"s3://{bucket}/{key}", "size": size,
                  "url": s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key},
                                                   ExpiresIn=expires)}
                 for bucket, key, size in sources]
        return {**answer, "format": "presigned-url", "expiresIn": expires, "files": files}

    def export_file(self, record: Record) -> Any:
        raise NotSupported("id", "on SageMaker an export is a presigned URL or an S3 copy: POST .../export")

    @staticmethod
    def _export_uris(record: Record) -> list[str]:
        artifacts = record.payload.get("artifacts") or {}
        if record.type == DATASET:
            uris = [artifacts.get("S3Uri")]
        elif record.type == MODEL:
            uris = as_list(artifacts.get("ModelDataUrl"))
        else:
            raise NotSupported("id", f"a {record.type.replace('_', ' ')} has nothing to export")
        found = [uri for uri in uris if uri and S3_URI.match(uri)]
        if not found:
            raise NotSupported("id", f"{record.type} {record.name!r} has no object in S3 to export")
        return found

    @staticmethod
    def _s3_object(s3: Any, uri: str) -> tuple[str, str, int]:
        match = S3_URI.match(uri)
        assert match is not None
        bucket, key = match.group(1), match.group(2) or ""
        try:
            return bucket, key, s3.head_object(Bucket=bucket, Key=key)["ContentLength"]
        except AWS_ERRORS as exc:
            if error_code(exc) in ("404", "NoSuchKey", "NotFound", "NoSuchBucket"):
                raise NotFound("id", f"{uri} is gone") from None
            raise BackendError(f"cannot read {uri}: {error_text(exc)}") from exc

    def _copy(self, s3: Any, sources: list[tuple[str, str, int]], destination: str) -> list[dict[str, Any]]:
        match = S3_URI.match(destination)
        assert match is not None
        bucket, prefix = match.group(1), (match.group(2) or "").strip("/")
        allowed = {self.config.s3_bucket} | {item.strip() for item in self.config.export_buckets.split(",")}
        if bucket not in allowed - {None, ""}:
            raise InvalidRequest("S3Uri", f"the executor exports only into EXECUTOR_S3_BUCKET or "
                                          f"EXECUTOR_EXPORT_BUCKETS, not {bucket!r}")
        copies = []
        for source_bucket, key, size in sources:
            target = "/".join(filter(None, [prefix, key.rsplit("/", 1)[-1]]))
            try:
                # Managed copy: server-side, in parts above 8 MB, so objects over 5 GB copy too.
                s3.copy({"Bucket": source_bucket, "Key": key}, bucket, target)
            except AWS_ERRORS as exc:
                if error_code(exc) in ("AccessDenied", "403"):
                    raise AccessDenied("S3Uri", f"the executor may not write to s3://{bucket}/{target}") from None
                raise BackendError(f"cannot copy s3://{source_bucket}/{key}: {error_text(exc)}") from exc
            copies.append({"from": f"s3://{source_bucket}/{key}", "S3Uri": f"s3://{bucket}/{target}", "size": size})
        return copies


def _model_error(endpoint: str, exc: Exception) -> Exception:
    """Turn InvokeEndpoint's ModelError into the caller's refusal or the model's failure, by the model's status."""
    # botocore puts a modeled error's members beside "Error" in the response
    # (botocore/endpoint.py, Endpoint._add_modeled_error_fields).
    response: dict[str, Any] = getattr(exc, "response", None) or {}
    status = response.get("OriginalStatusCode")
    # The model's own words, their first line: SageMaker's inference toolkit appends the container's
    # traceback to the message it answers (sagemaker-inference-toolkit, transformer.py handle_error),
    # and SageMaker's own Message adds a console link and the account id, for the operator only.
    original = (response.get("OriginalMessage") or "").strip()
    words = original.splitlines()[0] if original else "the model gave no message"
    refusal = REFUSALS_BY_MODEL_STATUS.get(status) if isinstance(status, int) else None
    if refusal is not None:
        error_class, field = refusal
        return error_class(field, words)
    logger.warning("endpoint %s: the model failed with status %s; its log stream: %s", endpoint, status,
                   response.get("LogStreamArn") or "not named")
    return BackendError(f"endpoint {endpoint!r}: the model failed ({status or 'no status'}): {words}")
