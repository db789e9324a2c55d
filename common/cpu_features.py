"""What this machine's CPU computes natively, read from ``/proc/cpuinfo``'s flags (Linux; elsewhere: nothing)."""

from __future__ import annotations

import functools
from pathlib import Path

#: Flags that mean the CPU multiplies bfloat16 natively: AVX-512 BF16 instructions, or AMX tiles.
BFLOAT16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.cache
def cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
    except OSError:
        return frozenset()
    line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return frozenset(line.partition(":")[2].split())


def native_bfloat16() -> bool:
    """Whether the CPU computes bfloat16 products natively (AVX512_BF16 or AMX)."""
    return any(flag in cpu_flags() for flag in BFLOAT16_FLAGS)


#: The flags quoted beside every timing (what decides the encoders' and the reranker's arithmetic).
TIMING_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def timing_flags() -> str:
    """The machine's :data:`TIMING_FLAGS`, space-separated, for benchmark reports."""
    return " ".join(flag for flag in TIMING_FLAGS if flag in cpu_flags())
