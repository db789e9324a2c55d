"""The hybrid-max LOCO benchmark's settings: the pipeline it tunes holds the baseline exactly, and its anchored grid
starts at the baseline's weights."""

from __future__ import annotations

import pytest

from benchmarks.hybrid_max_loco import anchored_grid, combined_spec, main
from braid.common.errors import BraidError
from braid.pipelines.spec import load_pipeline


def test_combined_pipeline_holds_the_baseline_and_the_targets_other_retrievers():
    hybrid, hybrid_max = load_pipeline("hybrid"), load_pipeline("hybrid-max")
    spec = combined_spec(hybrid, hybrid_max)
    names = [r.name for r in spec.retrievers]
    # BM25 is the same retriever in both (kept once); the 512-token dense and SPLADE are renamed beside the hybrid's.
    assert names == ["bm25", "dense", "splade", "hybrid-max.dense", "hybrid-max.splade", "maxsim"]
    assert spec.retrievers[:3] == hybrid.retrievers
    assert spec.retrievers[3].params["max_length"] == 512
    assert spec.fusion.normalization == hybrid.fusion.normalization
    assert spec.fusion.weights == {
        **hybrid.fusion.weights,
        "hybrid-max.dense": 0.0,
        "hybrid-max.splade": 0.0,
        "maxsim": 0.0,
    }


def test_a_pipeline_that_adds_nothing_is_refused():
    hybrid = load_pipeline("hybrid")
    with pytest.raises(BraidError, match="adds no retriever"):
        combined_spec(hybrid, hybrid)


def test_anchored_grid_scales_the_baseline_and_spreads_the_rest():
    grid = anchored_grid((0.2, 0.5, 0.3), added=2, step=0.5)
    assert grid[0] == (0.2, 0.5, 0.3, 0.0, 0.0)  # alpha = 1: the baseline itself comes first
    assert grid == [
        (0.2, 0.5, 0.3, 0.0, 0.0),
        (0.1, 0.25, 0.15, 0.0, 0.5),
        (0.1, 0.25, 0.15, 0.5, 0.0),
        (0.0, 0.0, 0.0, 0.0, 1.0),
        (0.0, 0.0, 0.0, 0.5, 0.5),
        (0.0, 0.0, 0.0, 1.0, 0.0),
    ]
    assert all(abs(sum(weights) - 1) < 1e-9 for weights in grid)
    for step in (0.3, 0.0, 1.5):
        with pytest.raises(BraidError, match="--step must divide 1"):
            anchored_grid((1.0,), added=1, step=step)


def test_the_command_exits_2_with_a_message_on_bad_input(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--pipeline", "hybrid", "--baseline", "hybrid", "--dataset", "scifact", "--dataset", "arguana"])
    assert exited.value.code == 2
    assert "adds no retriever" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["--dataset", "scifact"])  # one collection leaves nothing to tune on
    assert exited.value.code == 2
