"""Peak resident memory of this process over a stretch of work (an index build), read from the kernel.

Linux keeps each process's high-water mark of resident memory (``VmHWM`` in ``/proc/self/status``, what
``/usr/bin/time -v`` reports as "Maximum resident set size"). When a build raises that mark, the mark at its end is
its peak, exactly. When the process had been higher before (a ``braid eval`` that built a larger index first), the
mark says nothing about this build, so :class:`PeakMemory` also samples the RSS every few milliseconds while the
build runs and takes the highest sample. The mark itself is never reset (``/proc/self/clear_refs`` could), so that
an outside ``time -v`` still sees the process's true peak.
"""

from __future__ import annotations

import resource
import sys
import threading
from pathlib import Path

_STATUS = Path("/proc/self/status")


def _status_kib(field: str) -> int | None:
    try:
        for line in _STATUS.read_text(encoding="ascii").splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def resident_bytes() -> int:
    """The process's resident memory now (RSS), in bytes; 0 where the platform does not say."""
    kib = _status_kib("VmRSS")
    return 0 if kib is None else kib * 1024


def high_water_bytes() -> int:
    """The process's peak resident memory since it started or the last reset, in bytes."""
    kib = _status_kib("VmHWM")
    if kib is not None:
        return kib * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # macOS reports bytes, Linux KiB


class PeakMemory:
    """``with PeakMemory() as peak: work()``, then ``peak.bytes``: the process's peak RSS during ``work`` (exact when
    ``work`` raised the process's high-water mark, else the highest of RSS samples taken every ``interval`` s)."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.bytes = 0
        self.exact = False
        self._sampled = 0
        self._mark = 0
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._done.wait(self.interval):
            self._sampled = max(self._sampled, resident_bytes())

    def __enter__(self) -> PeakMemory:
        self._mark = high_water_bytes()
        self._sampled = resident_bytes()
        self._thread = threading.Thread(target=self._sample, name="peak-memory", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()
        mark = high_water_bytes()
        self.exact = mark > self._mark
        self.bytes = mark if self.exact else max(self._sampled, resident_bytes())
