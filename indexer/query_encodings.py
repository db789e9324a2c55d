"""Query encodings remembered across requests: a repeated query skips its transformer passes.

Search traffic repeats itself (Zipf-like: a few queries make a large share of requests), and a hybrid query's cost is
mostly its two small transformer encodings. The query encoders retrievers use (``cached_encoder(..., role="query")``)
are wrapped in :class:`CachingQueryEncoder`, which looks each query up in one process-wide
:class:`~braid.indexer.encoding_memo.EncodingMemo` (least recently used out first past its byte budget) keyed by
the encoder (model and every parameter), the method and its arguments, and the query's text with its whitespace
runs collapsed. The collapsed text is also what gets encoded on a miss, so an answer never depends on what the
cache holds: the embedded encoders' WordPiece tokenizers split on whitespace anyway, so collapsing it changes nothing
for them. Document encodings never go through here (builds use their own encoders).

Remembered arrays are read-only and dictionaries are copied out, so no caller can change what the next one gets.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from braid.indexer.encoding_memo import EncodingMemo

#: Bytes of query encodings kept per process (MiniLM: ~100,000 queries; token encoders: ~4,000).
DEFAULT_QUERY_CACHE_BYTES = 64 << 20

_memo = EncodingMemo(DEFAULT_QUERY_CACHE_BYTES)
_memo_lock = threading.Lock()


def query_memo() -> EncodingMemo:
    return _memo


def set_query_cache_bytes(budget: int) -> None:
    """Resize the process's query cache (0 turns it off; what it held is dropped)."""
    global _memo
    with _memo_lock:
        _memo = EncodingMemo(budget)


def forget_query_encodings() -> None:
    """Drop every remembered query encoding, keeping the budget: a timing that must pay each query's encoding."""
    set_query_cache_bytes(_memo.budget_bytes)


def normalize_query(text: str) -> str:
    """The cache key's text, and what is encoded: whitespace runs collapsed to one space, none at the ends."""
    return " ".join(text.split())


def _frozen(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        value.setflags(write=False)
    return value


def _thawed(value: Any) -> Any:
    return dict(value) if isinstance(value, dict) else value


class CachingQueryEncoder:
    """A query encoder whose ``encode`` and ``encode_queries`` consult the process's query cache; everything else
    is the wrapped encoder's."""

    _CACHED = ("encode", "encode_queries")

    def __init__(self, encoder: Any, name: str) -> None:
        self._encoder, self._name = encoder, name
        self._stacked: dict[str, bool] = {}  # method -> returns one array for the batch (not a list)

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._encoder, attribute)

    @property
    def wrapped(self) -> Any:
        return self._encoder

    def encode(self, texts: Sequence[str], *args: Any, **kwargs: Any) -> Any:
        return self._cached("encode", texts, args, kwargs)

    def encode_queries(self, texts: Sequence[str], *args: Any, **kwargs: Any) -> Any:
        return self._cached("encode_queries", texts, args, kwargs)

    def _cached(self, method: str, texts: Sequence[str], args: tuple, kwargs: dict) -> Any:
        function = getattr(self._encoder, method)
        memo = _memo
        texts = [normalize_query(text) for text in texts]
        if memo.budget_bytes == 0 or not texts:
            return function(texts, *args, **kwargs)
        key = f"{self._name}.{method}:{json.dumps([args, kwargs], sort_keys=True, default=str)}"

        def encode(missing: list[str]) -> list[Any]:
            out = function(missing, *args, **kwargs)
            self._stacked[method] = isinstance(out, np.ndarray)
            return [_frozen(item) for item in out]

        found = memo.encode(key, encode, texts)
        if self._stacked.get(method):
            return np.stack(found)
        return [_thawed(item) for item in found]
