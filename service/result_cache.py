"""Answers to repeated searches, kept until the collection changes.

Vespa and Elasticsearch keep the results of repeated queries; braid does it where it is safe: a pipeline's answer is
a function of the request (query text, k, weights, rerank depth, filter) and of the collection's state, so each
opened pipeline (a reload opens a new one, with an empty cache) keeps a :class:`ResultCache` keyed by the request and
the live collection's write version. A write bumps that version after it is visible and before it is acknowledged,
so a search that starts after a write's acknowledgement can only find answers computed after it: never a stale
answer. Entries of older versions are never looked up again and age out, least recently used first.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

#: Answers kept per opened pipeline.
DEFAULT_RESULT_CACHE_ENTRIES = 4096


def request_key(query: str, k: int, weights: Any, rerank_depth: int | None, filter_spec: Any, version: int) -> str:
    """The cache key of one search: everything its answer depends on."""
    return json.dumps([query, k, weights or None, rerank_depth, filter_spec, version], sort_keys=True, default=str)


class ResultCache:
    """A thread-safe map request key -> answer, ``capacity`` entries, least recently used out first."""

    def __init__(self, capacity: int = DEFAULT_RESULT_CACHE_ENTRIES) -> None:
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, got {capacity}")
        self.capacity = capacity
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            value = self._items.get(key)
            if value is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: Hashable, value: Any) -> None:
        if self.capacity == 0:
            return
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
