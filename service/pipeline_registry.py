"""The pipelines a server answers for, each swappable while traffic flows (hot reload).

Every request leases the pipeline generation that is current when it starts and keeps it to the end, so a
reload never changes indexes under a running request. A reload opens the new generation completely off to the
side (a failure leaves the old one serving), then swaps one reference under a lock; the old generation is closed
when its last lease is returned. This is the read-copy-update pattern: readers never wait for a reload.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from braid.pipelines.pipeline import Pipeline, PipelineSpec
from braid.service.errors import NotFound

log = logging.getLogger(__name__)


@dataclass
class Generation:
    """One opened pipeline and the requests currently using it."""

    pipeline: Pipeline
    number: int
    leases: int = 0
    retired: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def release(self) -> None:
        with self.lock:
            self.leases -= 1
            close = self.retired and self.leases == 0
        if close:
            self.pipeline.close()

    def retire(self) -> None:
        """No new leases will come; close now if none is out, else when the last one is returned."""
        with self.lock:
            self.retired = True
            close = self.leases == 0
        if close:
            self.pipeline.close()


class PipelineSlot:
    """A named pipeline's current generation; :meth:`swap` replaces it atomically."""

    def __init__(self, spec: PipelineSpec, pipeline: Pipeline) -> None:
        self.spec = spec
        self._current = Generation(pipeline, 1)
        self._lock = threading.Lock()
        self._reload_lock = threading.Lock()  # one reload of a slot at a time; searches never take it

    @property
    def generation(self) -> Generation:
        return self._current

    @contextmanager
    def lease(self) -> Iterator[Pipeline]:
        with self._lock:
            current = self._current
            with current.lock:
                current.leases += 1
        try:
            yield current.pipeline
        finally:
            current.release()

    def swap(self, pipeline: Pipeline) -> int:
        with self._lock:
            old = self._current
            self._current = Generation(pipeline, old.number + 1)
        old.retire()
        return self._current.number

    def reload(self, opener: Callable[[PipelineSpec], Pipeline]) -> int:
        with self._reload_lock:
            pipeline = opener(self.spec)  # fully opened before anyone can see it
            number = self.swap(pipeline)
        log.info("pipeline %s reloaded: generation %d", self.spec.name, number)
        return number

    def close(self) -> None:
        with self._lock:
            current = self._current
        current.retire()


class PipelineRegistry:
    """Pipelines by name; the first one registered is the default."""

    def __init__(self) -> None:
        self._slots: dict[str, PipelineSlot] = {}

    def add(self, spec: PipelineSpec, pipeline: Pipeline) -> None:
        if spec.name in self._slots:
            raise ValueError(f"pipeline {spec.name!r} registered twice")
        self._slots[spec.name] = PipelineSlot(spec, pipeline)

    @property
    def names(self) -> list[str]:
        return list(self._slots)

    @property
    def default(self) -> str:
        return next(iter(self._slots))

    def slot(self, name: str) -> PipelineSlot:
        name = name or self.default
        if name not in self._slots:
            raise NotFound(f"unknown pipeline {name!r} (served here: {', '.join(self._slots)})")
        return self._slots[name]

    def slots(self) -> list[PipelineSlot]:
        return list(self._slots.values())

    def close(self) -> None:
        for slot in self._slots.values():
            slot.close()
