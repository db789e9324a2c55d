"""The anchored pipeline holds the baseline exactly and adds the target's other retrievers at weight 0; the anchored
grid starts at the baseline's weights."""

from __future__ import annotations

from contextlib import closing
from dataclasses import replace

import pytest

from braid.common.dataset_resolver import open_dataset_dir
from braid.common.errors import BraidError
from braid.pipelines.anchored_fusion import anchored_grid, anchored_pipeline, drop_unweighted
from braid.pipelines.pipeline import open_pipeline
from braid.pipelines.spec import PipelineSpec, counted_retrievers, load_pipeline
from braid.retriever.fusion import FusionSpec
from tests.pipelines.test_hybrid_pipeline import HYBRID


def _late_interaction() -> PipelineSpec:
    """hybrid-max's lists without the hybrid's own, named as it named them before it held the hybrid's: BM25,
    512-token dense and SPLADE under the hybrid's names (a clash for anchoring to resolve), MaxSim."""
    spec = load_pipeline("hybrid-max")
    short = {name: name.removesuffix("-512") for name in (r.name for r in spec.retrievers)}
    own = [
        replace(r, name=short[r.name], candidates_from=tuple(short[n] for n in r.candidates_from))
        for r in spec.retrievers
        if r.name not in ("dense", "splade")
    ]
    fusion = FusionSpec("weighted", normalization="minmax", weights={r.name: 0.25 for r in own})
    return PipelineSpec("hybrid-max", tuple(own), fusion)


def test_anchored_pipeline_holds_the_baseline_and_the_targets_other_retrievers():
    hybrid = load_pipeline("hybrid")
    spec = anchored_pipeline(hybrid, _late_interaction())
    names = [r.name for r in spec.retrievers]
    # BM25 is the same retriever in both (kept once); the 512-token dense and SPLADE are renamed beside the hybrid's.
    assert names == ["bm25", "dense", "splade", "hybrid-max.dense", "hybrid-max.splade", "maxsim"]
    assert spec.name == "hybrid+hybrid-max"
    assert spec.retrievers[:3] == hybrid.retrievers
    assert spec.retrievers[3].params["max_length"] == 512
    # MaxSim scores the tops it scored in hybrid-max (BM25 is the hybrid's now), not the hybrid's 256-token lists too.
    assert spec.retrievers[5].candidates_from == ("bm25", "hybrid-max.dense", "hybrid-max.splade")
    assert spec.fusion.normalization == hybrid.fusion.normalization
    assert spec.fusion.weights == {
        **hybrid.fusion.weights,
        "hybrid-max.dense": 0.0,
        "hybrid-max.splade": 0.0,
        "maxsim": 0.0,
    }


def test_hybrid_max_is_the_anchored_pipeline_ranking_as_the_hybrid_but_on_scifact():
    hybrid, hybrid_max = load_pipeline("hybrid"), load_pipeline("hybrid-max")
    assert anchored_pipeline(hybrid, hybrid_max).retrievers == hybrid_max.retrievers  # what the LOCO run tuned
    # Its [fusion] is leave-one-collection-out's clear-gain choice: the hybrid's, the others at 0, not run.
    assert hybrid_max.tuned["protocol"] == "leave-one-collection-out, family clear-gain"
    assert counted_retrievers(hybrid_max.retrievers, hybrid_max.fusion) == hybrid.retrievers
    assert hybrid_max.fusion.weight_vector(["bm25", "dense", "splade"]).tolist() == [0.2, 0.5, 0.3]
    # scifact's own: its train split's fit over BM25, the 512-token views and MaxSim.
    on_scifact = counted_retrievers(hybrid_max.retrievers, hybrid_max.fusion_for("scifact"))
    assert [r.name for r in on_scifact] == ["bm25", "dense-512", "splade-512", "maxsim"]
    assert hybrid_max.per_dataset["scifact"].tuned["datasets"] == ["scifact/train"]


def test_a_retriever_differing_only_in_its_index_folder_is_added():
    hybrid = load_pipeline("hybrid")
    elsewhere = replace(hybrid.retrievers[0], index="indexes/other-bm25")
    target = replace(hybrid, name="other", retrievers=(elsewhere,), fusion=None)
    spec = anchored_pipeline(hybrid, target)
    assert [r.name for r in spec.retrievers] == ["bm25", "dense", "splade", "other.bm25"]
    assert spec.retrievers[3].index == "indexes/other-bm25"


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


def _weighted(spec, **weights):
    return replace(
        spec, fusion=replace(spec.fusion, weights={r.name: weights.get(r.name, 0.0) for r in spec.retrievers})
    )


def test_drop_unweighted_keeps_what_counts_and_what_feeds_a_rescoring_retriever():
    spec = anchored_pipeline(load_pipeline("hybrid"), _late_interaction())
    assert drop_unweighted(spec).retrievers == load_pipeline("hybrid").retrievers  # added at 0: the hybrid's three
    plain = drop_unweighted(_weighted(spec, bm25=0.5, **{"hybrid-max.dense": 0.5}))
    assert [r.name for r in plain.retrievers] == ["bm25", "hybrid-max.dense"]
    assert plain.fusion.weights == {"bm25": 0.5, "hybrid-max.dense": 0.5}
    # MaxSim (scores_top) scores the tops of the lists it names: weighted, it keeps them, and only them.
    rescored = drop_unweighted(_weighted(spec, bm25=0.5, maxsim=0.5))
    assert [r.name for r in rescored.retrievers] == ["bm25", "hybrid-max.dense", "hybrid-max.splade", "maxsim"]
    # Naming none, it scores every searching retriever's top: it keeps them all.
    every = replace(spec, retrievers=(*spec.retrievers[:5], replace(spec.retrievers[5], candidates_from=())))
    rescored = drop_unweighted(_weighted(every, bm25=0.5, maxsim=0.5))
    assert [r.name for r in rescored.retrievers] == [r.name for r in spec.retrievers]
    rrf = load_pipeline("hybrid-rrf")
    assert drop_unweighted(rrf) is rrf


def test_a_pipeline_less_its_unweighted_retrievers_ranks_the_same_top(tiny_beir, tmp_path):
    path = tmp_path / "two.toml"
    path.write_text(HYBRID.replace("weights = { beir = 0.7, lucene = 0.3 }", "weights = { beir = 1.0, lucene = 0.0 }"))
    spec = load_pipeline(str(path))
    dataset = open_dataset_dir(tiny_beir)
    with (
        closing(open_pipeline(spec, dataset, tmp_path / "idx")) as full,
        closing(open_pipeline(drop_unweighted(spec), dataset, tmp_path / "idx")) as kept,
    ):
        assert [r.spec.name for r in kept.stages] == ["beir"]
        for query in ("cat", "fish", "cat fish"):
            assert kept.search(query, 3) == full.search(query, 3)
