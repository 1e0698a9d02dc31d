"""A client of the executor's HTTP API (standard library only); `python -m executor_client --help`."""
from __future__ import annotations

import json
import mimetypes
import os
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import IO, Any, Sequence

MLOPS = "/api/service/v1"


class ExecutorError(Exception):
    """The executor answered with an error, or could not be reached."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # A redirect could send the token, or the pipeline's credentials, to another server.
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001
        raise urllib.error.HTTPError(req.full_url, code, f"refusing to follow a redirect to {newurl}", headers, fp)


class Client:
    """Talks to one executor, and only to it: paths are joined to its URL and redirects are refused."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 30):
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"the executor URL must be http(s)://host[:port], not {url!r}")
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self._opener = urllib.request.build_opener(_NoRedirects())

    def request(self, method: str, path: str, body: Any = None, query: dict[str, Any] | None = None,
                form: tuple[bytes, str] | None = None) -> Any:
        """Send one request to the executor and return its JSON answer; raise ExecutorError for an error."""
        with self.open(method, path, body, query, form) as response:
            return json.loads(response.read() or b"null")

    def open(self, method: str, path: str, body: Any = None, query: dict[str, Any] | None = None,
             form: tuple[bytes, str] | None = None) -> IO[bytes]:
        """Send one request (a JSON body, or a form's bytes and content type) and return the open answer to read."""
        params = {key: value for key, value in (query or {}).items() if value is not None}
        url = self.url + path + (f"?{urllib.parse.urlencode(params)}" if params else "")
        data, content_type = form if form else (None if body is None else json.dumps(body).encode("utf-8"),
                                                "application/json")
        request = urllib.request.Request(url, data=data, method=method, headers={"Accept": "application/json"})
        if data is not None:
            request.add_header("Content-Type", content_type)
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            return self._opener.open(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            raise ExecutorError(f"{method} {path}: HTTP {exc.code}: {_error_text(exc)}", exc.code) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ExecutorError(f"cannot reach the executor at {self.url}: {reason}") from None

    def submit(self, pipeline: dict[str, Any]) -> dict[str, Any]:
        """Submit a pipeline (the body of POST /execute)."""
        return self.request("POST", "/execute", pipeline)

    def train(self, training: dict[str, Any]) -> dict[str, Any]:
        """Submit a training job (the body of POST /api/service/v1/pipelines/training)."""
        return self.request("POST", "/api/service/v1/pipelines/training", training)

    def tune(self, tuning: dict[str, Any]) -> dict[str, Any]:
        """Submit a tuning (the body of POST /api/service/v1/pipelines/tuning)."""
        return self.request("POST", "/api/service/v1/pipelines/tuning", tuning)

    def rerun(self, job_id: str, secrets: dict[str, Any] | None = None) -> dict[str, Any]:
        """Queue a job's request again as a new job; a pipeline whose secrets were erased needs them again."""
        return self.request("POST", f"/api/jobs/{_segment(job_id)}/rerun", secrets or None)

    def job(self, job_id: str) -> dict[str, Any]:
        """Return a job with its request, metric history, files and the tail of its log."""
        return self.request("GET", f"/api/jobs/{_segment(job_id)}")

    def download(self, job_id: str, name: str | None = None) -> IO[bytes]:
        """Open one output file of a job (a path under model/ or output/), or its model as model.tar.gz."""
        if name is None:
            return self.open("GET", f"/api/jobs/{_segment(job_id)}/model.tar.gz")
        return self.open("GET", f"/api/jobs/{_segment(job_id)}/files/{urllib.parse.quote(name)}")

    def status(self, job_id: str) -> dict[str, Any]:
        """Return a job's status, phase, progress and latest metrics."""
        return self.request("GET", f"/status/{_segment(job_id)}")

    def log(self, job_id: str) -> str:
        """Return a job's log (its last 5 MiB)."""
        return self.request("GET", f"/execute/{_segment(job_id)}/getLog")["logs"]["content"]

    def cancel(self, job_id: str) -> bool:
        """Ask the executor to stop a job; True when it was cancelled or is stopping."""
        return bool(self.request("POST", f"/execute/{_segment(job_id)}/stop")["Task cancelled"])

    def register_model(self, name: str, training_job_id: str) -> dict[str, Any]:
        """Register the model of a finished training job (its id or a unique beginning of it)."""
        return self.request("POST", f"{MLOPS}/models/register", {"ModelName": name, "TrainingJobId": training_job_id})

    def deploy(self, model: str, endpoint: str, instance_type: str | None = None) -> dict[str, Any]:
        """Create the endpoint configuration `<endpoint>-config` for a model and deploy the endpoint (a queued job)."""
        config = {"ModelName": model, "EndpointConfigName": f"{endpoint}-config",
                  **({"InstanceType": instance_type} if instance_type else {})}
        self.request("POST", f"{MLOPS}/endpoints/register", config)
        return self.request("POST", f"{MLOPS}/endpoints/{_segment(endpoint)}/deploy_model",
                            {"EndpointConfigName": f"{endpoint}-config"})

    def endpoint(self, name: str) -> dict[str, Any]:
        """Return an endpoint's (or endpoint configuration's) record."""
        return self.request("GET", f"{MLOPS}/endpoints/{_segment(name)}/get")

    def infer(self, endpoint: str, images: Sequence[str] = (), payload: Any = None, explain: bool = False) -> Any:
        """Send image files (multipart) or a JSON payload to an endpoint; return its predictions or explanation."""
        path = f"{MLOPS}/endpoints/{_segment(endpoint)}/{'explain' if explain else 'infer'}"
        if images:
            return self.request("POST", path, form=multipart_files("file", images))
        return self.request("POST", path, payload)

    def transform(self, name: str, model: str, source: str) -> dict[str, Any]:
        """Start batch inference over a file or folder (storage-root path or s3:// URI); a queued job."""
        return self.request("POST", f"{MLOPS}/pipelines/inference", {
            "TransformJobName": name, "ModelName": model,
            "TransformInput": {"DataSource": {"S3DataSource": {"S3Uri": source}}}})

    def transform_record(self, name: str) -> dict[str, Any]:
        """Return a batch inference job's record."""
        return self.request("GET", f"{MLOPS}/pipelines/inference/{_segment(name)}/get")

    def undeploy(self, endpoint: str) -> dict[str, Any]:
        """Take an endpoint down, keeping its configuration and models."""
        return self.request("POST", f"{MLOPS}/endpoints/{_segment(endpoint)}/undeploy_models")

    def jobs(self, status: str | None = None, kind: str | None = None, limit: int = 50,
             name: str | None = None) -> list[dict[str, Any]]:
        """List jobs newest first, optionally only those whose name contains `name`."""
        query = {"status": status, "kind": kind, "limit": limit, "name": name}
        return self.request("GET", "/api/jobs", query=query)["jobs"]


def multipart_files(field: str, paths: Sequence[str]) -> tuple[bytes, str]:
    """Return a multipart/form-data body with each file in `field`, and its content type."""
    boundary = uuid.uuid4().hex
    parts = []
    for path in paths:
        with open(path, "rb") as handle:
            content = handle.read()
        # The name only labels the part: quotes and line breaks would end the header early.
        filename = "".join(char for char in os.path.basename(path) if char not in '"\r\n\\')
        kind = mimetypes.guess_type(path)[0] or "application/octet-stream"
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
                     f"Content-Type: {kind}\r\n\r\n".encode() + content + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def _segment(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _error_text(exc: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(exc.read() or b"{}")
    except ValueError:
        return exc.reason if isinstance(exc.reason, str) else str(exc.reason)
    if isinstance(body, dict) and body.get("error"):
        return str(body["error"])
    return exc.reason if isinstance(exc.reason, str) else str(exc.reason)
