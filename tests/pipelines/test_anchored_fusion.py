"""The anchored pipeline holds the baseline exactly and adds the target's other retrievers at weight 0; the anchored
grid starts at the baseline's weights."""

from __future__ import annotations

import pytest

from braid.common.errors import BraidError
from braid.pipelines.anchored_fusion import anchored_grid, anchored_pipeline
from braid.pipelines.spec import load_pipeline


def test_anchored_pipeline_holds_the_baseline_and_the_targets_other_retrievers():
    hybrid, hybrid_max = load_pipeline("hybrid"), load_pipeline("hybrid-max")
    spec = anchored_pipeline(hybrid, hybrid_max)
    names = [r.name for r in spec.retrievers]
    # BM25 is the same retriever in both (kept once); the 512-token dense and SPLADE are renamed beside the hybrid's.
    assert names == ["bm25", "dense", "splade", "hybrid-max.dense", "hybrid-max.splade", "maxsim"]
    assert spec.name == "hybrid+hybrid-max"
    assert spec.retrievers[:3] == hybrid.retrievers
    assert spec.retrievers[3].params["max_length"] == 512
    assert spec.fusion.normalization == hybrid.fusion.normalization
    assert spec.fusion.weights == {
        **hybrid.fusion.weights,
        "hybrid-max.dense": 0.0,
        "hybrid-max.splade": 0.0,
        "maxsim": 0.0,
    }


def test_what_cannot_be_anchored_is_refused():
    hybrid = load_pipeline("hybrid")
    with pytest.raises(BraidError, match="adds no retriever"):
        anchored_pipeline(hybrid, hybrid)
    with pytest.raises(BraidError, match="must fuse by a weighted sum"):
        anchored_pipeline(load_pipeline("hybrid-rrf"), hybrid)
    with pytest.raises(BraidError, match="must fuse by a weighted sum"):
        anchored_pipeline(load_pipeline("bm25"), hybrid)  # one retriever, no fusion


def test_anchored_grid_scales_the_baseline_and_spreads_the_rest():
    grid = anchored_grid((0.4, 1.0, 0.6), added=2, step=0.5)  # normalized: 0.2, 0.5, 0.3
    assert grid == [
        (0.2, 0.5, 0.3, 0.0, 0.0),  # alpha = 1: the baseline itself comes first
        (0.1, 0.25, 0.15, 0.0, 0.5),
        (0.1, 0.25, 0.15, 0.5, 0.0),
        (0.0, 0.0, 0.0, 0.0, 1.0),
        (0.0, 0.0, 0.0, 0.5, 0.5),
        (0.0, 0.0, 0.0, 1.0, 0.0),
    ]
    assert all(abs(sum(weights) - 1) < 1e-9 for weights in anchored_grid((0.2, 0.5, 0.3), added=3, step=0.1))
    for step in (0.3, 0.0, 1.5):
        with pytest.raises(BraidError, match="--anchor-step must"):
            anchored_grid((1.0,), added=1, step=step)
    with pytest.raises(BraidError, match="positive sum"):
        anchored_grid((0.0, 0.0), added=1, step=0.5)
