"""Registry of index kinds: the name users pass to ``--kind`` and the function that builds it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from braid.indexer import (
    binary_index,
    bm25_index,
    embedding_index,
    multivector_index,
    slim_index,
    splade_index,
    token_index,
)


@dataclass(frozen=True)
class IndexKind:
    """An index kind. ``requires`` maps a role to the (kind, parameters) of another index this one is built
    from; those are built first, in the same index root, and passed to ``build`` by role as keyword arguments."""

    name: str
    validate: Callable[[dict], dict]
    build: Callable[..., int]
    requires: Callable[[dict], dict[str, tuple[str, dict]]] | None = None


INDEX_KINDS: dict[str, IndexKind] = {
    "binary": IndexKind(
        "binary", binary_index.validate_params, binary_index.build_binary_index, requires=binary_index.requires
    ),
    "bm25": IndexKind("bm25", bm25_index.validate_params, bm25_index.build_bm25_index),
    "embeddings": IndexKind("embeddings", embedding_index.validate_params, embedding_index.build_embeddings),
    "multivector": IndexKind(
        "multivector",
        multivector_index.validate_params,
        multivector_index.build_multivector_index,
        requires=multivector_index.requires,
    ),
    "slim": IndexKind("slim", slim_index.validate_params, slim_index.build_slim_index),
    "splade": IndexKind("splade", splade_index.validate_params, splade_index.build_splade_index),
    "tokens": IndexKind("tokens", token_index.validate_params, token_index.build_tokens),
}
