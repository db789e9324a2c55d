"""Serving shards: a build job's ``shards = 3`` partitions answer every query as the unsharded indexes do."""

from __future__ import annotations

import dataclasses
import shutil
from itertools import islice
from pathlib import Path

import pytest

from braid.common.dataset_resolver import open_dataset_dir
from braid.common.errors import BraidError, Unsupported
from braid.common.metrics import evaluate
from braid.indexer import update_transaction
from braid.indexer.build_config import parse_build_config
from braid.indexer.build_job import BuildJob
from braid.indexer.index_kind import Staged
from braid.indexer.kinds import index_kind
from braid.indexer.manifest import PENDING_NAME, Manifest
from braid.indexer.multivector_index import live_doc_ids
from braid.indexer.shard_routing import home_shard, route_additions
from braid.indexer.update_transaction import Change, commit_changes
from braid.indexer.verify import verify_index
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


def test_sharded_pipelines_refuse_fixed_kinds_updates_and_missing_shards(sharded, tmp_path):
    dataset, _, three = open_both(sharded, "bm25")
    assert not three.updatable
    with pytest.raises(Unsupported, match="bm25 indexes, which take no updates"):
        three.add_documents([("new", "text")])
    with pytest.raises(BraidError, match="shard 0 of 4"):
        open_pipeline(load_pipeline("bm25"), dataset, sharded[1], build_missing=False, shards=4)


@pytest.fixture
def editable(sharded, tmp_path) -> tuple[Path, Path]:
    """A copy of the built indexes that a test may update."""
    dataset_dir, out = sharded
    shutil.copytree(out, tmp_path / "out", symlinks=True)
    return dataset_dir, tmp_path / "out"


def multivector_shards(out: Path) -> list[Path]:
    return [next((out / f"shard-{index}-of-{SHARDS}" / "sample").glob("multivector-*")) for index in range(SHARDS)]


NEW_DOCUMENTS = [
    (f"new-{number}", text)
    for number, text in enumerate(
        [
            "Vitamin D supplementation lowers the risk of acute respiratory infection.",
            "Statins reduce cardiovascular events in patients with high cholesterol.",
            "Gut microbiota composition changes with antibiotic exposure in infants.",
            "Aspirin use is associated with fewer colorectal cancers in long-term follow-up.",
            "Sleep deprivation impairs glucose tolerance in healthy adults.",
        ]
    )
]


def test_sharded_updates_answer_as_the_same_updates_unsharded(editable):
    dataset, one, three = open_both(editable, "multivector")
    assert three.updatable and one.updatable
    gone = [hit.doc_id for hit in one.stages[0].retriever.search(next(iter(dataset.queries().values())), 3)]
    for pipeline in (one, three):
        assert pipeline.add_documents(NEW_DOCUMENTS) == one.doc_count + len(NEW_DOCUMENTS)
        assert pipeline.delete_documents(gone) == one.doc_count + len(NEW_DOCUMENTS) - len(gone)
    # Each new document went to its home shard, and every shard index still verifies.
    shards = multivector_shards(editable[1])
    held = [set(live_doc_ids(path)) for path in shards]
    for doc_id, _ in NEW_DOCUMENTS:
        assert [doc_id in ids for ids in held] == [index == home_shard(doc_id, SHARDS) for index in range(SHARDS)]
    assert not set(gone) & set().union(*held)
    assert all(verify_index(path) == [] for path in shards)
    one, three = reopen(editable, one), open_sharded(editable)  # reopened: they serve the change
    assert three.doc_count == one.doc_count == sum(len(ids) for ids in held)
    for query in [*dataset.queries().values(), *(text for _, text in NEW_DOCUMENTS)]:
        expected = one.stages[0].retriever.search(query, 100)
        found = three.stages[0].retriever.search(query, 100)
        assert [hit.doc_id for hit in found] == [hit.doc_id for hit in expected], query
        assert all(abs(a.score - b.score) <= 1e-6 for a, b in zip(found, expected, strict=True))
    with pytest.raises(BraidError, match=r"1 document id\(s\) already in the index"):
        three.add_documents([NEW_DOCUMENTS[0]])
    with pytest.raises(BraidError, match=r"unknown document id\(s\), e\.g\. \['ghost'\]"):
        three.delete_documents([NEW_DOCUMENTS[1][0], "ghost"])
    assert [set(live_doc_ids(path)) for path in shards] == held  # refused: nothing changed in any shard


def open_sharded(editable):
    return open_pipeline(
        load_pipeline("multivector"), open_dataset_dir(editable[0]), editable[1], build_missing=False, shards=SHARDS
    )


def reopen(editable, unsharded):
    """The unsharded pipeline over the folders it serves, as a service reopens it after an update (an edited index
    is no longer the dataset's index, so it is not looked up by dataset again)."""
    spec = unsharded.spec
    stages = tuple(dataclasses.replace(stage.spec, index=str(stage.path)) for stage in unsharded.stages)
    return open_pipeline(
        dataclasses.replace(spec, retrievers=stages), open_dataset_dir(editable[0]), editable[1], build_missing=False
    )


def snapshot(paths: list[Path]) -> list[dict[Path, bytes]]:
    return [{p.relative_to(path): p.read_bytes() for p in path.rglob("*") if p.is_file()} for path in paths]


def fail_at_the_decision(monkeypatch, error: BaseException) -> None:
    """Make writing an update's decision file (its commit point) raise ``error``."""
    real_write = update_transaction.atomic_write_text

    def write(path: Path, text: str) -> None:
        if path.name.startswith(update_transaction.DECISION_PREFIX):
            raise error
        real_write(path, text)

    monkeypatch.setattr(update_transaction, "atomic_write_text", write)


def test_an_update_interrupted_before_its_commit_point_is_undone_on_open(editable, monkeypatch):
    _, _, three = open_both(editable, "multivector")
    shards = multivector_shards(editable[1])
    before = snapshot(shards)
    fail_at_the_decision(monkeypatch, KeyboardInterrupt())  # the process dies there: nothing after it runs
    with pytest.raises(KeyboardInterrupt):
        three.add_documents(NEW_DOCUMENTS)
    monkeypatch.undo()
    assert all((path / PENDING_NAME).is_file() for path in shards)  # every shard staged the change
    reopened = open_sharded(editable)  # opening settles: no decision, so the change is undone
    assert snapshot(shards) == before and reopened.doc_count == three.doc_count


def test_a_failed_decision_write_undoes_the_update_at_once(editable, monkeypatch):
    _, _, three = open_both(editable, "multivector")
    shards = multivector_shards(editable[1])
    before = snapshot(shards)
    fail_at_the_decision(monkeypatch, OSError(28, "No space left on device"))
    with pytest.raises(OSError, match="No space left"):
        three.add_documents(NEW_DOCUMENTS)
    assert snapshot(shards) == before  # no marker, no staged generation: nothing is left to settle


def test_an_update_interrupted_after_its_commit_point_is_finished_on_open(editable):
    _, one, three = open_both(editable, "multivector")
    shards = multivector_shards(editable[1])
    updates = index_kind("multivector").updates
    published: list[Path] = []

    def publish_one_then_die(staged: Staged) -> int:
        if published:
            raise KeyboardInterrupt  # dies after the decision and the first shard's switch
        published.append(staged.index_dir)
        return updates.publish(staged)

    dying = dataclasses.replace(updates, publish=publish_one_then_die)
    routed = route_additions([set(live_doc_ids(path)) for path in shards], NEW_DOCUMENTS)
    changes = [Change(path, dying, add=part) for path, part in zip(shards, routed, strict=True) if part]
    assert len(changes) > 1
    with pytest.raises(KeyboardInterrupt):
        commit_changes(changes)
    decisions = list(editable[1].glob(f"{update_transaction.DECISION_PREFIX}*"))
    assert len(decisions) == 1 and sum((path / PENDING_NAME).is_file() for path in shards) == len(changes) - 1
    reopened = open_sharded(editable)  # opening settles: decided, so the rest is published
    assert reopened.doc_count == three.doc_count + len(NEW_DOCUMENTS)
    assert not any((path / PENDING_NAME).exists() for path in shards) and not decisions[0].exists()
    assert all(verify_index(path) == [] for path in shards)
    one.add_documents(NEW_DOCUMENTS)
    one = reopen(editable, one)
    query = NEW_DOCUMENTS[2][1]
    expected = [hit.doc_id for hit in one.stages[0].retriever.search(query, 100)]
    assert [hit.doc_id for hit in reopened.stages[0].retriever.search(query, 100)] == expected


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
