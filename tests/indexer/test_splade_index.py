"""The SPLADE impact index returns exactly the brute-force top-k over the same quantized vectors."""

from __future__ import annotations

import json

import pytest

from braid.common.dataset_resolver import open_dataset_dir
from braid.common.errors import BraidError
from braid.indexer.index_store import build_index
from braid.indexer.manifest import Manifest
from braid.indexer.splade_encoder import quantize
from braid.indexer.splade_index import IMPACT_DIR, encoder_for, validate_params, write_impact_index
from braid.retriever.splade_retriever import SpladeRetriever
from tests.conftest import write_sample

PARAMS = {"doc_max_length": 128}


@pytest.fixture(scope="module")
def scifact_sample(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("sample") / "scifact-sample"
    docs, queries = write_sample(shared_data / "scifact", root, n_docs=150, n_queries=12)
    dataset = open_dataset_dir(root)
    path, manifest, _ = build_index(dataset, "splade", PARAMS, index_root=root.parent / "indexes")
    return dataset, path, manifest, docs, queries


def test_impact_search_equals_brute_force_dot_product(scifact_sample):
    _, path, manifest, docs, queries = scifact_sample
    assert manifest.params["scale"] == 100 and manifest.doc_count == 150
    encoder = encoder_for(manifest.params)
    doc_vectors = [quantize(v, 100) for v in encoder.encode_documents([d.contents for d in docs], progress=False)]
    retriever = SpladeRetriever(path)
    checked = 0
    for text in queries.values():
        query = retriever.query_vector(text)
        brute = {
            doc.doc_id: sum(weight * vector.get(term, 0) for term, weight in query.items())
            for doc, vector in zip(docs, doc_vectors, strict=True)
        }
        brute = {doc_id: score for doc_id, score in brute.items() if score > 0}
        hits = retriever.search_vector(query, k=10)
        expected = sorted(brute.values(), reverse=True)[:10]
        assert [hit.score for hit in hits] == pytest.approx(expected, abs=0.5)
        for hit in hits:
            assert hit.score == pytest.approx(brute[hit.doc_id], abs=0.5)
        checked += len(hits)
    assert checked > 50


def test_terms_in_every_document_are_not_dropped(tmp_path, monkeypatch):
    # A term present in every document has idf 0; pyserini's impact searcher would drop it (min_idf = 0).
    vectors = tmp_path / "vectors"
    vectors.mkdir()
    docs = {"a": {"the": 3, "cat": 5}, "b": {"the": 7}, "c": {"the": 1, "dog": 2}}
    (vectors / "v.jsonl").write_text(
        "".join(json.dumps({"id": i, "contents": "", "vector": v}) + "\n" for i, v in docs.items())
    )
    write_impact_index(vectors, tmp_path / "index" / IMPACT_DIR, threads=1)
    manifest = Manifest(kind="splade", params=validate_params({}), dataset="t", doc_count=3, corpus_checksum="x")
    manifest.write(tmp_path / "index")
    retriever = SpladeRetriever(tmp_path / "index")
    hits = retriever.search_vector({"the": 2, "cat": 1}, k=10)
    assert [(hit.doc_id, hit.score) for hit in hits] == [("b", 14.0), ("a", 11.0), ("c", 2.0)]


def test_parameters_are_validated():
    assert validate_params({})["scale"] == 100
    with pytest.raises(BraidError, match=r"unknown splade index parameter\(s\) \['pooling'\]"):
        validate_params({"pooling": "sum"})
    with pytest.raises(BraidError, match="scale must be >= 1"):
        validate_params({"scale": 0})
