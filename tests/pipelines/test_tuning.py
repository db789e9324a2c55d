"""Fusion tuning scores each setting as the pipeline would fuse: with each list's shape (depth, unmatched score)."""

from __future__ import annotations

import math

import pytest

from braid.common.dataset_resolver import open_dataset_dir
from braid.pipelines.tuning import SplitLists, grid_values
from braid.retriever.fusion import FusionSpec, ListShape
from braid.retriever.hit import Hit

# A sparse list that ran out of matches after 2 of its 5 hits, and a full one. Padded to its depth, the sparse list
# puts x (its best) second: fused order y, x, z. Normalized alone, x falls to third (y, z, x).
SPARSE = {"q1": [Hit("x", 3.0), Hit("y", 1.0)]}
FULL = {"q1": [Hit("y", 10.0), Hit("z", 9.9), Hit("x", 0.0)]}
SHAPES = [ListShape(5, unmatched=0.0), ListShape(3)]


@pytest.mark.parametrize(("metric", "second", "third"), [("ndcg@10", 1 / math.log2(3), 0.5), ("mrr@10", 0.5, 1 / 3)])
def test_grid_values_normalize_short_sparse_lists_at_their_depth(tiny_beir, metric, second, third):
    dataset = open_dataset_dir(tiny_beir)
    qrels = {"q1": {"x": 1}}
    setting, weights = [FusionSpec("weighted", normalization="zscore")], [(0.5, 0.5)]
    shaped = SplitLists(dataset, "test", {"q1": "cat"}, qrels, [SPARSE, FULL], SHAPES)
    assert grid_values(shaped, setting, weights, metric)[0, 0] == pytest.approx(second)
    alone = SplitLists(dataset, "test", {"q1": "cat"}, qrels, [SPARSE, FULL])
    assert grid_values(alone, setting, weights, metric)[0, 0] == pytest.approx(third)
