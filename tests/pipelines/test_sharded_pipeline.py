"""Serving shards: a build job's ``shards = 3`` partitions answer every query as the unsharded indexes do."""

from __future__ import annotations

from itertools import islice
from pathlib import Path

import pytest

from braid.common.dataset_resolver import open_dataset_dir
from braid.common.errors import BraidError, Unsupported
from braid.common.metrics import evaluate
from braid.indexer.build_config import parse_build_config
from braid.indexer.build_job import BuildJob
from braid.indexer.manifest import Manifest
from braid.pipelines.pipeline import load_pipeline, open_pipeline
from braid.retriever.sharded_retriever import ShardedRetriever
from tests.conftest import write_beir

SHARDS = 3
KINDS = ("bm25", "embeddings", "splade", "slim", "binary", "multivector")
#: Built-in single-retriever pipelines over each kind above, and the default hybrid.
PIPELINES = ("bm25", "dense", "splade", "slim", "binary", "multivector", "hybrid")


def write_judged_sample(source: Path, root: Path, n_queries: int, n_docs: int) -> Path:
    """The first ``n_queries`` scifact test queries, their relevant documents and other documents up to
    ``n_docs``: a collection small enough to encode in seconds with qrels that make nDCG@10 meaningful."""
    dataset = open_dataset_dir(source)
    qrels = dict(islice(dataset.qrels("test").items(), n_queries))
    relevant = {doc_id for docs in qrels.values() for doc_id in docs}
    chosen = {}
    for document in dataset.iter_corpus():
        if document.doc_id in relevant or len(chosen) < n_docs - len(relevant):
            chosen[document.doc_id] = (document.title, document.text)
    queries = dataset.queries()
    return write_beir(
        root,
        docs=chosen,
        queries={qid: queries[qid] for qid in qrels},
        qrels=[(qid, doc_id, grade) for qid, docs in qrels.items() for doc_id, grade in docs.items()],
    )


@pytest.fixture(scope="module")
def sharded(shared_data, tmp_path_factory) -> tuple[Path, Path]:
    """(dataset, index root) with every kind built unsharded and in 3 serving shards by one build job."""
    root = tmp_path_factory.mktemp("sharded")
    dataset = write_judged_sample(shared_data / "scifact", root / "sample", 20, 90)
    raw = {
        "output": str(root / "out"),
        "collection": {"dataset": str(dataset), "shard_size": 10, "shards": SHARDS},
        "index": [{"kind": kind} for kind in KINDS],
    }
    BuildJob(parse_build_config(raw, "test"), open_dataset_dir(dataset)).run()
    return dataset, root / "out"


def open_both(sharded, name: str):
    dataset_dir, out = sharded
    dataset = open_dataset_dir(dataset_dir)
    spec = load_pipeline(name)
    return (
        dataset,
        open_pipeline(spec, dataset, out, build_missing=False),
        open_pipeline(spec, dataset, out, build_missing=False, shards=SHARDS),
    )


def test_each_shard_holds_its_part_of_the_collection(sharded):
    _, out = sharded
    counts = []
    for index in range(SHARDS):
        manifests = [Manifest.read(path) for path in (out / f"shard-{index}-of-{SHARDS}" / "sample").iterdir()]
        assert {m.kind for m in manifests} == {*KINDS, "tokens"}
        assert all(m.build["serving_shard"]["index"] == index for m in manifests)
        assert len({m.doc_count for m in manifests}) == 1  # every kind of a shard holds the same documents
        counts.append(manifests[0].doc_count)
    whole = Manifest.read(next((out / "sample").glob("bm25-*"))).doc_count
    assert sum(counts) == whole and min(counts) > 0


@pytest.mark.parametrize("name", PIPELINES[:-1])
def test_sharded_retrievers_return_the_unsharded_top_100(sharded, name):
    dataset, one, three = open_both(sharded, name)
    assert isinstance(three.stages[0].retriever, ShardedRetriever) and three.doc_count == one.doc_count
    for query in dataset.queries().values():
        expected = one.stages[0].retriever.search(query, 100)
        found = three.stages[0].retriever.search(query, 100)
        assert [hit.doc_id for hit in found] == [hit.doc_id for hit in expected], (name, query)
        # BM25's scores are recomputed with summed statistics: equal up to float32 rounding (and the 4-decimal
        # rounding of tie-breaking that may fall either side); the other kinds' scores are the same numbers.
        tolerance = 1.5e-4 if name == "bm25" else 1e-6
        assert all(abs(a.score - b.score) <= tolerance for a, b in zip(found, expected, strict=True))


def test_bm25_shards_score_with_collection_statistics_not_their_own(sharded):
    dataset, one, three = open_both(sharded, "bm25")
    shards = three.stages[0].retriever.shards
    query = next(iter(dataset.queries().values()))
    expected = {hit.doc_id: hit.score for hit in one.stages[0].retriever.search(query, 100)}
    own = [shard.search_partial(query, 100) for shard in shards]  # no statistics: each shard's own
    gaps = [
        abs(score - expected[doc_id])
        for part in own
        for doc_id, score in zip(part.ids, part.scores.tolist(), strict=True)
        if doc_id in expected
    ]
    assert max(gaps) > 0.01  # what summed statistics correct: per-shard idf and average length differ


def test_sharded_hybrid_evaluates_as_the_unsharded_one(sharded):
    dataset, one, three = open_both(sharded, "hybrid")
    queries = dataset.queries()
    runs = [pipeline.batch_search(queries, 100) for pipeline in (one, three)]
    scores = [
        evaluate({qid: {h.doc_id: h.score for h in hits} for qid, hits in run.items()}, dataset.qrels("test"))
        for run in runs
    ]
    ndcg = [score.aggregate["ndcg@10"] for score in scores]
    assert ndcg[0] > 0.3 and abs(ndcg[0] - ndcg[1]) <= 0.001, ndcg
    assert [[h.doc_id for h in runs[1][qid][:10]] for qid in queries] == [
        [h.doc_id for h in runs[0][qid][:10]] for qid in queries
    ]


def test_sharded_pipelines_refuse_updates_and_missing_shards(sharded, tmp_path):
    dataset, _, three = open_both(sharded, "bm25")
    assert not three.updatable
    with pytest.raises(Unsupported, match="shards"):
        three.add_documents([("new", "text")])
    with pytest.raises(BraidError, match="shard 0 of 4"):
        open_pipeline(load_pipeline("bm25"), dataset, sharded[1], build_missing=False, shards=4)


def test_a_rerun_reuses_the_shards_and_too_many_shards_is_refused(sharded, tmp_path):
    dataset_dir, out = sharded
    raw = {
        "output": str(out),
        "collection": {"dataset": str(dataset_dir), "shard_size": 10, "shards": SHARDS},
        "index": [{"kind": "bm25"}],
    }
    before = {p: Manifest.read(p).created_at for p in out.glob("shard-*/sample/bm25-*")}
    BuildJob(parse_build_config(raw, "test"), open_dataset_dir(dataset_dir)).run()
    assert {p: Manifest.read(p).created_at for p in out.glob("shard-*/sample/bm25-*")} == before
    raw = {**raw, "output": str(tmp_path / "few"), "collection": {**raw["collection"], "shard_size": 50, "shards": 3}}
    with pytest.raises(BraidError, match="lower shard_size"):
        BuildJob(parse_build_config(raw, "test"), open_dataset_dir(dataset_dir)).run()
    with pytest.raises(BraidError, match="shards must be an integer from 1"):
        parse_build_config({**raw, "collection": {**raw["collection"], "shards": 0}}, "test")
