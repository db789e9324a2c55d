"""Live collections: after any sequence of upserts and deletes, every index kind ranks as a fresh build of the final
documents does, the writes survive a reopen, and a failed write leaves nothing behind."""

from __future__ import annotations

import json
import random
from functools import partial
from itertools import islice
from pathlib import Path

import pytest

from braid.common.collection_writer import stage_collection
from braid.common.dataset import Document
from braid.common.dataset_resolver import open_dataset_dir
from braid.common.errors import BraidError, DocumentsExist, UnknownDocuments
from braid.indexer.index_store import build_index
from braid.indexer.manifest import Manifest
from braid.indexer.segment_build import build_segment, memory_dataset
from braid.pipelines import live_collection
from braid.pipelines.live_collection import LiveCollection
from braid.pipelines.pipeline import SearchOptions, load_pipeline, open_pipeline
from braid.retriever import impact_search
from tests.conftest import write_sample


@pytest.fixture(scope="module")
def sample(shared_data, tmp_path_factory):
    """80 scifact documents as the collection, 30 more to write, 12 queries."""
    root = tmp_path_factory.mktemp("live")
    _, queries = write_sample(shared_data / "scifact", root / "mini", n_docs=80, n_queries=12)
    extra = list(islice(open_dataset_dir(shared_data / "scifact").iter_corpus(), 80, 110))
    return root, extra, list(queries.values())


def open_live(folder: Path, tmp_path: Path, kind: str):
    """The collection at ``folder`` opened for writes, its indexes under ``tmp_path``, and a pipeline over it."""
    dataset = open_dataset_dir(folder)
    index_root = tmp_path / "indexes"
    live = LiveCollection(dataset, index_root)
    return dataset, index_root, live, open_pipeline(load_pipeline(kind), dataset, index_root, live=live)


def random_writes(live: LiveCollection, extra: list[Document], seed: int = 0) -> None:
    """New documents, replacements and deletes, in batches, enough to merge segments into two levels."""
    rng = random.Random(seed)
    pool = list(extra)
    for step in range(live_collection.MERGE_FACTOR**2 + 6):
        ids = sorted(live._owner)
        if step % 3 == 0 and pool:
            live.upsert([pool.pop() for _ in range(min(len(pool), rng.randint(1, 4)))])
        elif step % 3 == 1:
            donors = rng.sample(extra, 2)
            live.upsert([Document(i, "replaced", d.text) for i, d in zip(rng.sample(ids, 2), donors, strict=True)])
        else:
            live.delete(rng.sample(ids, 2))


@pytest.mark.parametrize("kind", ["bm25", "splade", "dense", "binary", "multivector", "slim"])
def test_every_kind_ranks_as_a_fresh_build_of_the_final_documents(sample, kind, tmp_path):
    root, extra, queries = sample
    _, _, live, pipeline = open_live(root / "mini", tmp_path, kind)
    random_writes(live, extra)
    live.wait_merges()
    assert max(segment.level for segment in live._segments) >= 1  # merges ran (MERGE_FACTOR per level)
    if kind in ("splade", "bm25"):
        assert any(level == 0 for level in (segment.level for segment in live._segments))  # in memory
    if kind != "bm25":  # merges indexed documents again from their writes' encodings, none encoded twice
        assert live._memo.misses == len({d.contents for record in live.log.records for d in record.upsert})
    final = list(live.live_documents())
    assert len(final) == live.doc_count == pipeline.doc_count
    stage = pipeline.stages[0]
    manifest = Manifest.read(stage.path)
    if kind in ("binary", "multivector"):
        # Kinds that learn from the corpus code written documents with the base's binarizer or centroids: the
        # fresh build to compare with uses those too.
        path = build_segment(manifest.kind, manifest.params, final, tmp_path / "fresh", stage.path)
    else:
        fresh_dataset = memory_dataset("fresh", final)
        path = build_index(fresh_dataset, manifest.kind, manifest.params, index_root=tmp_path / "fresh")[0]
    fresh = stage.spec.kind_info.open(path, stage.spec.search_params(), None)
    for query in queries:
        live_hits = stage.retriever.search(query, 10)
        fresh_hits = fresh.search(query, 10)
        assert [h.doc_id for h in live_hits] == [h.doc_id for h in fresh_hits], query
        assert [h.score for h in live_hits] == pytest.approx([h.score for h in fresh_hits], rel=1e-5, abs=1e-4)
    pipeline.close()
    live.close()


def test_writes_survive_a_reopen_and_a_reader_sees_them(sample, tmp_path):
    root, _, queries = sample
    dataset, index_root, live, pipeline = open_live(root / "mini", tmp_path, "bm25")
    live.upsert([Document("zz-new", "Zebra", "zebra stripes on the savanna grassland")])
    assert pipeline.search("zebra savanna", 1)[0].doc_id == "zz-new"  # visible when the write returns
    victim = pipeline.search(queries[0], 1)[0].doc_id
    live.delete([victim])
    with pytest.raises(UnknownDocuments, match="not in the collection"):
        live.delete(["zz-new", "ghost"])  # all or nothing: zz-new stays
    with pytest.raises(DocumentsExist, match="zz-new"):
        live.add([Document("zz-new", "", "again")])
    before = [h.doc_id for h in pipeline.search(queries[0], 10)]
    pipeline.close()
    live.close()
    # A search opened afterwards (no server: read only) replays the log.
    reopened = open_pipeline(load_pipeline("bm25"), dataset, index_root)
    assert reopened.search("zebra savanna", 1)[0].doc_id == "zz-new"
    assert [h.doc_id for h in reopened.search(queries[0], 10)] == before and victim not in before
    assert reopened.doc_count == 80
    reopened.close()


@pytest.mark.parametrize("kind", ["bm25", "dense"])  # a write segment in memory, and one on disk
def test_a_write_whose_indexing_fails_is_not_logged_or_seen(sample, kind, tmp_path, monkeypatch):
    root, _, _ = sample
    _, _, live, pipeline = open_live(root / "mini", tmp_path, kind)

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(live_collection, "build_segment", broken)
    monkeypatch.setattr(live_collection, "MemoryBM25Segment", broken)
    with pytest.raises(OSError, match="disk full"):
        live.upsert([Document("zz-new", "", "zebra")])
    assert live.log.records == [] and "zz-new" not in live and pipeline.doc_count == 80
    assert not any(Path(live.state / "segments").glob("*/*"))
    pipeline.close()
    live.close()


def test_optimize_folds_the_writes_into_fresh_indexes(sample, tmp_path):
    root, extra, queries = sample
    dataset, index_root, live, pipeline = open_live(root / "mini", tmp_path, "bm25")
    random_writes(live, extra, seed=1)
    expected = {query: [h.doc_id for h in pipeline.search(query, 10)] for query in queries}
    count = live.doc_count
    pipeline.close()

    def build(base) -> None:
        open_pipeline(load_pipeline("bm25"), base, index_root, follow_writes=False).close()

    base = live.optimize(build)
    assert sum(1 for _ in base.iter_corpus()) == count
    reopened = LiveCollection(dataset, index_root)
    assert reopened.log.records == [] and reopened.doc_count == count
    optimized = open_pipeline(load_pipeline("bm25"), dataset, index_root, live=reopened)
    assert all(len(stage.retriever.segments) == 1 for stage in optimized.stages)  # one fresh index, no segments
    assert {query: [h.doc_id for h in optimized.search(query, 10)] for query in queries} == expected
    optimized.close()
    reopened.close()


@pytest.fixture(scope="module")
def tagged(sample, tmp_path_factory):
    """The sample as a collection with typed metadata: ``bucket`` (integer, 0..19) and ``parity`` (keyword)."""
    root, extra, queries = sample
    folder = tmp_path_factory.mktemp("tagged")
    source = folder / "docs.jsonl"
    rows = [
        {"id": d.doc_id, "title": d.title, "text": d.text, "bucket": i % 20, "parity": ("even", "odd")[i % 2]}
        for i, d in enumerate(open_dataset_dir(root / "mini").iter_corpus())
    ]
    source.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    staged = stage_collection(
        "tagged", source, folder / "collections", fields={"bucket": "integer", "parity": "keyword"}
    )
    return staged.publish(), extra, queries


FILTERS = [
    {"field": "parity", "eq": "even"},  # half the collection
    {"field": "bucket", "lt": 2},  # a tenth
    {"and": [{"field": "bucket", "eq": 3}, {"not": {"field": "parity", "eq": "even"}}]},  # 4 documents
]


def filtered_ranking(retriever, depth: int, hidden: frozenset[str], query: str, k: int) -> list:
    return [hit for hit in retriever.search(query, depth) if hit.doc_id not in hidden][:k]


@pytest.mark.parametrize(
    ("kind", "small"),
    # bm25 and splade twice: leaving out the excluded documents after a deeper search, and inside Lucene's query
    # (`excluding` does that past SMALL_EXCLUSION documents; 0 here sends every filter there).
    [("bm25", 256), ("bm25", 0), ("splade", 256), ("splade", 0)]
    + [(kind, 0) for kind in ("dense", "binary", "multivector", "slim")],
)
def test_filters_apply_inside_every_kind_and_return_what_matches(tagged, kind, small, tmp_path, monkeypatch):
    monkeypatch.setattr(impact_search, "SMALL_EXCLUSION", small)
    folder, extra, queries = tagged
    _, _, live, pipeline = open_live(folder, tmp_path, kind)
    # Writes with metadata: new documents in bucket 3 (odd), and two documents moved out of it.
    live.upsert([Document(d.doc_id, d.title, d.text, {"bucket": 3, "parity": "odd"}) for d in extra[:3]])
    moved = [doc_id for doc_id in sorted(live._owner) if (live.metadata(doc_id) or {}).get("bucket") == 3][:2]
    live.upsert([Document(doc_id, "moved", "moved out of bucket three", {"bucket": 19}) for doc_id in moved])
    stage = pipeline.stages[0]
    manifest = Manifest.read(stage.path)
    for number, spec in enumerate(FILTERS):
        hidden = live.hidden(spec)
        matching = [d for d in live.live_documents() if d.doc_id not in hidden]
        if kind == "bm25":
            # A filter narrows the hits, not the collection BM25 scores against: the reference is the whole ranking,
            # filtered.
            reference = partial(filtered_ranking, stage.retriever, live.doc_count, hidden)
        else:
            root = tmp_path / f"subset-{number}"
            if kind in ("binary", "multivector"):
                path = build_segment(manifest.kind, manifest.params, matching, root, stage.path)
            else:
                subset_dataset = memory_dataset("subset", matching)
                path = build_index(subset_dataset, manifest.kind, manifest.params, index_root=root)[0]
            reference = stage.spec.kind_info.open(path, stage.spec.search_params(), None).search
        for query in queries:
            found = stage.retriever.search(query, 10, hidden=hidden)
            expected = reference(query, 10)
            assert [h.doc_id for h in found] == [h.doc_id for h in expected], (spec, query)
            assert [h.score for h in found] == pytest.approx([h.score for h in expected], rel=1e-5, abs=1e-4)
            assert not {h.doc_id for h in found} & hidden
        if kind in ("dense", "binary", "multivector"):  # every document scores: k hits whenever k match
            assert len(stage.retriever.search(queries[0], 10, hidden=hidden)) == min(10, len(matching))
    explained, _ = pipeline.search_explained(queries[0], 5, SearchOptions(filter=FILTERS[0]))
    assert explained and all(h.doc_id not in live.hidden(FILTERS[0]) for h in explained)
    with pytest.raises(BraidError, match="unknown field 'colour'"):
        pipeline.search_explained(queries[0], 5, SearchOptions(filter={"field": "colour", "eq": "red"}))
    pipeline.close()
    live.close()
