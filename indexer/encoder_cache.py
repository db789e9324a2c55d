"""One encoder per (kind, parameters) in a process, so that shards encoded one after another (in a build job, or
by a reused Ray worker) load their model once instead of once per shard."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

_CACHE: dict[tuple[str, str, str], Any] = {}
_LOCK = threading.Lock()


def cached_encoder(factory: Callable[[dict], Any], params: dict, role: str = "build") -> Any:
    """The process's encoder for ``params``; ``role`` keeps query encoders (retrievers: ``"query"``) apart from
    the encoders that index documents, so that a query never waits behind a write's batch in one model's queue."""
    key = (f"{factory.__module__}.{factory.__qualname__}", json.dumps(params, sort_keys=True), role)
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = factory(params)
        return _CACHE[key]
