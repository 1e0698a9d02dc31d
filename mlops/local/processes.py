"""The process trees of user code: started in the sandbox, followed line by line, ended as a whole.

A job is its whole tree, not its first process. In the sandbox the tree is a PID namespace: when
its first process ends, or bubblewrap is killed, or the executor dies, the kernel ends every
process in it. Without the sandbox the tree is found three ways, since each alone can be escaped:
the process group (setsid escapes it), the descendants (a double fork reparents away), and the
job's marker variable in the environment (clearing the environment escapes it). On Windows a Job
Object holds the tree and dies with the executor's handle to it.
"""
from __future__ import annotations

import logging
import os
import queue
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, Sequence

import psutil

from mlops.local.limits import Confinement, Enclosure, JobLimits
from mlops.sandbox import Sandbox

logger = logging.getLogger(__name__)

IS_WINDOWS = os.name == "nt"
# Marks a job's processes, so that a sweep ends only that job's orphans, never a stranger.
JOB_ID_VARIABLE = "EXECUTOR_JOB_ID"
STOP_GRACE_S = 10.0
# After the main process ends, its output is read this much longer: whatever still holds the pipe
# open (a daemon the job left) cannot keep the job RUNNING.
OUTPUT_DRAIN_S = 2.0
_POLL_S = 0.2
# Lines read from the pipe and not yet taken: a bound on what a fast printer can pile up in memory.
LINES_IN_FLIGHT = 1024
# What a job or model writes only its own uid may read: were a mount ever shared, another job could
# not. The installer keeps the default: the environment it builds is shared by the jobs that need it.
PRIVATE_UMASK = 0o077
_END = object()


class ProcessTree:
    """One process tree running user code, started in the sandbox, stopped as a whole."""

    def __init__(self, sandbox: Sandbox, argv: Sequence[str], *, cwd: Path, env: dict[str, str], marker: str,
                 writable: Iterable[Path] = (), readable: Iterable[Path] = (), read_only: Iterable[Path] = (),
                 stdin: int = subprocess.DEVNULL, stderr: int = subprocess.STDOUT,
                 confinement: Confinement | None = None, tmp: Path | None = None, umask: int = -1):
        self.sandbox = sandbox
        self.marker = marker
        # Its cgroup (or rlimits) exist before its first process does: nothing it forks escapes them.
        self.enclosure: Enclosure | None = (
            confinement.enclose(marker, own_uid=sandbox.identity is not None) if confinement else None)
        try:
            self.popen = sandbox.start(
                argv, cwd=cwd, writable=writable, readable=readable, read_only=read_only, tmp=tmp,
                enter=self.enclosure.prefix() if self.enclosure else (),
                place=self.enclosure.place if self.enclosure else None,
                env={**env, JOB_ID_VARIABLE: marker}, stdin=stdin, stdout=subprocess.PIPE, stderr=stderr,
                umask=umask, **_session_options())
        except BaseException:
            if self.enclosure is not None:
                self.enclosure.release()
            raise
        self._windows_job = (_WindowsJob(self.popen, confinement.limits if confinement else None)
                             if IS_WINDOWS else None)
        self._stopping = threading.Lock()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def wait(self) -> int:
        """Wait for the main process; end what it left behind; return its exit code (-N: killed by signal N)."""
        code = self.popen.wait()
        self.close()
        if self.sandbox.isolating and 128 < code < 128 + 65:
            # bubblewrap reports its child's death by signal N as 128 + N, as a shell does.
            return 128 - code
        return code

    def close(self) -> None:
        """Kill what is left of the tree and remove its cgroup, however its run ended; calling it again is harmless."""
        self.kill()
        try:
            self.popen.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            logger.warning("process tree %s: its first process outlived SIGKILL for %s s", self.marker, STOP_GRACE_S)
        if self.enclosure is not None:
            self.enclosure.release()

    def stop(self, grace: float = STOP_GRACE_S) -> None:
        """Ask every process of the tree to stop, then kill the tree after the grace period."""
        with self._stopping:
            if self.popen.poll() is None:
                self._signal_tree(signal.CTRL_BREAK_EVENT if IS_WINDOWS else signal.SIGTERM)
                try:
                    self.popen.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    pass
            self.kill()

    def kill(self) -> None:
        """Kill every process of the tree now."""
        if self._windows_job is not None:
            self._windows_job.terminate()
        else:
            self._signal_tree(signal.SIGKILL)
        if self.enclosure is not None:
            self.enclosure.kill()

    def limit_reached(self) -> str | None:
        """Say which limit the kernel stopped the tree at, if any."""
        return self.enclosure.limit_reached() if self.enclosure is not None else None

    def _signal_tree(self, signum: int) -> None:
        if IS_WINDOWS:
            _send(self.popen, signum)
            return
        # Each process once: a second SIGTERM would interrupt the job's own handler of the first.
        members: dict[int, psutil.Process] = {}
        # Once reaped, the pid may be a stranger's: only the group and the marker find what is left.
        if self.popen.poll() is None:
            members.update((member.pid, member) for member in _descendants(self.popen.pid))
            main = _as_process(self.popen.pid)
            # Killing bubblewrap ends the namespace; a polite signal must reach the job's own processes.
            if main is not None and (signum == signal.SIGKILL or not self.sandbox.isolating):
                members[main.pid] = main
        if not self.sandbox.isolating:
            for member in _strays(self.marker, self.popen.pid):
                members.setdefault(member.pid, member)
        for member in members.values():
            _send(member, signum)


class JobProcess(ProcessTree):
    """A process tree whose output (stdout and stderr together) is read as lines of a bounded length."""

    def __init__(self, sandbox: Sandbox, argv: Sequence[str], *, max_line_bytes: int, **options: Any):
        super().__init__(sandbox, argv, **options)
        # Bounded by the pipe's reader, not here: a job that prints faster than its log is written
        # blocks on the full pipe, as it would writing to a slow terminal.
        self._lines: queue.Queue[Any] = queue.Queue(maxsize=LINES_IN_FLIGHT)
        self._abandoned = threading.Event()
        _pump(self.popen.stdout, max_line_bytes, self._lines, self._abandoned, f"output-{self.marker[:8]}")

    def lines(self) -> Iterator[str]:
        """Yield output lines until the main process has ended and its output is read (bounded)."""
        try:
            yield from self._lines_until_drained()
        finally:
            self._abandoned.set()

    def _lines_until_drained(self) -> Iterator[str]:
        drain_until: float | None = None
        while True:
            try:
                item = self._lines.get(timeout=_POLL_S)
            except queue.Empty:
                item = None
            if item is _END:
                return
            if item is not None:
                yield item
                continue
            if drain_until is None and self.popen.poll() is not None:
                self.kill()
                drain_until = time.monotonic() + OUTPUT_DRAIN_S
            elif drain_until is not None and time.monotonic() > drain_until:
                logger.warning("job %s: its output is still held open after its end; no longer read", self.marker)
                return


def run_to_end(sandbox: Sandbox, argv: Sequence[str], *, cwd: Path, env: dict[str, str], marker: str,
               max_line_bytes: int, writable: Iterable[Path] = (), readable: Iterable[Path] = (),
               timeout: float, confinement: Confinement | None = None, tmp: Path | None = None) -> tuple[int, str]:
    """Run a short sandboxed command (an installer) to its end; return its exit code and output."""
    process = JobProcess(sandbox, argv, cwd=cwd, env=env, marker=marker, max_line_bytes=max_line_bytes,
                         writable=writable, readable=readable, confinement=confinement, tmp=tmp)
    timer = threading.Timer(timeout, process.stop, kwargs={"grace": 0})
    timer.daemon = True
    timer.start()
    try:
        output = "\n".join(process.lines())
        reached = process.limit_reached()
        code = process.wait()
        return code, output + (f"\n[executor] {reached}" if reached else "")
    finally:
        timer.cancel()
        process.close()


def _strays(marker: str, group: int | None = None) -> list[psutil.Process]:
    """Return this machine's processes in the job's process group or carrying its marker variable."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.pid == os.getpid():
                continue
            if (group is not None and os.getpgid(process.pid) == group) or (
                    process.environ().get(JOB_ID_VARIABLE) == marker):
                found.append(process)
        except (psutil.Error, OSError):
            continue
    return found


def sweep_orphans(marker: str) -> int:
    """Kill what a job left running when the executor died; return how many processes it killed."""
    orphans = _strays(marker)
    for orphan in orphans:
        _send(orphan, signal.SIGKILL if not IS_WINDOWS else signal.SIGTERM)
    if orphans:
        logger.warning("killed %d process(es) that job %s left running", len(orphans), marker)
    return len(orphans)


def _pump(stream: IO[bytes], max_line_bytes: int, lines: queue.Queue, abandoned: threading.Event,
          name: str) -> None:
    """Copy a pipe's lines (cut at max_line_bytes) to a queue on a thread of its own, then the end marker."""
    def offer(item: Any) -> None:
        # Once nobody reads the queue, what is left is dropped rather than waited on forever.
        while not abandoned.is_set():
            try:
                lines.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                continue

    def copy() -> None:
        try:
            for line in bounded_lines(stream, max_line_bytes):
                offer(line)
        except (OSError, ValueError):
            pass
        finally:
            offer(_END)

    threading.Thread(target=copy, name=name, daemon=True).start()


def bounded_lines(stream: IO[bytes], max_line_bytes: int) -> Iterator[str]:
    """Yield a stream's lines; one longer than the bound is cut there, its rest read and dropped with a note."""
    while True:
        raw = stream.readline(max_line_bytes + 1)
        if not raw:
            return
        if len(raw) <= max_line_bytes or raw.endswith(b"\n"):
            yield raw.decode("utf-8", errors="replace").rstrip("\r\n")
            continue
        dropped = len(raw) - max_line_bytes + _skip_rest_of_line(stream, max_line_bytes)
        kept = raw[:max_line_bytes].decode("utf-8", errors="replace")
        yield f"{kept} [executor: line truncated at {max_line_bytes} bytes; {dropped} more bytes dropped]"


def _skip_rest_of_line(stream: IO[bytes], chunk: int) -> int:
    """Read and drop the rest of a line; return how many bytes were dropped (the newline excluded)."""
    dropped = 0
    while True:
        part = stream.readline(chunk)
        if not part:
            return dropped
        if part.endswith(b"\n"):
            return dropped + len(part) - 1
        dropped += len(part)


def _session_options() -> dict[str, Any]:
    if IS_WINDOWS:
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
    return {"start_new_session": True}


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _as_process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.Error:
        return None


def _send(target: Any, signum: int) -> None:
    try:
        target.send_signal(signum)
    except (psutil.Error, OSError):
        pass


class _WindowsJob:
    """A Windows Job Object holding a process and everything it starts; closing it kills them all."""

    JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE = 0x2000
    EXTENDED_LIMIT_INFORMATION = 9

    JOB_OBJECT_LIMIT_ACTIVE_PROCESS = 0x8
    JOB_OBJECT_LIMIT_JOB_MEMORY = 0x200

    def __init__(self, popen: subprocess.Popen, limits: JobLimits | None):
        import ctypes
        from ctypes import wintypes

        class Basic(ctypes.Structure):
            _fields_ = [("PerProcessUserTimeLimit", ctypes.c_int64), ("PerJobUserTimeLimit", ctypes.c_int64),
                        ("LimitFlags", wintypes.DWORD), ("MinimumWorkingSetSize", ctypes.c_size_t),
                        ("MaximumWorkingSetSize", ctypes.c_size_t), ("ActiveProcessLimit", wintypes.DWORD),
                        ("Affinity", ctypes.c_size_t), ("PriorityClass", wintypes.DWORD),
                        ("SchedulingClass", wintypes.DWORD)]

        class Extended(ctypes.Structure):
            _fields_ = [("BasicLimitInformation", Basic), ("IoInfo", ctypes.c_uint64 * 6),
                        ("ProcessMemoryLimit", ctypes.c_size_t), ("JobMemoryLimit", ctypes.c_size_t),
                        ("PeakProcessMemoryUsed", ctypes.c_size_t), ("PeakJobMemoryUsed", ctypes.c_size_t)]

        self._kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
        self._kernel32.CreateJobObjectW.restype = wintypes.HANDLE
        self.handle = self._kernel32.CreateJobObjectW(None, None)
        settings = Extended()
        settings.BasicLimitInformation.LimitFlags = self.JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
        if limits is not None:
            # The job's limits hold for the whole tree, as a cgroup's do on Linux.
            settings.BasicLimitInformation.LimitFlags |= (self.JOB_OBJECT_LIMIT_JOB_MEMORY
                                                          | self.JOB_OBJECT_LIMIT_ACTIVE_PROCESS)
            settings.JobMemoryLimit = limits.memory
            settings.BasicLimitInformation.ActiveProcessLimit = limits.processes
        if not self._kernel32.SetInformationJobObject(self.handle, self.EXTENDED_LIMIT_INFORMATION,
                                                      ctypes.byref(settings), ctypes.sizeof(settings)):
            raise OSError(ctypes.get_last_error(), "SetInformationJobObject failed")
        # A child started in the instant before this call escapes the job; the process group and
        # taskkill /T in terminate() still reach it.
        if not self._kernel32.AssignProcessToJobObject(self.handle, wintypes.HANDLE(int(popen._handle))):
            raise OSError(ctypes.get_last_error(), "AssignProcessToJobObject failed")
        self._pid = popen.pid

    def terminate(self) -> None:
        if self.handle is None:
            return
        self._kernel32.TerminateJobObject(self.handle, 1)
        subprocess.run(["taskkill", "/T", "/F", "/PID", str(self._pid)], capture_output=True)
        self._kernel32.CloseHandle(self.handle)
        self.handle = None
