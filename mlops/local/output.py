"""Following a local job's output: lines bounded in length, log and metric writes batched, failures kept.

A job controls its output. One line without a newline can be hundreds of megabytes, and a loop
can print metric lines as fast as the pipe carries them; so a line is cut at a bound (the rest is
read and dropped, with a note), and the log, metrics and progress are written in batches: every
FLUSH_INTERVAL_S (a flusher thread, so a line printed before a long pause shows at once) or every
LOG_BATCH_BYTES, whatever the job prints. A log or store that cannot be written never stops the
reading, or the job would block on a full pipe: the first failure is kept and decides how the job ends.
"""
from __future__ import annotations

import logging
import threading
from typing import BinaryIO

from db import StoreError
from mlops.base import JobContext
from mlops.metric_lines import parse_metric_line, progress_of

logger = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 0.5
LOG_BATCH_BYTES = 1 << 16


class OutputFollower:
    """Reads a job's output into its log, metrics and progress."""

    def __init__(self, ctx: JobContext, max_line_bytes: int):
        self.ctx = ctx
        self.max_line_bytes = max_line_bytes
        #: Why the log or the store could not be written, once one of them failed.
        self.failure: str | None = None
        self._lines: list[str] = []
        self._pending_bytes = 0
        self._metrics: list[tuple[str, float | None, int | None]] = []
        self._progress: dict[str, float | int] | None = None
        self._buffer_lock = threading.Lock()
        # Held for a whole flush, so that batches reach the log in the order they were read.
        self._flush_lock = threading.Lock()

    def follow(self, stream: BinaryIO) -> None:
        """Read the output to its end, writing what it holds as it goes."""
        done = threading.Event()
        flusher = threading.Thread(target=self._flush_every_interval, args=(done,),
                                   name=f"output-{self.ctx.job_id[:8]}", daemon=True)
        flusher.start()
        try:
            while True:
                raw = stream.readline(self.max_line_bytes + 1)
                if not raw:
                    break
                line = self._line(raw, stream)
                with self._buffer_lock:
                    self._take(line)
                    full = self._pending_bytes >= LOG_BATCH_BYTES
                if full:
                    self.flush()
        finally:
            done.set()
            flusher.join()
            self.flush()

    def _flush_every_interval(self, done: threading.Event) -> None:
        while not done.wait(FLUSH_INTERVAL_S):
            self.flush()

    def _line(self, raw: bytes, stream: BinaryIO) -> str:
        if len(raw) <= self.max_line_bytes or raw.endswith(b"\n"):
            return raw.decode("utf-8", errors="replace").rstrip("\r\n")
        dropped = len(raw) - self.max_line_bytes + _skip_rest_of_line(stream, self.max_line_bytes)
        kept = raw[:self.max_line_bytes].decode("utf-8", errors="replace")
        return f"{kept} [executor: line truncated at {self.max_line_bytes} bytes; {dropped} more bytes dropped]"

    def _take(self, line: str) -> None:
        self._lines.append(line)
        self._pending_bytes += len(line) + 1
        parsed = parse_metric_line(line)
        if parsed:
            epoch, epochs, metrics = parsed
            self._metrics.extend((name, value, epoch) for name, value in metrics.items())
            self._progress = progress_of(epoch, epochs)

    def flush(self) -> None:
        """Write the lines, metrics and progress read since the last flush."""
        with self._flush_lock:
            with self._buffer_lock:
                lines, metrics, progress = self._lines, self._metrics, self._progress
                self._lines, self._metrics, self._progress, self._pending_bytes = [], [], None, 0
            if self.failure is not None:
                return
            try:
                if lines:
                    self.ctx.log("\n".join(lines))
                if metrics:
                    self.ctx.store.add_metrics(self.ctx.job_id, metrics)
                if progress:
                    self.ctx.set_progress(**progress)
            except OSError as exc:
                self.failure = f"the job log cannot be written: {exc}"
            except StoreError as exc:
                self.failure = f"the job store failed while the job ran: {exc}"
            if self.failure is not None:
                logger.warning("job %s: %s; the output is read on and dropped", self.ctx.job_id, self.failure)


def _skip_rest_of_line(stream: BinaryIO, chunk: int) -> int:
    """Read and drop the rest of a line; return how many bytes were dropped (the newline excluded)."""
    dropped = 0
    while True:
        part = stream.readline(chunk)
        if not part:
            return dropped
        if part.endswith(b"\n"):
            return dropped + len(part) - 1
        dropped += len(part)
