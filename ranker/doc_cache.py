"""A byte-bounded LRU of per-layer keys and values for document (and instruction) blocks.

In the BlockRank layout a document block attends only to the instruction and to itself, and it always starts at
the position right after the instruction, whatever its slot in the prompt. Its keys and values at every layer
are therefore a function of (model, instruction tokens, document tokens) alone: computed once, they are exact
for every later query and every other set of candidates. The cache stores them on the device they were computed
on (GPU or CPU memory), keyed by that triple, and evicts least recently used entries past ``max_bytes``.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class BlockKV:
    """Keys and values of one block at the layers computed: (layers, Hkv, L, D) each."""

    keys: torch.Tensor
    values: torch.Tensor

    @property
    def nbytes(self) -> int:
        return self.keys.numel() * self.keys.element_size() * 2

    @property
    def layers(self) -> int:
        return self.keys.shape[0]


def block_key(model_key: str, instruction: Sequence[int], block: Sequence[int] | None) -> str:
    digest = hashlib.sha256(model_key.encode())
    digest.update(b"\0inst\0" + ",".join(map(str, instruction)).encode())
    if block is not None:
        digest.update(b"\0doc\0" + ",".join(map(str, block)).encode())
    return digest.hexdigest()


class DocumentKVCache:
    """Thread-safe LRU of :class:`BlockKV` with a byte budget; hit and miss counts for metrics."""

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, BlockKV] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str, min_layers: int) -> BlockKV | None:
        """The entry if present with at least ``min_layers`` layers (an early-exit entry cannot serve a deeper
        forward)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.layers < min_layers:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry

    def put(self, key: str, entry: BlockKV) -> None:
        if entry.nbytes > self.max_bytes:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
                if old.layers > entry.layers:
                    entry = old
            self._entries[key] = entry
            self._bytes += entry.nbytes
            while self._bytes > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= evicted.nbytes

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0
