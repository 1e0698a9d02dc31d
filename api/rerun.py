"""Rerun: queue a job's stored request again as a new job, with its secrets still sealed or sent anew."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request, url_for

from api import schemas
from api.docs import documented
from api.views import executor, find_job
from job import PIPELINE, TRAINING, Job
from job_secrets import BOUND_TO
from mlops.errors import Conflict, InvalidRequest, MalformedRequest
from mlops.job_requests import JobRequest, PipelineRequest, request_of
from mlops.staging import local_inputs_digest
from mlops.tuning import TRIAL_PLATFORM_JOB

blueprint = Blueprint("rerun", __name__)

RERUN = {
    "title": "Rerun",
    "description": "Optional. The secrets of a job are erased when it ends: a pipeline that needs them "
                   "(storage other than local, or environment variables) is rerun with them sent again. "
                   "A rerun with an empty body of a job that still holds its secrets gets them only when it "
                   "runs the very files the job ran (422 naming the secrets to send otherwise).",
    "type": "object",
    "additionalProperties": False,
    "properties": {key: schemas.EXECUTE["properties"][key] for key in ("credentials", "environment", "configs")},
}
RERUNNABLE = (PIPELINE, TRAINING)


def secrets_for_rerun(job: Job, request: JobRequest, sent: dict[str, Any]) -> dict[str, Any]:
    """Return the secrets the new run gets: those sent, else those the job still holds, else none if it needs none."""
    sealed = executor().store.secrets(job.id)
    if not sent and sealed is not None:
        return inherited_secrets(job, request, executor().secret_box.open(sealed))
    if not isinstance(request, PipelineRequest):
        return {}
    needed = [name for name, needs in (("credentials", request.storage != "local"),
                                        ("environment", bool(request.environment_keys))) if needs]
    missing = [name for name in needed if not sent.get(name)]
    if missing:
        raise Conflict(missing[0], f"this job's {' and '.join(missing)} were erased when it ended; "
                                   "send them in the rerun body")
    _, secrets = PipelineRequest.from_body({**request.to_stored(), "credentials": sent.get("credentials") or {},
                                            "environment": sent.get("environment"), "configs": sent.get("configs")})
    return secrets


def inherited_secrets(job: Job, request: JobRequest, secrets: dict[str, Any]) -> dict[str, Any]:
    """Return a job's secrets bound to the files it ran; 422 naming them when the rerun would run other files.

    A job that can write where another job's files come from must not get that job's secrets by
    rerunning it: the secrets go only to files byte-identical to those the original staged (its
    details' staged_sha256). Files in local storage are compared now (up to REQUEST_DIGEST_BYTES);
    all of them again when the rerun stages them, which then ends ERROR before anything runs.
    """
    names = sorted(name for name, value in secrets.items() if value and name != BOUND_TO)
    ran = job.details.get("staged_sha256")
    if ran is None:
        reason = f"job {job.id} has not staged its files yet, so what a rerun runs cannot be matched to them"
    elif isinstance(request, PipelineRequest) and local_inputs_digest(request, executor().config) not in (None, ran):
        reason = f"the files under input_artifacts changed since job {job.id} ran them"
    else:
        return {**secrets, BOUND_TO: ran}
    raise InvalidRequest("body", f"{reason}: its {' and '.join(names)} are handed only to the files it ran; "
                                 "send them anew in the rerun body", secrets=names)


@blueprint.post("/api/jobs/<job_id>/rerun")
@documented(RERUN, status=202, response_schema=schemas.ACCEPTED, optional_body=True)
def rerun(job_id: str):
    """Queue a job's request again as a new job (pipelines and training)."""
    job = find_job(job_id)
    if job.kind not in RERUNNABLE:
        raise InvalidRequest("job_id", f"a {job.kind} job is rerun through its own route, not here")
    sent = schemas.json_body(RERUN) if request.get_data(cache=True) else {}
    if sent and job.kind != PIPELINE:
        raise MalformedRequest("body", "only a pipeline takes secrets; rerun a training job with an empty body")
    # A tuning's trial run again is a training of its own: not one of the tuning's trials, nor the
    # platform's job that trial followed.
    asked = request_of(job.kind, job.request)
    again = asked.without("parent", "trial", TRIAL_PLATFORM_JOB)
    new = executor().queue.submit(job.kind, again, secrets_for_rerun(job, asked, sent))
    executor().store.merge_details(new.id, rerun_of=job.id)
    status_url = url_for("training.status", job_id=new.id)
    return jsonify(job_id=new.id, status=new.status.value, phase=new.phase, status_url=status_url,
                   log_url=url_for("execute.get_log", task_id=new.id), rerun_of=job.id), 202, \
        {"Location": status_url}
