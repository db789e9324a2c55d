"""Routing document updates to serving shards: new ids to their home shard, deletions to the holder, refusals first."""

from __future__ import annotations

import zlib

import pytest

from braid.common.errors import BraidError
from braid.indexer.shard_routing import home_shard, route_additions, route_deletions


def test_home_shard_is_crc32_of_the_id_and_spreads_ids():
    assert home_shard("doc-1", 3) == zlib.crc32(b"doc-1") % 3
    assert home_shard("Käse", 4) == zlib.crc32("Käse".encode()) % 4  # UTF-8, not the platform encoding
    counts = [0, 0, 0]
    for number in range(3000):
        counts[home_shard(f"id-{number}", 3)] += 1
    assert min(counts) > 900
    with pytest.raises(BraidError, match="shard count must be >= 1"):
        home_shard("x", 0)


def test_additions_go_home_and_deletions_to_the_holder():
    held = [{"a", "b"}, {"c"}, set()]
    documents = [(f"n{number}", "text") for number in range(9)]
    routed = route_additions(held, documents)
    assert sorted(doc for part in routed for doc in part) == sorted(documents)
    assert all(home_shard(doc_id, 3) == index for index, part in enumerate(routed) for doc_id, _ in part)
    assert route_deletions(held, ["c", "a", "c"]) == [["a"], ["c"], []]


def test_an_id_held_anywhere_or_unknown_everywhere_is_refused():
    held = [{"a"}, {"b"}]
    with pytest.raises(BraidError, match=r"1 document id\(s\) already in the index, e\.g\. \['b'\]"):
        route_additions(held, [("new", "x"), ("b", "y")])
    with pytest.raises(BraidError, match=r"1 unknown document id\(s\), e\.g\. \['ghost'\]; nothing deleted"):
        route_deletions(held, ["a", "ghost"])
