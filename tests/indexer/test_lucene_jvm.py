"""Reading Lucene hits in one JNI call: the compact Jackson form against pyjnius's per-hit reads."""

from __future__ import annotations

import numpy as np
import pytest

from braid.common.dataset_resolver import open_dataset_dir
from braid.indexer.index_store import build_index
from braid.indexer.lucene_jvm import _parse_hits, java_calls, search_top
from braid.retriever.bm25_retriever import BM25Retriever


@pytest.mark.parametrize(
    ("text", "docs", "scores"),
    [
        ('{"totalHits":{"value":0,"relation":"EQUAL_TO"},"scoreDocs":[]}', [], []),
        ('{"totalHits":{"value":1,"relation":"EQUAL_TO"},"scoreDocs":[[6.598821,1810]]}', [1810], [6.598821]),
        # Float.toString's forms: exponents, and negative scores (a function query can score below 0).
        (
            '{"totalHits":{"value":3,"relation":"GREATER_THAN_OR_EQUAL_TO"},"scoreDocs":[[1.0E-5,7],[-2.5,0],[3.0,12]]}',
            [7, 0, 12],
            [1.0e-5, -2.5, 3.0],
        ),
    ],
)
def test_parse_hits_reads_score_doc_pairs(text, docs, scores):
    numbers, values = _parse_hits(text)
    assert numbers.dtype == np.int64 and values.dtype == np.float32
    assert numbers.tolist() == docs
    assert values.tolist() == np.asarray(scores, dtype=np.float32).tolist()


def test_search_top_equals_per_hit_reads(tiny_beir, tmp_path):
    """Every Lucene hit's doc number and its exact float32 score, in Lucene's order, from the top and after a hit."""
    path, _, _ = build_index(open_dataset_dir(tiny_beir), "bm25", {}, index_root=tmp_path / "indexes")
    retriever = BM25Retriever(path)
    with java_calls():
        query = retriever._generator.buildQuery("contents", retriever._analyzer, "fish bird dog cat")
        found = retriever._searcher.search(query, 10)
        expected = [(hit.doc, hit.score) for hit in found.scoreDocs]
    assert len(expected) >= 4
    numbers, scores = search_top(retriever._searcher, query, 10)
    assert list(zip(numbers.tolist(), scores.tolist(), strict=True)) == expected
    numbers, scores = search_top(retriever._searcher, query, 10, after=expected[1])
    assert list(zip(numbers.tolist(), scores.tolist(), strict=True)) == expected[2:]
