"""Which serving shard a document update goes to.

A new document goes to its home shard, a hash of its id modulo the shard count (Elasticsearch's default routing:
any broker computes it with no lookup, and ids spread evenly); a document the build job placed elsewhere (it cuts
the collection into contiguous encoded shards) stays where it is, so a deletion goes to the shard that holds the
id. Ids are checked against every shard first: adding an id any shard holds, or deleting one no shard holds, is
refused before anything is written.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

from braid.common.errors import BraidError, DocumentsExist, UnknownDocuments


def home_shard(doc_id: str, count: int) -> int:
    """The shard a new document with ``doc_id`` goes to: crc32 of the UTF-8 id, modulo ``count`` (stable across
    processes and Python versions, unlike ``hash``)."""
    if count < 1:
        raise BraidError(f"shard count must be >= 1, got {count}")
    return zlib.crc32(doc_id.encode("utf-8")) % count


def route_additions(shard_ids: Sequence[set[str]], documents: Sequence[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    """Documents to add, per shard (``shard_ids``: the ids each shard holds now)."""
    present = sorted(doc_id for doc_id, _ in documents if any(doc_id in ids for ids in shard_ids))
    if present:
        raise DocumentsExist(f"{len(present)} document id(s) already in the index, e.g. {present[:5]}; nothing added")
    routed: list[list[tuple[str, str]]] = [[] for _ in shard_ids]
    for doc_id, text in documents:
        routed[home_shard(doc_id, len(shard_ids))].append((doc_id, text))
    return routed


def route_deletions(shard_ids: Sequence[set[str]], doc_ids: Sequence[str]) -> list[list[str]]:
    """Ids to delete, per shard: each goes to the shard that holds it."""
    routed: list[list[str]] = [[] for _ in shard_ids]
    unknown = []
    for doc_id in dict.fromkeys(doc_ids):
        holders = [index for index, ids in enumerate(shard_ids) if doc_id in ids]
        if holders:
            routed[holders[0]].append(doc_id)
        else:
            unknown.append(doc_id)
    if unknown:
        raise UnknownDocuments(f"{len(unknown)} unknown document id(s), e.g. {sorted(unknown)[:5]}; nothing deleted")
    return routed
