"""Document encodings kept for re-indexing: a live collection's merges reuse what its writes computed.

A live collection indexes a write batch as small segments and later merges segments, indexing their documents
again (:mod:`braid.pipelines.live_collection`). Without a memo every merge level encodes each document once more,
and on a small machine those background encodings compete with the writes and searches of the moment. Within
:func:`remembering`, the index writers of the encoded kinds (embeddings, splade, slim, tokens) look each text up
here first and encode only the misses, so a document costs its neural encoding once, at its write; a merge costs
the index structures alone. The memo is bounded in bytes and forgets the least recently used encodings first (a
miss is only slower: it encodes again). Segments merge newest first, so what a merge needs is what was used last.
"""

from __future__ import annotations

import hashlib
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

import numpy as np

from braid.common.thread_scoped import ThreadScoped

#: Default bound of one memo: ~1,000 documents' token vectors, or ~100,000 dense vectors.
DEFAULT_BUDGET_BYTES = 256 << 20


def _size(value: Any) -> int:
    """Approximate bytes held by one encoding (array, sparse matrix or term-weight dict)."""
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if hasattr(value, "data") and hasattr(value, "indices"):  # scipy sparse (SLIM token matrices)
        return int(value.data.nbytes + value.indices.nbytes + getattr(value, "indptr", np.zeros(0)).nbytes)
    if isinstance(value, dict):
        return 100 * len(value) + 64  # a str key and a float per term, with the dict's slots
    return sys.getsizeof(value)


class EncodingMemo:
    """A thread-safe map (encoder, text) -> encoding, least recently used first out past ``budget_bytes``."""

    def __init__(self, budget_bytes: int = DEFAULT_BUDGET_BYTES) -> None:
        if budget_bytes < 0:
            raise ValueError(f"budget_bytes must be >= 0, got {budget_bytes}")
        self.budget_bytes = budget_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[bytes, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    @staticmethod
    def _key(encoder: str, text: str) -> bytes:
        return hashlib.blake2b(f"{encoder}\0{text}".encode(), digest_size=16).digest()

    def encode(self, encoder: str, encode: Callable[[list[str]], Sequence[Any]], texts: Sequence[str]) -> list[Any]:
        """``encode(texts)`` item by item, calling it only on the texts not remembered for ``encoder`` (a name
        that covers the model and every parameter that changes its output)."""
        keys = [self._key(encoder, text) for text in texts]
        found: list[Any] = [None] * len(texts)
        missing: list[int] = []
        with self._lock:
            for position, key in enumerate(keys):
                entry = self._items.get(key)
                if entry is None:
                    missing.append(position)
                else:
                    self._items.move_to_end(key)
                    found[position] = entry[0]
            self.hits += len(texts) - len(missing)
            self.misses += len(missing)
        if missing:
            encoded = encode([texts[position] for position in missing])
            for position, value in zip(missing, encoded, strict=True):
                found[position] = value
            with self._lock:
                for position in missing:
                    self._remember(keys[position], found[position])
        return found

    def _remember(self, key: bytes, value: Any) -> None:
        size = _size(value)
        if size > self.budget_bytes:
            return
        old = self._items.pop(key, None)
        if old is not None:
            self.bytes -= old[1]
        self._items[key] = (value, size)
        self.bytes += size
        while self.bytes > self.budget_bytes:
            _, (_, dropped) = self._items.popitem(last=False)
            self.bytes -= dropped


_active: ThreadScoped[EncodingMemo | None] = ThreadScoped(None)


def remembering(memo: EncodingMemo | None) -> AbstractContextManager[None]:
    """Index writers on this thread consult ``memo`` (None: encode everything, as a full build does)."""
    return _active.scope(memo)


def memo_encode(encoder: str, encode: Callable[[list[str]], Any], texts: Sequence[str]) -> Any:
    """What an index writer calls to encode a batch: ``encode(texts)`` itself outside :func:`remembering`;
    within it, a list of per-text encodings, the remembered ones not encoded again."""
    memo = _active.get()
    if memo is None:
        return encode(list(texts))
    return memo.encode(encoder, encode, list(texts))
