"""Validation shared by every index kind's build parameters: unknown names and wrong types are errors that
name what is allowed, and defaults fill what was not given."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from braid.common.errors import BraidError


def merge_params(kind: str, params: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """``defaults`` overlaid with ``params``; every value must have its default's type (bool is not an int)."""
    unknown = set(params) - set(defaults)
    if unknown:
        raise BraidError(f"unknown {kind} index parameter(s) {sorted(unknown)} (allowed: {sorted(defaults)})")
    merged = {**defaults, **params}
    for name, default in defaults.items():
        value = merged[name]
        if type(value) is not type(default) and not (isinstance(default, float) and type(value) is int):
            raise BraidError(f"{kind} {name} must be {type(default).__name__}, got {value!r}")
    return merged


def require_at_least(kind: str, merged: Mapping[str, Any], names: Iterable[str], minimum: int = 1) -> None:
    for name in names:
        if merged[name] < minimum:
            raise BraidError(f"{kind} {name} must be >= {minimum}, got {merged[name]}")


def require_choice(kind: str, merged: Mapping[str, Any], name: str, allowed: Iterable[str]) -> None:
    allowed = tuple(allowed)
    if merged[name] not in allowed:
        raise BraidError(f"{kind} {name} must be one of {', '.join(allowed)}, got {merged[name]!r}")
