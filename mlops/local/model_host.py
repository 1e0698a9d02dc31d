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
import time
from pathlib import Path
from typing import Any

from mlops.admission import Gate
from mlops.errors import BackendError, DeadlineExceeded
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
    """One model loaded in its own sandboxed process; one request at a time, `line` more waiting in turn."""

    def __init__(self, sandbox: Sandbox, python: str, model_dir: Path, marker: str, line: int = 0,
                 line_wait_s: float = 0.0, confinement: Confinement | None = None):
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
        # Those waiting for the worker each hold an HTTP thread: the line is short and its wait bounded.
        self._turn = Gate(f"model {model_dir.name}", limit=1, line=line, wait_s=line_wait_s)

    def start(self) -> None:
        """Start the worker and load the model; raise ModelFailure with the reason when it cannot."""
        with self._lock:
            self._start()

    def invoke(self, body: bytes, content_type: str, accept: str,
               deadline: float | None = None) -> tuple[bytes, str]:
        """Run the model on one request and return (answer, content type); stop it at `deadline` (monotonic)."""
        header, answer = self.call("invoke", {"content_type": content_type, "accept": accept}, body,
                                   deadline=deadline)
        return answer, header.get("content_type") or "application/json"

    def call(self, operation: str, header: dict[str, Any], body: bytes = b"", timeout: float = INVOKE_TIMEOUT_S,
             deadline: float | None = None) -> tuple[dict[str, Any], bytes]:
        """Ask the worker for one operation (model_worker.OPERATIONS), starting it again after a crash.

        Raise Overloaded when the model's line is full, DeadlineExceeded when `deadline` comes first.
        """
        left = None if deadline is None else deadline - time.monotonic()
        with self._turn.admit(left), self._lock:
            if self._tree is None or self._tree.popen.poll() is not None:
                if self._crashes >= MAX_RESTARTS:
                    raise ModelFailure(f"the model's worker crashed {self._crashes} times in a row and is not "
                                       f"started again until the model is deployed again; last: {self._last_crash}")
                logger.warning("model worker %s: starting it again after a crash", self.marker)
                self._start()
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left < timeout:
                if left <= 0:
                    raise DeadlineExceeded(f"no time was left for the model's {operation}")
                return self._exchange(operation, header, body, left, for_deadline=True)
            return self._exchange(operation, header, body, timeout)

    def close(self) -> None:
        """End the worker and everything it started."""
        with self._lock:
            self._end_tree()

    def kill(self) -> None:
        """Kill the worker's processes now, from any thread: the request in progress fails; `close` cleans up."""
        # Not under the lock, which that request holds for as long as the model takes.
        tree = self._tree
        if tree is not None:
            tree.kill()

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

    def _exchange(self, operation: str, header: dict[str, Any], body: bytes, timeout: float,
                  for_deadline: bool = False) -> tuple[dict[str, Any], bytes]:
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
            if timed_out.is_set() and for_deadline:
                raise self._stopped_for_deadline(operation, timeout)
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

    def _stopped_for_deadline(self, operation: str, timeout: float) -> DeadlineExceeded:
        # The worker still computes the abandoned answer, which would be read as the next one's: it goes,
        # and starts again at the next request. The request's time ran out, the model did not fail: no crash.
        self._end_tree()
        logger.info("model worker %s: stopped at the caller's time limit, %.3g s into %s", self.marker, timeout,
                    operation)
        return DeadlineExceeded(f"the model was stopped {timeout:.3g} s into its {operation}, when the request's "
                                "time ran out")

    def _crashed(self, operation: str, timeout: float | None) -> ModelFailure:
        reached = self._tree.limit_reached() if self._tree is not None else None
        code = self._end_tree()
        self._crashes += 1
        how = f"took longer than {timeout:g} s and was stopped" if timeout is not None else (
            f"was killed: {reached}" if reached else f"exited with code {code}")
        self._last_crash = f"the model's worker {how} during {operation}{self._stderr_tail(': ')}"
        logger.warning("model worker %s: %s", self.marker, self._last_crash)
        return ModelFailure(self._last_crash)

    def _end_tree(self) -> int | None:
        """Kill the worker (its cgroup with it), give its uid back; return its exit code, stderr read to the end."""
        tree, self._tree = self._tree, None
        code = None
        if tree is not None:
            tree.kill()
            code = tree.popen.wait()
            # The pipe closes with the process: what it wrote last is then read.
            if self._stderr_reader is not None:
                self._stderr_reader.join(timeout=2)
            tree.wait()
        if self.confinement is not None:
            self.confinement.uids.release(self._uid)
        self._uid = None
        return code

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

