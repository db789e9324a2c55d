"""Hybrid pipelines on real indexes: fusion of concurrent retrievers, explanations, cascades, bad input."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from braid.common.dataset_resolver import open_dataset_dir
from braid.common.errors import BraidError
from braid.pipelines.pipeline import SearchOptions, load_pipeline, open_pipeline
from braid.pipelines.spec import PipelineSpec, RetrieverSpec, pipeline_to_dict, save_pipeline
from braid.retriever.fusion import FusionSpec, ListShape, fuse
from braid.retriever.hit import Hit
from tests.conftest import write_sample

HYBRID = """
name = "two-bm25"
[[retrievers]]
name = "beir"
kind = "bm25"
depth = 3
[[retrievers]]
name = "lucene"
kind = "bm25"
k1 = 1.2
b = 0.75
depth = 4
[fusion]
method = "weighted"
normalization = "zscore"
weights = { beir = 0.7, lucene = 0.3 }
"""


@pytest.fixture
def hybrid(tiny_beir, tmp_path):
    path = tmp_path / "hybrid.toml"
    path.write_text(HYBRID)
    dataset = open_dataset_dir(tiny_beir)
    return open_pipeline(load_pipeline(str(path)), dataset, tmp_path / "indexes")


def test_fused_search_equals_fusing_each_retrievers_list(hybrid):
    beir, lucene = (stage.retriever for stage in hybrid.stages)
    spec = hybrid.spec.fusion
    # BM25 scores the documents a query does not match 0 and leaves them out: fusion is told each list's depth.
    shapes = [ListShape(3, unmatched=0.0), ListShape(4, unmatched=0.0)]
    assert hybrid.list_shapes == shapes
    short = 0
    for query in ("cat fish", "dog", "bird dog"):
        lists = [beir.search(query, 3), lucene.search(query, 4)]
        short += len(lists[1]) < 4
        assert hybrid.search(query, 2) == fuse(lists, ["beir", "lucene"], spec, 2, shapes)
    assert short, "no list ran out of matches: the check above would not exercise the padding"
    batch = hybrid.batch_search({"q1": "cat fish", "q2": "dog"}, 4)
    assert batch["q1"] == hybrid.search("cat fish", 4) and batch["q2"] == hybrid.search("dog", 4)


def test_explanations_give_each_retrievers_rank_and_score(hybrid):
    beir, lucene = (stage.retriever for stage in hybrid.stages)
    hits, timings = hybrid.search_explained("cat fish", 4)
    lists = {"beir": beir.search("cat fish", 3), "lucene": lucene.search("cat fish", 4)}
    for hit in hits:
        for name, source in hit.sources.items():
            ids = [h.doc_id for h in lists[name]]
            if hit.doc_id in ids:
                rank = ids.index(hit.doc_id) + 1
                assert source.rank == rank and source.score == pytest.approx(lists[name][rank - 1].score)
            else:
                assert source.rank is None and source.score is None
        assert hit.fused_score == hit.score
    assert {"retriever.beir", "retriever.lucene", "fusion", "total"} <= set(timings)


PER_DATASET = """
[per_dataset.tiny.fusion]
method = "rrf"
k = 1.0
weights = { beir = 0.2, lucene = 0.8 }
[per_dataset.tiny.tuned]
datasets = ["tiny/train"]
"""


def test_per_dataset_fusion_applies_only_on_its_collection(tiny_beir, tmp_path):
    path = tmp_path / "hybrid.toml"
    path.write_text(HYBRID + PER_DATASET)
    spec = load_pipeline(str(path))
    override = FusionSpec("rrf", k=1.0, weights={"beir": 0.2, "lucene": 0.8})
    assert spec.fusion_for("tiny") == override and spec.fusion_for("other") == spec.fusion
    tiny = open_pipeline(spec, open_dataset_dir(tiny_beir), tmp_path / "indexes")
    assert tiny.fusion == override
    beir, lucene = (stage.retriever for stage in tiny.stages)
    for query in ("cat fish", "dog", "bird dog"):
        lists = [beir.search(query, 3), lucene.search(query, 4)]
        assert tiny.search(query, 3) == fuse(lists, ["beir", "lucene"], override, 3, tiny.list_shapes)
    # The same collection under another name has no tuned setting of its own: the pipeline's [fusion] applies.
    shutil.copytree(tiny_beir, tmp_path / "other")
    other = open_pipeline(spec, open_dataset_dir(tmp_path / "other"), tmp_path / "indexes-other")
    assert other.fusion == spec.fusion
    lists = [beir.search("cat fish", 3), lucene.search("cat fish", 4)]
    assert other.search("cat fish", 3) == fuse(lists, ["beir", "lucene"], spec.fusion, 3, other.list_shapes)
    # Written back (as braid tune does), the per-dataset table survives unchanged.
    save_pipeline(spec, tmp_path / "copy.toml")
    again = load_pipeline(str(tmp_path / "copy.toml"))
    assert again.per_dataset == spec.per_dataset and again.fusion == spec.fusion


def test_a_retriever_at_weight_zero_does_not_run_unless_a_fusion_weighs_it(tiny_beir, tmp_path):
    path = tmp_path / "hybrid.toml"
    # lucene counts only on the collection named "tiny" (its own fusion) or where a request weighs it.
    only_tiny = PER_DATASET.replace('method = "rrf"\nk = 1.0', 'method = "weighted"\nnormalization = "zscore"')
    path.write_text(HYBRID.replace("lucene = 0.3", "lucene = 0.0") + only_tiny)
    spec = load_pipeline(str(path))
    shutil.copytree(tiny_beir, tmp_path / "other")
    other = open_pipeline(spec, open_dataset_dir(tmp_path / "other"), tmp_path / "indexes")
    beir, lucene = (stage.retriever for stage in other.stages)
    for query in ("cat fish", "dog", "bird dog"):
        lists, names, shapes = [beir.search(query, 3), lucene.search(query, 4)], ["beir", "lucene"], other.list_shapes
        hits, timings = other.search_explained(query, 3)
        # The same top as fusing both lists, lucene's term 0: it neither ran nor shows in the explanation.
        assert [Hit(h.doc_id, h.score) for h in hits] == fuse(lists, names, spec.fusion, 3, shapes)
        assert "retriever.lucene" not in timings and "retriever.beir" in timings
        assert all(set(hit.sources) == {"beir"} for hit in hits)
        assert other.batch_search({"q": query}, 3)["q"] == other.search(query, 3)
        # A request's weight revives it: both run, both explain.
        revived = SearchOptions(weights={"lucene": 0.5})
        hits, timings = other.search_explained(query, 3, revived)
        override = FusionSpec("weighted", normalization="zscore", weights={"beir": 0.7, "lucene": 0.5})
        assert [Hit(h.doc_id, h.score) for h in hits] == fuse(lists, names, override, 3, shapes)
        assert "retriever.lucene" in timings and all(set(hit.sources) == {"beir", "lucene"} for hit in hits)
    # On "tiny", its own fusion weighs both (beir 0.2, lucene 0.8): both run.
    tiny = open_pipeline(spec, open_dataset_dir(tiny_beir), tmp_path / "indexes")
    hits, timings = tiny.search_explained("cat fish", 3)
    assert "retriever.lucene" in timings and all(set(hit.sources) == {"beir", "lucene"} for hit in hits)
    # Tuning still reads every retriever's list, weighed or not.
    assert len(other.first_stage_lists({"q": "dog"}, 3)) == 2


def test_k_of_zero_or_beyond_the_collection_is_refused(hybrid):
    with pytest.raises(BraidError, match="k must be between 1 and the collection's 4 documents, got 0"):
        hybrid.search("dog", 0)
    with pytest.raises(BraidError, match="got 5"):
        hybrid.search("dog", 5)


def test_named_index_must_be_built_and_match(tiny_beir, tmp_path):
    dataset = open_dataset_dir(tiny_beir)
    missing = PipelineSpec(
        "p",
        (
            RetrieverSpec(
                "bm25",
                {"stemmer": "porter", "keep_stopwords": False, "k1": 0.9, "b": 0.4},
                index=str(tmp_path / "nowhere"),
            ),
        ),
    )
    with pytest.raises(BraidError, match=r"names index .*nowhere, which is not built"):
        open_pipeline(missing, dataset, tmp_path / "indexes")


@pytest.mark.parametrize("name", ["hybrid-rrf", "hybrid-max"])
def test_pipeline_round_trips_through_toml(tmp_path, name):
    spec = load_pipeline(name)
    path = tmp_path / "copy.toml"
    save_pipeline(spec, path, header="copied")
    assert path.read_text().startswith("# copied\n")
    again = load_pipeline(str(path))
    assert pipeline_to_dict(again) == pipeline_to_dict(spec) and again == spec
    assert name != "hybrid-rrf" or again.fusion == FusionSpec("rrf", k=60.0)


def test_cascade_head_equals_last_stage_over_first_stage_candidates(shared_data, tmp_path):
    root = tmp_path / "sample"
    _, queries = write_sample(shared_data / "scifact", root, n_docs=80, n_queries=5)
    pipeline_file = tmp_path / "cascade.toml"
    pipeline_file.write_text(
        'name = "cascade"\n[[retrievers]]\nkind = "bm25"\ndepth = 30\n[[cascade]]\nkind = "dense"\ndepth = 30\n'
    )
    dataset = open_dataset_dir(root)
    cascade = open_pipeline(load_pipeline(str(pipeline_file)), dataset, tmp_path / "indexes")
    bm25 = cascade.stages[0].retriever
    dense = cascade.cascade[0].retriever
    for query in queries.values():
        candidates = [hit.doc_id for hit in bm25.search(query, 30)]
        # The last stage alone over all candidates of the first: a full dense search restricted to them.
        everything = dense.search(query, 80)
        expected = [hit.doc_id for hit in everything if hit.doc_id in set(candidates)]
        head, _ = cascade.search_explained(query, len(candidates))
        assert [hit.doc_id for hit in head] == expected
        exact = dict(zip(candidates, dense.score(query, candidates), strict=True))
        assert [hit.stages["dense"] for hit in head] == pytest.approx([exact[hit.doc_id] for hit in head], abs=1e-6)
        assert np.all(np.diff([hit.score for hit in head]) < 0)
