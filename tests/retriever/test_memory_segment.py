"""Write segments in memory score exactly as Lucene scores the same documents in an index of their own."""

from __future__ import annotations

import itertools
import json
import random

import numpy as np
import pytest

from braid.common.beir_format import read_corpus
from braid.common.dataset import Document
from braid.indexer.index_store import build_index
from braid.indexer.lucene_jvm import java_calls, java_class
from braid.indexer.segment_build import memory_dataset
from braid.indexer.splade_index import write_impact_index
from braid.retriever.bm25_retriever import BM25Retriever
from braid.retriever.impact_search import ImpactSearcher
from braid.retriever.memory_segment import MemoryBM25Segment, MemoryImpactSegment, length_norm, norm_length
from braid.retriever.sharded_retriever import merge_tied

QUERIES = [
    "0-dimensional biomaterials show inductive properties",
    "vitamin D deficiency and the risk of fractures",
    "gene expression in cancer cells cancer",
    "the the of",  # stopwords only: nothing matches
    "protein folding mutations disease risk",
]


@pytest.fixture(scope="module")
def documents(shared_data) -> list[Document]:
    return list(itertools.islice(read_corpus(shared_data / "scifact" / "corpus.jsonl"), 120))


def lucene_bm25(documents: list[Document], folder) -> BM25Retriever:
    build_index(memory_dataset("t", documents), "bm25", {}, output=folder, threads=1, quiet=True)
    return BM25Retriever(folder)


def test_length_norms_are_lucenes_small_floats():
    small_float = java_class("org.apache.lucene.util.SmallFloat")
    lengths = [*range(0, 3000), *random.Random(0).sample(range(3000, 2**31 - 1), 500)]
    with java_calls():
        for length in lengths:
            stored = small_float.intToByte4(length) & 0xFF
            assert length_norm(length) == stored
            assert norm_length(stored) == small_float.byte4ToInt(small_float.intToByte4(length))


def test_bm25_segment_scores_as_lucene_does(documents, tmp_path):
    index = lucene_bm25(documents, tmp_path / "bm25")
    memory = MemoryBM25Segment(index, [d.doc_id for d in documents], [d.contents for d in documents])
    for query in QUERIES:
        expected = index.search(query, len(documents))
        statistics = memory.query_statistics(query)
        assert statistics == index.query_statistics(query)
        got = merge_tied([memory.search_partial(query, 10, statistics)], len(documents))
        assert [h.doc_id for h in got] == [h.doc_id for h in expected]
        assert np.allclose([h.score for h in got], [h.score for h in expected], rtol=0, atol=2e-6)
        assert memory.document_text(documents[0].doc_id) == documents[0].contents


def test_bm25_segment_with_exclusions_scores_as_an_index_without_them(documents, tmp_path):
    """Excluded documents leave the statistics and the hits: the scores of an index that never held them."""
    index = lucene_bm25(documents, tmp_path / "all")
    gone = frozenset(d.doc_id for d in documents[::3])
    kept = [d for d in documents if d.doc_id not in gone]
    without = lucene_bm25(kept, tmp_path / "kept")
    memory = MemoryBM25Segment(index, [d.doc_id for d in documents], [d.contents for d in documents])
    for query in QUERIES:
        statistics = memory.query_statistics(query, 10, gone)
        assert statistics == without.query_statistics(query)
        got = merge_tied([memory.search_partial(query, 10, statistics, gone)], 20)
        expected = without.search(query, 20)
        assert [h.doc_id for h in got] == [h.doc_id for h in expected]
        assert np.allclose([h.score for h in got], [h.score for h in expected], rtol=0, atol=2e-6)


def test_impact_segment_scores_as_a_lucene_impact_index(tmp_path):
    rng = random.Random(1)
    vocabulary = [f"term{n}" for n in range(60)]
    ids = [f"d{n:03d}" for n in range(80)]
    vectors = [{term: rng.randint(1, 250) for term in rng.sample(vocabulary, rng.randint(1, 25))} for _ in ids]
    vectors_dir = tmp_path / "vectors"
    vectors_dir.mkdir()
    with (vectors_dir / "vectors.jsonl").open("w") as handle:
        for doc_id, vector in zip(ids, vectors, strict=True):
            handle.write(json.dumps({"id": doc_id, "contents": "", "vector": vector}) + "\n")
    write_impact_index(vectors_dir, tmp_path / "impact", threads=1)
    lucene = ImpactSearcher(tmp_path / "impact", len(ids))
    memory = MemoryImpactSegment(ids, vectors)
    for seed in range(10):
        query = {term: rng.randint(1, 300) for term in random.Random(seed).sample(vocabulary, 12)}
        expected = lucene.search(query, len(ids))
        got = merge_tied([memory.search_partial(query, 10)], len(ids))
        assert got == expected  # integer dot products: identical scores, ties by id
        excluded = frozenset(ids[seed::7])
        partial = memory.search_partial(query, 10, exclude=excluded)
        assert not excluded & set(partial.ids)
        assert set(partial.ids) == {h.doc_id for h in expected} - excluded
