"""Bounded admission: at most so many callers inside at once, so many more in line, the rest refused.

A slow model must not take every thread of the server: each model lets one request in at a time
with a short line behind it, and model requests together may hold only a share of the HTTP
threads. Whoever is refused is told when to try again (Retry-After), from how long callers have
recently stayed inside.
"""
from __future__ import annotations

import math
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from mlops.errors import Overloaded

# How much each new stay moves the running mean of stays: recent ones count most.
STAY_WEIGHT = 0.2
# A Retry-After past this tells a client nothing it can use; the limit on one model call is 60 s.
MAX_RETRY_AFTER_S = 60


class Gate:
    """Let at most `limit` callers in at once and `line` more wait up to `wait_s` each; refuse the rest."""

    def __init__(self, what: str, limit: int, line: int = 0, wait_s: float = 0.0,
                 clock: Callable[[], float] = time.monotonic):
        if limit < 1 or line < 0 or wait_s < 0:
            raise ValueError(f"{what}: a gate needs a limit of at least 1 and no negative line or wait")
        self.what = what
        self.limit = limit
        self.line = line
        self.wait_s = wait_s
        self.clock = clock
        self._changed = threading.Condition()
        self._inside = 0
        self._waiting = 0
        self._mean_stay_s: float | None = None

    @contextmanager
    def admit(self, wait_s: float | None = None) -> Iterator[None]:
        """Hold a place inside for the block, waiting in line (at most wait_s, if shorter) when there is room.

        Raise Overloaded when the line is full or the wait runs out.
        """
        with self._changed:
            # Newcomers queue behind those already waiting, so that nobody waits forever.
            if self._inside >= self.limit or self._waiting:
                self._wait_in_line(self.wait_s if wait_s is None else max(0.0, min(self.wait_s, wait_s)))
            self._inside += 1
        entered = self.clock()
        try:
            yield
        finally:
            with self._changed:
                self._inside -= 1
                stay = self.clock() - entered
                self._mean_stay_s = stay if self._mean_stay_s is None else (
                    STAY_WEIGHT * stay + (1 - STAY_WEIGHT) * self._mean_stay_s)
                self._changed.notify()

    def _wait_in_line(self, wait_s: float) -> None:
        if self._waiting >= self.line:
            raise self._refusal(f"{self.what} is busy: {self._inside} in progress"
                                + (f" and {self._waiting} waiting" if self.line else ""))
        self._waiting += 1
        try:
            admitted = self._changed.wait_for(lambda: self._inside < self.limit, timeout=wait_s)
        finally:
            self._waiting -= 1
        if not admitted:
            raise self._refusal(f"{self.what} stayed busy for the {wait_s:g} s this request could wait")

    def _refusal(self, message: str) -> Overloaded:
        # Those ahead (inside and in line) leave one stay apart, `limit` at a time.
        ahead = (self._inside + self._waiting) / self.limit
        retry_after = math.ceil((self._mean_stay_s or 1.0) * max(1.0, ahead))
        return Overloaded(message, retry_after=max(1, min(MAX_RETRY_AFTER_S, retry_after)))
