"""Serving shards: a collection's indexes cut into N document partitions, each partition a complete index root.

Layout: ``OUTPUT/shard-<i>-of-<N>/<dataset>/<kind>-<digest>``, with the digest of the unsharded index (same kind,
parameters and collection checksum), so a pipeline finds shard i's index under shard i's root exactly as it finds an
unsharded one. A build job (``shards = N``) sends its encoded shard j (``shard_size`` documents) to serving shard
j mod N: the partitions reuse the encoding, and each is assembled from its encoded shards. Kinds derived from others
(binary codes, pooled multi-vector indexes) reuse what was trained on the whole collection (the binarizer, the
centroids), so their scores and candidate generation are the unsharded index's. Each shard index's manifest records
``build["serving_shard"] = {"index": i, "of": N, ...}``; opening checks it.

This is the document partitioning of Vespa's content nodes and Elasticsearch's shards: every shard answers every
query over its documents, and a broker merges their lists (:mod:`braid.retriever.sharded_retriever`).
"""

from __future__ import annotations

from pathlib import Path

from braid.common.errors import BraidError
from braid.indexer.manifest import Manifest

RECORD = "serving_shard"


def shard_root(root: Path, index: int, count: int) -> Path:
    return Path(root) / f"shard-{index}-of-{count}"


def shard_roots(root: Path, count: int) -> list[Path]:
    if count < 1:
        raise BraidError(f"shards must be >= 1, got {count}")
    return [shard_root(root, index, count) for index in range(count)]


def check_shard(path: Path, index: int, count: int) -> Manifest:
    """The manifest of shard ``index`` of ``count``'s index at ``path``, refused if it records another sharding."""
    manifest = Manifest.read(path)
    record = manifest.build.get(RECORD) or {}
    if (record.get("index"), record.get("of")) != (index, count):
        found = f"shard {record.get('index')} of {record.get('of')}" if record else "no sharding"
        raise BraidError(
            f"{path} is not shard {index} of {count} (its manifest records {found}); "
            f"rebuild with shards = {count} in the build config"
        )
    return manifest
