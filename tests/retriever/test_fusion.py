"""Fusion against hand-computed examples: RRF, min-max, z-score and raw weighted sums, lists that ran out of matches,
ties, validation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from braid.common.errors import BraidError
from braid.pipelines.tuning import simplex_grid
from braid.retriever.fusion import FusionSpec, ListShape, fuse, normalize
from braid.retriever.hit import Hit

A = [Hit("a", 3.0), Hit("b", 2.0), Hit("c", 1.0)]
B = [Hit("c", 10.0), Hit("a", 6.0), Hit("d", 2.0)]


def scores(hits: list[Hit]) -> dict[str, float]:
    return {hit.doc_id: hit.score for hit in hits}


def test_rrf_sums_reciprocal_ranks():
    fused = fuse([A, B], ["A", "B"], FusionSpec("rrf", k=60), k=10)
    assert [hit.doc_id for hit in fused] == ["a", "c", "b", "d"]
    assert scores(fused) == pytest.approx(
        {"a": 1 / 61 + 1 / 62, "c": 1 / 63 + 1 / 61, "b": 1 / 62, "d": 1 / 63}, abs=1e-12
    )
    weighted = fuse([A, B], ["A", "B"], FusionSpec("rrf", k=0, weights={"A": 2.0, "B": 1.0}), k=2)
    assert scores(weighted) == pytest.approx({"a": 2 / 1 + 1 / 2, "c": 2 / 3 + 1 / 1})
    assert [hit.doc_id for hit in weighted] == ["a", "c"]


def test_minmax_weighted_sum_gives_missing_documents_the_list_minimum():
    fused = fuse([A, B], ["A", "B"], FusionSpec("weighted", normalization="minmax", weights={"A": 0.6, "B": 0.4}), 10)
    # A -> a 1, b 0.5, c 0; B -> c 1, a 0.5, d 0; b is missing from B and d from A: both take 0.
    assert [hit.doc_id for hit in fused] == ["a", "c", "b", "d"]
    assert scores(fused) == pytest.approx({"a": 0.8, "c": 0.4, "b": 0.3, "d": 0.0})


def test_zscore_weighted_sum():
    fused = fuse([A, B], ["A", "B"], FusionSpec("weighted", normalization="zscore"), 10)
    z = 1 / math.sqrt(2 / 3)  # (3 - 2) / std([3, 2, 1]); B's scores are the same up to scale
    assert scores(fused) == pytest.approx({"a": z + 0.0, "c": -z + z, "b": 0.0 - z, "d": -z - z})
    assert [hit.doc_id for hit in fused] == ["a", "c", "b", "d"]


def test_a_list_that_ran_out_of_matches_is_normalized_at_its_depth():
    # A sparse list of 2 hits asked for 5: three more documents score 0, so its statistics are those of
    # [3, 1, 0, 0, 0] (mean 0.8, std 1.166...) and the documents it left out take 0's z-score.
    short = [Hit("a", 3.0), Hit("b", 1.0)]
    full = [Hit("c", 10.0), Hit("a", 6.0), Hit("d", 2.0)]
    shapes = [ListShape(5, unmatched=0.0), ListShape(3)]
    fused = fuse([short, full], ["S", "F"], FusionSpec("weighted", normalization="zscore"), 10, shapes)
    mean, std = 0.8, float(np.std([3.0, 1.0, 0.0, 0.0, 0.0]))
    z = 1 / math.sqrt(2 / 3)  # the full list, as in test_zscore_weighted_sum
    assert scores(fused) == pytest.approx(
        {"a": (3 - mean) / std + 0.0, "b": (1 - mean) / std - z, "c": -mean / std + z, "d": -mean / std - z}
    )
    # Without its shape the short list is normalized alone: a and b at +1 and -1, whatever their scores.
    alone = fuse([short, full], ["S", "F"], FusionSpec("weighted", normalization="zscore"), 10)
    assert scores(alone)["b"] == pytest.approx(-1.0 - z)
    # Min-max: the unmatched score is the floor, so the last hit keeps a score above the documents left out.
    minmax = fuse([short, full], ["S", "F"], FusionSpec("weighted", normalization="minmax"), 10, shapes)
    assert scores(minmax) == pytest.approx({"a": 1.0 + 0.5, "b": 1 / 3 + 0.0, "c": 0.0 + 1.0, "d": 0.0 + 0.0})
    # A list at its depth, or one whose retriever has no unmatched score, is normalized as before.
    assert ListShape(5, unmatched=0.0).left_out(2) == (3, 0.0)
    assert ListShape(2, unmatched=0.0).left_out(2) == (0, 0.0) and ListShape(5).left_out(2) == (0, 0.0)
    assert fuse([short, full], ["S", "F"], FusionSpec("weighted"), 10, [ListShape(2, 0.0), ListShape(3)]) == fuse(
        [short, full], ["S", "F"], FusionSpec("weighted"), 10
    )
    with pytest.raises(ValueError, match="one shape per list"):
        fuse([short, full], ["S", "F"], FusionSpec("weighted"), 10, shapes[:1])


def test_unnormalized_sum_uses_raw_scores():
    fused = fuse([A, B], ["A", "B"], FusionSpec("weighted", normalization="none"), 10)
    assert scores(fused) == pytest.approx({"a": 9.0, "c": 11.0, "b": 2.0 + 2.0, "d": 1.0 + 2.0})


def test_constant_and_empty_lists_do_not_divide_by_zero():
    assert normalize(np.array([2.0, 2.0]), "minmax").tolist() == [1.0, 1.0]
    assert normalize(np.array([2.0, 2.0]), "zscore").tolist() == [0.0, 0.0]
    assert fuse([[], []], ["A", "B"], FusionSpec("weighted", normalization="zscore"), 10) == []
    only = fuse([A, []], ["A", "B"], FusionSpec("weighted"), 10)
    assert [hit.doc_id for hit in only] == ["a", "b", "c"]


def test_ties_are_ordered_by_id_and_kept_strictly_decreasing():
    fused = fuse([[Hit("y", 1.0)], [Hit("x", 1.0)]], ["A", "B"], FusionSpec("rrf"), 10)
    assert [hit.doc_id for hit in fused] == ["x", "y"]
    assert fused[0].score == pytest.approx(1 / 61) and fused[1].score < fused[0].score


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "borda"}, "method must be one of rrf, weighted"),
        ({"normalization": "softmax"}, "normalization must be one of minmax, zscore, none"),
        ({"weights": {"A": -1.0}}, "weight of 'A' must be a finite number >= 0"),
        ({"k": -5.0}, "k must be >= 0"),
    ],
)
def test_fusion_settings_are_validated(kwargs, message):
    with pytest.raises(BraidError, match=message):
        FusionSpec(**kwargs)


def test_weight_grid_covers_the_simplex():
    grid = simplex_grid(3, 0.5)
    assert sorted(grid) == sorted(
        [(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (0.5, 0.5, 0.0), (0.5, 0.0, 0.5), (0.0, 0.5, 0.5)]
    )
    assert len(simplex_grid(3, 0.1)) == 66
    with pytest.raises(BraidError, match="divide 1 evenly"):
        simplex_grid(2, 0.3)
