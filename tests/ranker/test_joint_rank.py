"""JointRank: the block design, the aggregation of block orders, and the ranker's one-walk long lists."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from braid.common.errors import BraidError
from braid.pipelines.spec import parse_rerank
from braid.ranker.joint_rank import block_design, joint_order, pagerank, win_matrix
from braid.ranker.rerank_spec import RerankSpec
from braid.ranker.reranker import BlockRanker
from tests.ranker.test_reranker import DOCS, QUERY


@pytest.mark.parametrize(("count", "window", "replicas"), [(100, 20, 2), (45, 20, 3), (7, 3, 1), (5, 20, 2)])
def test_every_item_sits_in_replicas_blocks_of_balanced_size(count, window, replicas):
    blocks = block_design(count, window, replicas)
    assert sorted(itertools.chain(*blocks)) == sorted(list(range(count)) * replicas)
    assert all(len(set(block)) == len(block) for block in blocks)
    sizes = [len(block) for block in blocks]
    assert max(sizes) <= window and max(sizes) - min(sizes) <= 1
    assert blocks[: len(blocks) // replicas][0] == list(range(sizes[0]))  # the first replica: first-stage order
    assert block_design(count, window, replicas) == blocks  # seeded


def test_wins_count_every_pair_a_block_orders():
    wins = win_matrix(4, [[2, 0, 1], [3, 2]])
    assert wins[2, 0] == wins[2, 1] == wins[0, 1] == wins[3, 2] == 1
    assert wins.sum() == 4


@pytest.mark.parametrize("aggregation", ["pagerank", "wins"])
def test_a_consistent_ranker_puts_the_best_items_first(aggregation):
    # Blocks ranked by the true order (lower index = better): the best item wins everywhere and comes first, and
    # the merged order agrees with the truth far above chance.
    blocks = block_design(60, 12, 3, seed=1)
    order = joint_order(60, [sorted(block) for block in blocks], aggregation)
    assert sorted(order) == list(range(60)) and order[0] == 0
    concordant = sum(order.index(i) < order.index(j) for i, j in itertools.combinations(range(60), 2))
    assert concordant / (60 * 59 / 2) > 0.85


def test_pagerank_is_a_distribution_that_favours_winners():
    wins = win_matrix(3, [[0, 1, 2], [0, 2]])
    mass = pagerank(wins)
    assert mass.sum() == pytest.approx(1.0) and np.all(mass > 0)
    assert mass[0] > mass[1] > mass[2]


def test_jointrank_ranks_a_long_list_in_one_walk(smollm2):
    many = [(f"d{i}", text) for i, (_, text) in enumerate(DOCS * 3)]
    joint = BlockRanker(RerankSpec(mode="first", window=4, stride=2, long_lists="jointrank", cache_mb=64), smollm2)
    sliding = BlockRanker(RerankSpec(mode="first", window=4, stride=2, cache_mb=64), smollm2)
    for ranker in (joint, sliding):
        before = ranker.forward.walks
        ranked = ranker.rerank(QUERY, many)
        assert sorted(doc_id for doc_id, _ in ranked) == sorted(doc_id for doc_id, _ in many)
        assert [score for _, score in ranked] == [float(len(many) - rank) for rank in range(len(many))]
        walks = ranker.forward.walks - before
        assert walks == (1 if ranker is joint else 5)  # 12 documents: windows end at 12, 10, 8, 6, 4


def test_bad_jointrank_settings_name_the_allowed_values():
    with pytest.raises(BraidError, match="long_lists must be one of sliding, jointrank"):
        parse_rerank({"long_lists": "tournament"}, "p.toml")
    with pytest.raises(BraidError, match="aggregation must be one of pagerank, wins"):
        parse_rerank({"aggregation": "borda"}, "p.toml")
    with pytest.raises(BraidError, match="replicas must be >= 1"):
        parse_rerank({"replicas": 0}, "p.toml")
    with pytest.raises(BraidError, match="mode 'generate' only permutes"):
        RerankSpec(mode="generate", long_lists="jointrank")
