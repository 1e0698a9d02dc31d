"""Models served out of the executor's process: each in a sandboxed worker, asked over a pipe.

A model's inference.py is user code. In the executor's own process one `os._exit` would end the
service and one patched `hmac.compare_digest` would turn authentication off; in a worker process
of its own it can only end or corrupt that worker, which is then started again (a bounded number
of times in a row) while the executor answers with the reason.

bubblewrap ends a worker with the thread that started it (--die-with-parent acts per thread): the
queue's workers and waitress's threads live as long as the executor, and a worker ended early is
started again at the next request, like one that crashed.
"""
from __future__ import annotations

import collections
import logging
import os
import subprocess
import threading
from pathlib import Path
from typing import Any

from mlops.errors import BackendError
from mlops.local import model_worker
from mlops.local.limits import Confinement
from mlops.local.processes import PRIVATE_UMASK, ProcessTree
from mlops.sandbox import Sandbox

logger = logging.getLogger(__name__)

WORKER_SCRIPT = Path(model_worker.__file__).resolve()
LOAD_TIMEOUT_S = 300.0
# SageMaker gives a real-time invocation 60 seconds.
INVOKE_TIMEOUT_S = 60.0
# Crashes in a row after which a worker is no longer started again (until the model is deployed again).
MAX_RESTARTS = 3
STDERR_TAIL_BYTES = 4000


class ModelFailure(BackendError):
    """The model failed (at load, at predict, or by crashing its worker); the text says how."""


class ModelRequestRefused(Exception):
    """The model refused the request; `kind` is "input", "accept" or "too_large"."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class ModelWorker:
    """One model loaded in its own sandboxed process; one request at a time."""

    def __init__(self, sandbox: Sandbox, python: str, model_dir: Path, marker: str,
                 confinement: Confinement | None = None):
        self.sandbox = sandbox
        self.confinement = confinement
        self._uid: int | None = None
        self.python = python
        self.model_dir = model_dir
        self.marker = marker
        self._tree: ProcessTree | None = None
        self._stderr_reader: threading.Thread | None = None
        self._stderr: collections.deque[bytes] = collections.deque()
        self._crashes = 0
        self._last_crash = ""
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the worker and load the model; raise ModelFailure with the reason when it cannot."""
        with self._lock:
            self._start()

    def invoke(self, body: bytes, content_type: str, accept: str) -> tuple[bytes, str]:
        """Run the model on one request and return (answer, content type)."""
        header, answer = self.call("invoke", {"content_type": content_type, "accept": accept}, body)
        return answer, header.get("content_type") or "application/json"

    def call(self, operation: str, header: dict[str, Any], body: bytes = b"",
             timeout: float = INVOKE_TIMEOUT_S) -> tuple[dict[str, Any], bytes]:
        """Ask the worker for one operation (model_worker.OPERATIONS), starting it again after a crash."""
        with self._lock:
            if self._tree is None or self._tree.popen.poll() is not None:
                if self._crashes >= MAX_RESTARTS:
                    raise ModelFailure(f"the model's worker crashed {self._crashes} times in a row and is not "
                                       f"started again until the model is deployed again; last: {self._last_crash}")
                logger.warning("model worker %s: starting it again after a crash", self.marker)
                self._start()
            return self._exchange(operation, header, body, timeout)

    def close(self) -> None:
        """End the worker and everything it started."""
        with self._lock:
            self._end_tree()

    def _end_tree(self) -> None:
        """End the worker's tree (its cgroup with it) and give its uid back."""
        if self._tree is not None:
            self._tree.kill()
            self._tree.wait()
            self._tree = None
        if self.confinement is not None:
            self.confinement.uids.release(self._uid)
        self._uid = None

    def _start(self) -> None:
        self._end_tree()
        # A uid of its own (root only), as a job has: no job nor other worker can signal or read it.
        if self.confinement is not None and self.sandbox.identity is not None:
            self._uid = self.confinement.uids.lease()
        sandbox = self.sandbox.as_user(self._uid)
        sandbox.hand_over(self.model_dir)
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8",
               "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}
        if os.name == "nt":
            env.update({key: os.environ[key] for key in ("SYSTEMROOT", "TEMP", "TMP") if key in os.environ})
        self._stderr.clear()
        self._tree = ProcessTree(sandbox, [self.python, "-I", str(WORKER_SCRIPT)], cwd=self.model_dir,
                                 env=env, marker=self.marker, readable=[self.model_dir, WORKER_SCRIPT],
                                 stdin=subprocess.PIPE, stderr=subprocess.PIPE, confinement=self.confinement,
                                 umask=PRIVATE_UMASK)
        self._stderr_reader = threading.Thread(target=self._keep_stderr, args=(self._tree.popen.stderr,),
                                               name=f"model-stderr-{self.marker[:12]}", daemon=True)
        self._stderr_reader.start()
        try:
            self._exchange("load", {"model_dir": str(self.model_dir)}, b"", LOAD_TIMEOUT_S)
        except ModelFailure:
            if self._tree is not None:
                # Loaded nothing: a worker without its model serves no one.
                self._end_tree()
                self._crashes += 1
            raise

    def _exchange(self, operation: str, header: dict[str, Any], body: bytes,
                  timeout: float) -> tuple[dict[str, Any], bytes]:
        tree = self._tree
        assert tree is not None and tree.popen.stdin is not None and tree.popen.stdout is not None
        timed_out = threading.Event()
        # A crash's reason is what the model wrote during this request, not before it.
        self._stderr.clear()

        def expire() -> None:
            timed_out.set()
            tree.kill()

        timer = threading.Timer(timeout, expire)
        timer.daemon = True
        timer.start()
        try:
            model_worker.write_frame(tree.popen.stdin, {"op": operation, **header}, body)
            frame = model_worker.read_frame(tree.popen.stdout)
        except (OSError, ValueError):
            frame = None
        finally:
            timer.cancel()
        if frame is None or not isinstance(frame[0], dict):
            raise self._crashed(operation, timeout if timed_out.is_set() else None)
        reply, answer = frame
        if reply.get("ok"):
            if operation != "load":
                self._crashes = 0
            return reply, answer
        message = str(reply.get("message", "no reason given"))
        if reply.get("kind") in ("input", "accept", "too_large"):
            raise ModelRequestRefused(reply["kind"], message)
        raise ModelFailure(f"{operation} failed in the model's code: {message}")

    def _crashed(self, operation: str, timeout: float | None) -> ModelFailure:
        tree = self._tree
        assert tree is not None
        tree.kill()
        code = tree.popen.wait()
        # The pipe closes with the process: what it wrote last is then read.
        if self._stderr_reader is not None:
            self._stderr_reader.join(timeout=2)
        reached = tree.limit_reached()
        self._end_tree()
        self._crashes += 1
        how = f"took longer than {timeout:g} s and was stopped" if timeout is not None else (
            f"was killed: {reached}" if reached else f"exited with code {code}")
        self._last_crash = f"the model's worker {how} during {operation}{self._stderr_tail(': ')}"
        logger.warning("model worker %s: %s", self.marker, self._last_crash)
        return ModelFailure(self._last_crash)

    def _keep_stderr(self, stream: Any) -> None:
        """Keep the last bytes of what the model wrote to stderr, for failure reasons."""
        for chunk in iter(lambda: stream.read1(4096), b""):
            self._stderr.append(chunk)
            # Measured each time: a request clears the deque from another thread.
            while len(self._stderr) > 1 and sum(map(len, self._stderr)) > STDERR_TAIL_BYTES:
                self._stderr.popleft()

    def _stderr_tail(self, separator: str) -> str:
        text = b"".join(self._stderr).decode("utf-8", errors="replace")[-STDERR_TAIL_BYTES:].strip()
        lines = [line for line in text.splitlines() if line.strip()][-5:]
        return separator + " | ".join(lines) if lines else ""

