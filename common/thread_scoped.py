"""A setting that holds for the calling thread inside a ``with`` block, and what it was before after it.

Several code paths are told how to behave by the code that calls them several frames up, on the same thread and
only for that call: a pipeline's query encoders their share of the cores, index writers an encoding memo, segment
builds to keep their progress bars off inside a server's write. Passing each through every signature in between
would thread an argument through code that does not use it; a thread-local setting keeps concurrent requests on
other threads apart.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

T = TypeVar("T")


class ThreadScoped(Generic[T]):
    """A per-thread value: ``default`` until :meth:`scope` sets it; scopes nest and restore on exit."""

    def __init__(self, default: T) -> None:
        self._local = threading.local()
        self._default = default

    def get(self) -> T:
        """The value the innermost open scope on this thread set, or the default."""
        return getattr(self._local, "value", self._default)

    @contextmanager
    def scope(self, value: T) -> Iterator[None]:
        """``value`` for this thread inside the block; the previous value again after it, however it ends."""
        previous = self.get()
        self._local.value = value
        try:
            yield
        finally:
            self._local.value = previous
