"""Exact dense retrieval over the float16 embedding store equals a brute-force inner product."""

from __future__ import annotations

import numpy as np
import pytest

from braid.common.dataset_resolver import open_dataset_dir
from braid.common.errors import BraidError
from braid.indexer.embedding_index import EmbeddingStore, encoder_for, validate_params
from braid.indexer.index_store import build_index
from braid.retriever.dense_retriever import DenseRetriever
from tests.conftest import write_beir

DOCS = {
    "sun": ("Solar power", "Photovoltaic panels turn sunlight into electricity."),
    "wind": ("Wind farms", "Turbines convert the kinetic energy of wind into power."),
    "cake": ("Baking", "Mix flour, sugar and eggs, then bake the cake for forty minutes."),
    "empty": ("", ""),
}


def test_flat_search_equals_brute_force(tmp_path):
    root = write_beir(tmp_path / "energy", docs=DOCS, queries={"q": "renewable electricity"}, qrels=[("q", "sun", 1)])
    path, manifest, _ = build_index(open_dataset_dir(root), "embeddings", {}, index_root=tmp_path / "indexes")
    store = EmbeddingStore(path)
    assert store.matrix.dtype == np.float16 and store.matrix.shape == (4, 384)
    assert store.doc_ids == list(DOCS)
    encoder = encoder_for(manifest.params)
    documents = encoder.encode([f"{title} {text}".strip() for title, text in DOCS.values()])
    assert np.abs(store.matrix.astype(np.float32) - documents).max() < 2e-3
    retriever = DenseRetriever(path)
    for query in ("renewable electricity", "dessert recipe", "☃"):
        expected = documents @ encoder.encode([query])[0]
        hits = retriever.search(query, k=4)
        assert [hit.doc_id for hit in hits] == [list(DOCS)[i] for i in np.argsort(-expected)]
        assert [hit.score for hit in hits] == pytest.approx(sorted(expected, reverse=True), abs=5e-3)
    batch = retriever.batch_search({"a": "cake", "b": "wind"}, k=2)
    for qid, query in (("a", "cake"), ("b", "wind")):
        single = retriever.search(query, 2)
        assert [h.doc_id for h in batch[qid]] == [h.doc_id for h in single]
        assert [h.score for h in batch[qid]] == pytest.approx([h.score for h in single], abs=1e-5)


def test_parameters_are_validated():
    assert validate_params({})["model"] == "all-MiniLM-L6-v2"
    with pytest.raises(BraidError, match=r"unknown embeddings index parameter\(s\) \['dim'\]"):
        validate_params({"dim": 3})
    with pytest.raises(BraidError, match="embeddings max_length must be >= 1"):
        validate_params({"max_length": 0})
