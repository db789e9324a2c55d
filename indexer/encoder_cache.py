"""One encoder per (kind, parameters) in a process, so that shards encoded one after another (in a build job, or
by a reused Ray worker) load their model once instead of once per shard."""

from __future__ import annotations

import gc
import json
import threading
from collections.abc import Callable
from typing import Any

from braid.indexer.query_encodings import CachingQueryEncoder

_CACHE: dict[tuple[str, str, str], Any] = {}
_LOCK = threading.Lock()


def cached_encoder(factory: Callable[[dict], Any], params: dict, role: str = "build") -> Any:
    """The process's encoder for ``params``; ``role`` keeps query encoders (retrievers: ``"query"``) apart from
    the encoders that index documents, so that a query never waits behind a write's batch in one model's queue."""
    key = (f"{factory.__module__}.{factory.__qualname__}", json.dumps(params, sort_keys=True), role)
    with _LOCK:
        if key not in _CACHE:
            encoder = factory(params)
            if role == "query":
                # Repeated queries skip their encoding (braid.indexer.query_encodings).
                encoder = CachingQueryEncoder(encoder, f"{key[0]}:{key[1]}")
            _CACHE[key] = encoder
        return _CACHE[key]


def release_encoders(role: str) -> int:
    """Forget the process's encoders of ``role`` (their memory goes when nothing else holds them); returns how many."""
    with _LOCK:
        keys = [key for key in _CACHE if key[2] == role]
        for key in keys:
            del _CACHE[key]
    if keys:
        gc.collect()  # models hold reference cycles; their memory goes back now, not at some later collection
    return len(keys)
