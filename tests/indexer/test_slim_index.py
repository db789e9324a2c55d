"""SLIM: refinement computes sparsified late interaction exactly, and the pooled first stage bounds it."""

from __future__ import annotations

import numpy as np
import pytest

from braid.common.dataset_resolver import open_dataset_dir
from braid.common.errors import BraidError
from braid.indexer.index_store import build_index
from braid.indexer.slim_index import pooled_terms, validate_params
from braid.retriever.slim_retriever import SlimRetriever
from tests.conftest import write_sample

PARAMS = {"doc_max_length": 96, "top_k_terms": 8}


@pytest.fixture(scope="module")
def slim_sample(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("slim") / "scifact-slim"
    docs, queries = write_sample(shared_data / "scifact", root, n_docs=60, n_queries=8)
    path, manifest, _ = build_index(open_dataset_dir(root), "slim", PARAMS, index_root=root.parent / "indexes")
    return path, manifest, docs, queries


def as_stored(matrix):
    """The index keeps float16 weights; round a fresh encoding the same way."""
    stored = matrix.copy()
    stored.data = stored.data.astype(np.float16).astype(np.float32)
    return stored


def brute_force_slim(query: np.ndarray, document: np.ndarray) -> float:
    if document.shape[0] == 0 or query.shape[0] == 0:
        return 0.0
    return float((query @ document.T).max(axis=1).sum())


def test_refinement_with_every_candidate_equals_brute_force(slim_sample):
    path, manifest, docs, queries = slim_sample
    assert manifest.doc_count == 60
    retriever = SlimRetriever(path, candidates=len(docs))
    doc_matrices = retriever.encoder.encode([d.contents for d in docs], PARAMS["doc_max_length"])
    dense_docs = [as_stored(m).toarray() for m in doc_matrices]
    assert all(np.count_nonzero(row) <= PARAMS["top_k_terms"] for m in dense_docs for row in m)
    for text in queries.values():
        query = retriever.query_matrix(text)
        expected = {d.doc_id: brute_force_slim(query.toarray(), m) for d, m in zip(docs, dense_docs, strict=True)}
        hits = retriever.search(text, k=10)
        top = sorted(expected.values(), reverse=True)[:10]
        assert [hit.score for hit in hits] == pytest.approx(top, rel=1e-4)
        for hit in hits:
            assert hit.score == pytest.approx(expected[hit.doc_id], rel=1e-4)


def test_pooled_first_stage_bounds_late_interaction(slim_sample):
    path, _, docs, queries = slim_sample
    retriever = SlimRetriever(path)
    vocab = retriever.encoder.vocab
    for text in list(queries.values())[:3]:
        query = retriever.query_matrix(text)
        summed = pooled_terms(query, vocab, "sum")
        exact = retriever.late_interaction(query, [d.doc_id for d in docs])
        matrices = retriever.encoder.encode([d.contents for d in docs], PARAMS["doc_max_length"])
        for score, matrix in zip(exact, matrices, strict=True):
            pooled = pooled_terms(as_stored(matrix), vocab, "max")
            bound = sum(weight * pooled.get(term, 0.0) for term, weight in summed.items())
            assert bound >= score - 1e-3


def test_parameters_are_validated():
    assert validate_params({})["top_k_terms"] == 20
    with pytest.raises(BraidError, match="slim top_k_terms must be >= 1, got 0"):
        validate_params({"top_k_terms": 0})
    with pytest.raises(BraidError, match=r"unknown slim index parameter\(s\) \['k'\]"):
        validate_params({"k": 3})
