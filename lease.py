"""This executor's lease in a job store that several executors share: its identity, and the renewals that
tell the others it is alive.

Airflow's schedulers share one database the same way, with no consensus layer of their own: a running
job belongs to the executor that claimed it while that executor's lease holds; once it lapses, any other
executor takes the job over with a new token, and the old owner's writes carrying the old token are refused.
"""
from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from typing import Callable

from db import Store, StoreError

logger = logging.getLogger(__name__)

# Renewals per lease period: two may fail in a row (a slow database, a pause) before the lease lapses.
RENEWALS_PER_LEASE = 3


def executor_id(name: str | None = None) -> str:
    """Return a new identity for one run of an executor: its name (default the host's) and a random suffix.

    The suffix makes each start a new owner, so that a restarted executor never mistakes the jobs its
    killed predecessor held for its own.
    """
    return f"{name or socket.gethostname()}-{uuid.uuid4().hex[:8]}"


class Lease:
    """One executor's lease: renewed by its own thread, which also runs the queue's watch each tick."""

    def __init__(self, store: Store, seconds: float, executor: str, clock: Callable[[], float] = time.monotonic):
        self.store = store
        self.seconds = seconds
        self.executor = executor
        self.clock = clock
        self.until: float | None = None
        self._renewed_at: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def held(self) -> bool:
        """True while the last renewal is younger than the lease: no other executor may take this one's jobs."""
        return self._renewed_at is not None and self.clock() - self._renewed_at < self.seconds

    def renew(self) -> bool:
        """Extend the lease in the store; False (and a warning) when the store cannot be written."""
        began = self.clock()
        try:
            self.until = self.store.renew_lease(self.executor, self.seconds)
        except StoreError as exc:
            logger.warning("executor %s: lease not renewed (%s); it lapses %.0f s after the last renewal",
                           self.executor, exc, self.seconds)
            return False
        self._renewed_at = began
        return True

    def start(self, watch: Callable[[], None], tick: float) -> None:
        """Renew the lease every lease/3 seconds and call `watch` every `tick` seconds, on one thread."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, args=(watch, tick), name="lease", daemon=True)
        self._thread.start()

    def _loop(self, watch: Callable[[], None], tick: float) -> None:
        next_renewal = self.clock() + self.seconds / RENEWALS_PER_LEASE
        while not self._stop.wait(tick):
            if self.clock() >= next_renewal:
                self.renew()
                next_renewal = self.clock() + self.seconds / RENEWALS_PER_LEASE
            try:
                watch()
            except Exception:  # one bad tick must not end the lease's renewals
                logger.exception("executor %s: watch failed", self.executor)

    def stop(self, release: bool = True) -> None:
        """Stop renewing; with `release`, end the lease at once so that others take what is left."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if release:
            try:
                self.store.renew_lease(self.executor, -1)
            except StoreError as exc:
                logger.warning("executor %s: lease not released (%s); it lapses by itself", self.executor, exc)
