"""Merging shard lists: any split of a collection's scored documents merges into the list one index gives."""

from __future__ import annotations

import numpy as np
import pytest

from braid.common.errors import BraidError
from braid.retriever.binary_retriever import rescored_hits
from braid.retriever.protocol import Partial
from braid.retriever.sharded_retriever import (
    ShardedRetriever,
    candidate_cuts,
    first_stage_cut,
    merge_binary,
    merge_scored,
    merge_tied,
    sum_statistics,
)
from braid.retriever.ties import DocIds

IDS = [f"doc{n:03d}" for n in range(200)]


def split(rows: np.ndarray, shards: int, seed: int) -> list[np.ndarray]:
    owner = np.random.default_rng(seed).integers(0, shards, len(rows))
    return [rows[owner == shard] for shard in range(shards)]


@pytest.mark.parametrize("seed", range(5))
def test_lucene_shard_lists_merge_into_the_one_index_top_k_with_its_ties(seed):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 12, len(IDS)).astype(np.float32)  # integer impact scores: ties everywhere
    order = np.argsort(-scores, kind="stable")
    one_index = DocIds(IDS)

    def engine(rows):
        ranked = rows[np.argsort(-scores[rows], kind="stable")]
        return lambda depth: (ranked[:depth], scores[ranked[:depth]])

    expected = one_index.top_k(engine(order), 25).hits()
    partials = []
    for rows in split(np.arange(len(IDS)), 3, seed):
        shard = DocIds([IDS[row] for row in rows])
        local = {IDS[row]: n for n, row in enumerate(rows)}
        ids, raw = shard.top_k_raw(lambda depth, rows=rows, local=local: _local(engine(rows)(depth), local), 25)
        partials.append(Partial(ids, raw))
    assert merge_tied(partials, 25) == expected


def _local(found, local):
    numbers, scores = found
    return np.array([local[IDS[row]] for row in numbers], dtype=np.int64), scores


def test_scored_lists_merge_by_score_then_id():
    partials = [Partial(["b", "d"], np.array([0.9, 0.5])), Partial(["a", "c"], np.array([0.9, 0.7]))]
    assert [hit.doc_id for hit in merge_scored(partials, 3)] == ["a", "b", "c"]
    assert merge_scored([Partial([], np.zeros(0))], 3) == []


def test_binary_head_is_chosen_over_all_shards():
    code = np.array([9.0, 8.0, 7.0, 6.0, 5.0])
    exact = np.array([0.1, 0.5, 0.9, 0.3, 0.2])
    ids = ["a", "b", "c", "d", "e"]
    rescore = 3
    head = np.where(np.arange(5) < rescore, exact, np.nan)
    expected = rescored_hits(ids, code, head)
    # Shard 0 holds a, c, e; shard 1 holds b, d; each rescored its own top 3 by code score.
    partials = [
        Partial(["a", "c", "e"], code[[0, 2, 4]], exact[[0, 2, 4]]),
        Partial(["b", "d"], code[[1, 3]], exact[[1, 3]]),
    ]
    assert merge_binary(partials, 5, rescore) == expected


def test_statistics_and_cut_offs_combine_over_shards():
    parts = [
        {"documents": 10, "length": 100, "df": {"cat": 2, "dog": 1}},
        {"documents": 5, "length": 40, "df": {"cat": 1}},
    ]
    assert sum_statistics(parts) == {"documents": 15, "length": 140, "df": {"cat": 3, "dog": 1}}
    bounds = [np.array([9.0, 7.0, 5.0]), np.array([8.0, 6.0])]
    cuts = candidate_cuts(
        [
            {"bound": bounds[0], "approximate": np.array([1.0, 3.0, 2.0]), "exact": 2, "keep": 3},
            {"bound": bounds[1], "approximate": np.array([4.0, 0.5]), "exact": 2, "keep": 3},
            None,
        ]
    )
    # The collection keeps the best 3 bounds (9, 8, 7) and scores exactly the best 2 of their approximations.
    assert cuts == {"bound_min": 7.0, "approximate_min": 3.0}
    assert candidate_cuts([None]) is None
    few = first_stage_cut([{"scores": np.array([3.0]), "depth": 4}, {"scores": np.array([2.0]), "depth": 4}])
    assert few == {"min": float("-inf")}
    assert first_stage_cut([{"scores": np.array([5.0, 3.0]), "depth": 2}, {"scores": np.array([4.0]), "depth": 2}]) == {
        "min": 4.0
    }


def test_a_sharded_retriever_needs_shards():
    with pytest.raises(BraidError, match="at least one shard"):
        ShardedRetriever("dense", [])
