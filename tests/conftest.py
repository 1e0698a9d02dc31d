"""Fixtures: a fresh app per test on a temporary data folder, a real waitress server, a real service process."""
from __future__ import annotations

import functools
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aws_request_check  # noqa: E402

# Before anything makes a botocore session: every session copies the handler list when it is made.
aws_request_check.install()

from app import create_app, stop_server  # noqa: E402

SERVING_LINE = re.compile(r"serving on http://([^:\s]+):(\d+)")


def pipeline_body(input_artifacts: str, command: str, **changes: Any) -> dict[str, Any]:
    """Return a valid POST /execute body for a pipeline in the local storage root."""
    body = {
        "bucket": "essedum-bucket",
        "project_id": "Demo",
        "name": "pipe1",
        "version": "3",
        "credentials": {"endpoint": "https://s3.us-east-1.amazonaws.com", "access_key": "AKIAEXAMPLEKEY123",
                        "secret_key": "s3cr3t-Value-Never-Shown"},
        "input_artifacts": input_artifacts,
        "command": command,
        "storage": "local",
    }
    body.update(changes)
    return body


def write_pipeline(storage_root: Path, folder: str, script: str, name: str = "pipe1.py") -> str:
    """Write a pipeline script under the storage root and return its input_artifacts path."""
    target = storage_root / folder
    target.mkdir(parents=True, exist_ok=True)
    (target / name).write_text(script, encoding="utf-8")
    return folder


@pytest.fixture(autouse=True)
def aws_requests_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fail the test when any AWS request it caused (here or in a child process) AWS would refuse."""
    site = str(ROOT / "tests" / "request_check_site")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [site, os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv(aws_request_check.LOG_ENV, str(tmp_path / "aws-refusals.jsonl"))
    aws_request_check.take_refusals()
    yield
    refusals = aws_request_check.take_refusals()
    assert not refusals, "requests AWS would refuse:\n" + "\n".join(refusals)


@functools.cache
def job_cgroup_root() -> Any:
    """Return where executors here make their jobs' cgroups (a root of any prefix), or None without cgroups."""
    from config import load_config
    from mlops.local.limits import detect

    return detect(load_config(environ={}, overrides={"data_dir": tempfile.gettempdir()})).root


@pytest.fixture(autouse=True)
def job_cgroups_removed(tmp_path: Path) -> Iterator[None]:
    """After the test, remove the job cgroups that executors it killed left for the data folders under tmp_path.

    An executor removes them at its next start on the folder (Confinement.sweep_leftovers); a test that kills
    one (SIGKILL, as a crash) never starts it there again, and they would outlive the test run, one per job.
    """
    yield
    root = job_cgroup_root()
    if root is None:
        return
    from mlops.local.limits import CgroupRoot, cgroup_prefix

    # A data folder is the test's folder, or one or two levels below it (data/, service-data/, a/data/).
    top = tmp_path.resolve()
    children = subfolders(top)
    for folder in [top, *children, *(grandchild for child in children for grandchild in subfolders(child))]:
        for cgroup in CgroupRoot(root.version, root.parents, cgroup_prefix(folder)).leftovers():
            cgroup.remove()


def subfolders(folder: Path) -> list[Path]:
    """Return a folder's subfolders (links not followed); none where it is gone or cannot be read."""
    try:
        with os.scandir(folder) as entries:
            return [Path(entry.path) for entry in entries if entry.is_dir(follow_symlinks=False)]
    except OSError:
        return []


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture
def make_app(data_dir: Path) -> Iterator[Callable[..., Any]]:
    """Build apps on the test's data folder; their queues are stopped afterwards."""
    apps = []

    def factory(**overrides: Any):
        settings = {"data_dir": str(data_dir), "workers": "2", "shutdown_timeout": "5", **overrides}
        app = create_app(settings)
        apps.append(app)
        return app

    yield factory
    for app in apps:
        executor = app.config["EXECUTOR"]
        if executor.queue.started:
            executor.queue.stop(timeout=5)
        executor.store.close()


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


class LiveServer:
    """A real waitress server on a free loopback port, running the app and its queue."""

    def __init__(self, app):
        from waitress.server import create_server

        self.app = app
        self.executor = app.config["EXECUTOR"]
        self.executor.queue.start()
        self.server = create_server(app, host="127.0.0.1", port=0, threads=self.executor.config.http_threads)
        self.url = f"http://127.0.0.1:{self.server.effective_port}"
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()

    @property
    def storage_root(self) -> Path:
        return self.executor.config.storage_root

    def request(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
                raw: bytes | None = None, content_type: str = "application/json") -> tuple[int, Any]:
        return http_request(self.url, method, path, body, headers, raw, content_type=content_type)

    def upload(self, path: str, fields: dict[str, str], files: list[tuple[str, str, bytes, str]]) -> tuple[int, Any]:
        """POST a multipart form: fields, and files as (field, filename, content, content type)."""
        boundary = uuid.uuid4().hex
        parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
                 for name, value in fields.items()]
        for name, filename, content, kind in files:
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                         f"Content-Type: {kind}\r\n\r\n".encode() + content + b"\r\n")
        parts.append(f"--{boundary}--\r\n".encode())
        return self.request("POST", path, raw=b"".join(parts), content_type=f"multipart/form-data; boundary={boundary}")

    def wait(self, path: str, done: Callable[[Any], bool], timeout: float = 60) -> Any:
        """Poll a GET route until done(body) holds; fail the test after timeout seconds."""
        return wait_for(lambda: (answer := self.request("GET", path))[0] == 200 and done(answer[1]) and answer[1],
                        timeout=timeout, interval=0.1)

    def close(self) -> None:
        stop_server(self.server, self.thread)
        self.executor.queue.stop(timeout=5)


def http_request(base: str, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
                 raw: bytes | None = None, timeout: float = 60, content_type: str = "application/json") -> tuple[int, Any]:
    """Send one HTTP request and return (status, parsed JSON or text)."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(base + path, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", content_type)
    for key, value in (headers or {}).items():
        request.add_header(key, value)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, payload = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, payload = error.code, error.read()
    try:
        return status, json.loads(payload)
    except ValueError:
        return status, payload.decode(errors="replace")


@pytest.fixture
def live_server(make_app) -> Iterator[Callable[..., LiveServer]]:
    servers: list[LiveServer] = []

    def start(**overrides: Any) -> LiveServer:
        server = LiveServer(make_app(**overrides))
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


class ServiceProcess:
    """The executor started as `python app.py`, exactly as a user or a service manager starts it."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None, args: list[str] | None = None):
        full_env = {**os.environ, **(env or {})}
        self.process = subprocess.Popen(
            [sys.executable, "app.py", "--port", "0", "--data-dir", str(data_dir), *(args or [])],
            cwd=ROOT, env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.url = self._wait_for_port()
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _wait_for_port(self, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        assert self.process.stderr is not None
        while time.monotonic() < deadline:
            line = self.process.stderr.readline()
            if not line and self.process.poll() is not None:
                raise RuntimeError("service exited: " + "".join(self.lines))
            self.lines.append(line)
            match = SERVING_LINE.search(line)
            if match:
                return f"http://{match.group(1)}:{match.group(2)}"
        raise RuntimeError("service did not report its port: " + "".join(self.lines))

    def _drain(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)

    def request(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None):
        return http_request(self.url, method, path, body, headers)

    def kill(self) -> None:
        """Kill the service with SIGKILL, as a crash or an OOM kill would."""
        self.process.kill()
        self.process.wait(timeout=10)

    def terminate(self, timeout: float = 60) -> int:
        """Ask the service to stop (SIGTERM) and return its exit code."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Callable[..., ServiceProcess]]:
    processes: list[ServiceProcess] = []

    def start(data_dir: Path, **kwargs: Any) -> ServiceProcess:
        proc = ServiceProcess(data_dir, **kwargs)
        processes.append(proc)
        return proc

    yield start
    for proc in processes:
        if proc.process.poll() is None:
            proc.kill()
        proc._reader.join(timeout=5)
        proc.process.stderr.close()


def wait_for(predicate: Callable[[], Any], timeout: float = 30, interval: float = 0.05) -> Any:
    """Poll until predicate returns a truthy value; fail the test after timeout seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


# The task_status values of a job that has ended.
FINAL_STATUSES = frozenset({"COMPLETED", "ERROR", "CANCELLED"})


def wait_final(server, job_id: str, timeout: float = 60) -> dict[str, Any]:
    """Poll getStatus until the job ends; return the last status body."""
    def done():
        status, body = server.request("GET", f"/execute/{job_id}/getStatus")
        return body if status == 200 and body["task_status"] in FINAL_STATUSES else None

    return wait_for(done, timeout=timeout, interval=0.1)


@pytest.fixture(scope="session")
def postgres_cluster():
    """A throwaway PostgreSQL cluster for the session (Debian's initdb and pg_ctl as an unprivileged user)."""
    from postgres_cluster import ClusterUnavailable, PostgresCluster

    try:
        cluster = PostgresCluster()
    except ClusterUnavailable as exc:
        pytest.skip(f"no PostgreSQL cluster: {exc}")
    yield cluster
    cluster.stop()
