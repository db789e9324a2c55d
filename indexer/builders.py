"""Registry of index kinds: the name users pass to ``--kind`` and the function that builds it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from eval.dataset import Dataset
from indexer import bm25_index, embedding_index, slim_index, splade_index


@dataclass(frozen=True)
class IndexKind:
    name: str
    validate: Callable[[dict], dict]
    build: Callable[[Dataset, Path, dict, int | None], int]


INDEX_KINDS: dict[str, IndexKind] = {
    "bm25": IndexKind("bm25", bm25_index.validate_params, bm25_index.build_bm25_index),
    "embeddings": IndexKind("embeddings", embedding_index.validate_params, embedding_index.build_embeddings),
    "slim": IndexKind("slim", slim_index.validate_params, slim_index.build_slim_index),
    "splade": IndexKind("splade", splade_index.validate_params, splade_index.build_splade_index),
}
