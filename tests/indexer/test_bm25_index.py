"""BM25 on a real Lucene index, checked against BM25 computed by hand."""

from __future__ import annotations

import math

import pytest

from braid.common.dataset_resolver import open_dataset_dir
from braid.common.errors import BraidError
from braid.indexer.index_store import build_index, find_index
from braid.indexer.manifest import Manifest
from braid.retriever.bm25_retriever import BM25Retriever
from tests.conftest import TINY_DOCS


def lucene_bm25(query: str, k1: float, b: float) -> dict[str, float]:
    """Lucene's BM25: idf = ln(1 + (N - df + 0.5) / (df + 0.5)), tf / (tf + k1 (1 - b + b dl / avgdl))."""
    docs = {doc_id: f"{title} {text}".split() for doc_id, (title, text) in TINY_DOCS.items()}
    avgdl = sum(len(tokens) for tokens in docs.values()) / len(docs)
    scores = {}
    for doc_id, tokens in docs.items():
        score = 0.0
        for term in query.split():
            df = sum(term in other for other in docs.values())
            tf = tokens.count(term)
            if tf:
                idf = math.log(1 + (len(docs) - df + 0.5) / (df + 0.5))
                score += idf * tf / (tf + k1 * (1 - b + b * len(tokens) / avgdl))
        if score > 0:
            scores[doc_id] = score
    return scores


@pytest.fixture
def tiny_index(tiny_beir, tmp_path):
    dataset = open_dataset_dir(tiny_beir)
    path, manifest, built = build_index(dataset, "bm25", {}, index_root=tmp_path / "indexes")
    assert built
    return dataset, path, manifest


@pytest.mark.parametrize(("k1", "b"), [(0.9, 0.4), (1.2, 0.75)])
@pytest.mark.parametrize("query", ["cat fish", "dog", "fish bird dog"])
def test_scores_and_ranking_match_hand_computed_bm25(tiny_index, query, k1, b):
    _, path, _ = tiny_index
    hits = BM25Retriever(path, k1=k1, b=b).search(query, k=10)
    expected = lucene_bm25(query, k1, b)
    assert {hit.doc_id for hit in hits} == set(expected)
    for hit in hits:
        # Anserini rounds scores to 4 decimals before breaking ties.
        assert hit.score == pytest.approx(expected[hit.doc_id], abs=2e-4)
    ranked = sorted(expected, key=lambda doc: -expected[doc])
    assert [hit.doc_id for hit in hits] == ranked


def test_batch_search_equals_single_search(tiny_index):
    _, path, _ = tiny_index
    retriever = BM25Retriever(path, threads=2)
    batch = retriever.batch_search({"a": "cat fish", "b": "dog"}, k=3)
    assert batch["a"] == retriever.search("cat fish", 3)
    assert batch["b"] == retriever.search("dog", 3)
    assert retriever.document_text("d2") == "cat cat fish"


def test_manifest_records_build(tiny_index):
    dataset, path, _ = tiny_index
    read = Manifest.read(path)
    assert read.kind == "bm25" and read.doc_count == 4
    assert read.corpus_checksum == dataset.corpus_checksum()
    assert read.params == {"stemmer": "porter", "keep_stopwords": False}
    assert read.files and all(len(entry["sha256"]) == 64 for entry in read.files.values())
    assert read.index_bytes == sum(p.stat().st_size for p in path.rglob("*") if p.name != "manifest.json")


def test_matching_index_is_reused_and_changed_corpus_rebuilds(tiny_index, tmp_path):
    dataset, path, _ = tiny_index
    again, _, built = build_index(dataset, "bm25", {}, index_root=tmp_path / "indexes")
    assert again == path and not built
    with (dataset.root / "corpus.jsonl").open("a") as handle:
        handle.write('{"_id": "d5", "title": "", "text": "cow"}\n')
    changed = open_dataset_dir(dataset.root)
    assert find_index(changed, "bm25", {}, tmp_path / "indexes") is None
    new_path, manifest, built = build_index(changed, "bm25", {}, index_root=tmp_path / "indexes")
    assert built and new_path != path and manifest.doc_count == 5


def test_invalid_parameters_name_allowed_values(tiny_beir, tmp_path):
    dataset = open_dataset_dir(tiny_beir)
    with pytest.raises(BraidError, match="stemmer must be one of porter, krovetz, none"):
        build_index(dataset, "bm25", {"stemmer": "snowball"}, index_root=tmp_path)
    with pytest.raises(BraidError, match=r"unknown bm25 index parameter\(s\) \['k3'\]"):
        build_index(dataset, "bm25", {"k3": 1}, index_root=tmp_path)
    with pytest.raises(BraidError, match="bm25 keep_stopwords must be bool, got 'yes'"):
        build_index(dataset, "bm25", {"keep_stopwords": "yes"}, index_root=tmp_path)
    with pytest.raises(BraidError, match="unknown index kind 'hnsw'"):
        build_index(dataset, "hnsw", {}, index_root=tmp_path)
