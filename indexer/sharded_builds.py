"""The index kinds a build job encodes in shards: the ones that run a model or an analyzer per document.

Each has ``encode_shard(documents, out_dir, params) -> count``, which writes one shard's encoded form, and
``assemble_shards(shard_dirs, out_dir, params, threads) -> count``, which merges shards (in order) into the index
a one-piece build writes. Kinds derived from others (binary codes from embeddings, pooled multi-vector indexes
from tokens) are built by the job from the assembled indexes instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from braid.common.dataset import Document
from braid.indexer import bm25_index, embedding_index, slim_index, splade_index, token_index


@dataclass(frozen=True)
class ShardedKind:
    encode: Callable[[Sequence[Document], Path, dict], int]
    assemble: Callable[[Sequence[Path], Path, dict, int | None], int]


SHARDED_KINDS: dict[str, ShardedKind] = {
    "bm25": ShardedKind(bm25_index.encode_shard, bm25_index.assemble_shards),
    "embeddings": ShardedKind(embedding_index.encode_shard, embedding_index.assemble_shards),
    "slim": ShardedKind(slim_index.encode_shard, slim_index.assemble_shards),
    "splade": ShardedKind(splade_index.encode_shard, splade_index.assemble_shards),
    "tokens": ShardedKind(token_index.encode_shard, token_index.assemble_shards),
}
