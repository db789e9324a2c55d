"""Admission control: a bound on requests in the server, with immediate rejection beyond it.

Requests are admitted while fewer than ``limit`` are in (running on a worker thread or waiting for one); the
next is refused at once (:class:`~braid.service.errors.Overloaded`), which keeps latency bounded under overload
instead of letting a queue grow until every request times out (the "fail fast" of load shedding).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from braid.service.errors import Overloaded, ShuttingDown


class Admission:
    """Counts admitted and running requests; refuses beyond ``limit`` and once draining has begun."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._admitted = 0
        self._running = 0
        self._draining = False
        self._idle = threading.Condition(self._lock)

    @property
    def admitted(self) -> int:
        return self._admitted

    @property
    def queued(self) -> int:
        """Admitted requests not yet on a worker thread (the queue depth)."""
        return self._admitted - self._running

    def enter(self) -> None:
        """Admit one request or refuse it at once; an admitted request must :meth:`leave` exactly once."""
        with self._lock:
            if self._draining:
                raise ShuttingDown("the server is shutting down; retry on another replica")
            if self._admitted >= self.limit:
                raise Overloaded(f"server at its concurrency limit of {self.limit} requests; retry later")
            self._admitted += 1

    def leave(self) -> None:
        with self._lock:
            self._admitted -= 1
            self._idle.notify_all()

    @contextmanager
    def running(self) -> Iterator[None]:
        with self._lock:
            self._running += 1
        try:
            yield
        finally:
            with self._lock:
                self._running -= 1

    def drain(self, timeout: float) -> bool:
        """Refuse new requests and wait up to ``timeout`` seconds for admitted ones; True when none is left."""
        with self._lock:
            self._draining = True
            return self._idle.wait_for(lambda: self._admitted == 0, timeout)
