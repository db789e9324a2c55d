"""Peak resident memory of this process over a stretch of work (an index build), read from the kernel.

Linux keeps each process's high-water mark of resident memory (``VmHWM`` in ``/proc/self/status``, what
``/usr/bin/time -v`` reports as "Maximum resident set size"); writing ``5`` to ``/proc/self/clear_refs`` resets it to
the current RSS (Linux >= 4.0). :class:`PeakMemory` resets it when a build starts and reads it when the build ends, so
each index a process builds gets its own peak: the process's resident memory at its highest during that build,
whatever was already loaded included. Where the reset is refused the peak is the process's since it started
(``reset`` False); where ``/proc`` is missing, ``getrusage``'s maximum.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


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


def reset_high_water() -> bool:
    """Reset the peak to the current RSS; whether the kernel allowed it."""
    try:
        _CLEAR_REFS.write_text("5", encoding="ascii")
    except OSError:
        return False
    return True


class PeakMemory:
    """``with PeakMemory() as peak: work()``, then ``peak.bytes``: the process's peak RSS during ``work``."""

    def __init__(self) -> None:
        self.reset = False
        self.start_bytes = 0
        self.bytes = 0

    def __enter__(self) -> PeakMemory:
        self.reset = reset_high_water()
        self.start_bytes = resident_bytes()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bytes = high_water_bytes()
