"""Following a local job's output: log and metric writes batched, failures kept.

A job controls its output. One line without a newline can be hundreds of megabytes, and a loop
can print metric lines as fast as the pipe carries them; so a line is cut at a bound where the pipe
is read (mlops/local/processes.py: the rest is read and dropped, with a note), and the log, metrics
and progress are written in batches: every FLUSH_INTERVAL_S (a flusher thread, so a line printed
before a long pause shows at once) or every LOG_BATCH_BYTES, whatever the job prints; a metric line
(an epoch's end, what a user watches for) is written at once, but at most every MIN_FLUSH_GAP_S. A log or store that cannot be written never stops the
reading, or the job would block on a full pipe: the first failure is kept and decides how the job ends.
"""
from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Iterable

from db import StoreError
from mlops.metric_lines import parse_metric_line, progress_of
from mlops.reporter import JobReporter

logger = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 0.5
# However fast a job prints metric lines, its store takes at most this many writes a second from them.
MIN_FLUSH_GAP_S = 0.1
LOG_BATCH_BYTES = 1 << 16
# A failure reason carries the job's last lines: enough for a traceback's last frames and its exception.
TAIL_LINES = 12
TAIL_LINE_CHARS = 500


class OutputFollower:
    """Reads a job's output into its log, metrics and progress."""

    def __init__(self, ctx: JobReporter):
        self.ctx = ctx
        #: Why the log or the store could not be written, once one of them failed.
        self.failure: str | None = None
        self._lines: list[str] = []
        self._pending_bytes = 0
        self._metrics: list[tuple[str, float | None, int | None]] = []
        self._progress: dict[str, float | int] | None = None
        self._buffer_lock = threading.Lock()
        # Held for a whole flush, so that batches reach the log in the order they were read.
        self._flush_lock = threading.Lock()
        self._metrics_read = threading.Event()
        #: The job's last lines that are neither blank nor metric lines, secrets redacted.
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)

    def follow(self, lines: Iterable[str]) -> None:
        """Read the output's lines to their end, writing what they hold as it goes."""
        done = threading.Event()
        flusher = threading.Thread(target=self._flush_every_interval, args=(done,),
                                   name=f"output-{self.ctx.job_id[:8]}", daemon=True)
        flusher.start()
        try:
            for line in lines:
                with self._buffer_lock:
                    self._take(line)
                    full = self._pending_bytes >= LOG_BATCH_BYTES
                if full:
                    self.flush()
        finally:
            done.set()
            self._metrics_read.set()
            flusher.join()
            self.flush()

    def _flush_every_interval(self, done: threading.Event) -> None:
        while not done.is_set():
            self._metrics_read.wait(FLUSH_INTERVAL_S - MIN_FLUSH_GAP_S)
            self._metrics_read.clear()
            if done.is_set():
                return
            self.flush()
            done.wait(MIN_FLUSH_GAP_S)

    def _take(self, line: str) -> None:
        self._lines.append(line)
        self._pending_bytes += len(line) + 1
        parsed = parse_metric_line(line)
        if parsed:
            epoch, epochs, metrics = parsed
            self._metrics.extend((name, value, epoch) for name, value in metrics.items())
            self._progress = progress_of(epoch, epochs)
            self._metrics_read.set()
        elif line.strip():
            # Redacted before it is cut: a cut through a secret would leave a piece no redaction matches.
            self.tail.append(self.ctx.redact(line)[:TAIL_LINE_CHARS])

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
                    self.ctx.add_metric_rows(metrics)
                if progress:
                    self.ctx.set_progress(**progress)
            except OSError as exc:
                self.failure = f"the job log cannot be written: {exc}"
            except StoreError as exc:
                self.failure = f"the job store failed while the job ran: {exc}"
            if self.failure is not None:
                logger.warning("job %s: %s; the output is read on and dropped", self.ctx.job_id, self.failure)

