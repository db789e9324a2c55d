"""BEBR binary codes: popcount scoring, deterministic training, reloadable indexes, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from braid.common.dataset_resolver import open_dataset_dir
from braid.common.errors import BraidError
from braid.indexer.binary_codes import (
    RecurrentCoder,
    asymmetric_scores,
    hamming_scores,
    pack_planes,
    symmetric_scores,
    unpack_planes,
)
from braid.indexer.binary_index import load_codes, validate_params
from braid.indexer.embedding_index import EmbeddingStore
from braid.indexer.index_store import build_index
from braid.indexer.manifest import Manifest
from braid.indexer.recurrent_binarizer import load_binarizer, train_binarizer
from braid.pipelines.pipeline import open_index_retriever
from braid.retriever.binary_retriever import BinaryRetriever
from braid.retriever.hit import Hit
from braid.retriever.ties import break_ties
from tests.conftest import write_beir, write_sample


def test_popcount_scorers_equal_float_computation_on_unpacked_bits():
    rng = np.random.default_rng(7)
    width, planes = 64, 3
    documents = pack_planes(rng.integers(0, 2, size=(50, planes, width)) * 2 - 1)
    query = pack_planes(rng.integers(0, 2, size=(1, planes, width)) * 2 - 1)[0]
    scales = np.array([0.5, 0.2, 0.07])
    docs_float = unpack_planes(documents, width)  # +-1
    query_float = unpack_planes(query[None], width)[0]
    reconstruction = np.einsum("u,nuw->nw", scales, docs_float)
    query_reconstruction = scales @ query_float
    np.testing.assert_allclose(
        symmetric_scores(query, documents, scales, width), reconstruction @ query_reconstruction, rtol=1e-9
    )
    vector = rng.normal(size=width).astype(np.float32)
    np.testing.assert_allclose(asymmetric_scores(vector, documents, scales, width), reconstruction @ vector, rtol=1e-5)
    mismatches = (docs_float != query_float[None]).reshape(50, -1).sum(axis=1)
    np.testing.assert_array_equal(hamming_scores(query, documents), -mismatches)


def test_training_is_deterministic_for_a_seed():
    data = np.random.default_rng(0).normal(size=(300, 32)).astype(np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    first = train_binarizer(data, width=16, bits=2, epochs=2, seed=3, progress=False)
    second = train_binarizer(data, width=16, bits=2, epochs=2, seed=3, progress=False)
    other = train_binarizer(data, width=16, bits=2, epochs=2, seed=4, progress=False)
    for name, tensor in first.state_dict().items():
        assert torch.equal(tensor, second.state_dict()[name]), name
    assert not all(torch.equal(t, other.state_dict()[n]) for n, t in first.state_dict().items())
    codes_a, _ = RecurrentCoder(first).encode(data)
    codes_b, _ = RecurrentCoder(second).encode(data)
    np.testing.assert_array_equal(codes_a, codes_b)


@pytest.fixture(scope="module")
def sample(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("binary") / "scifact-binary"
    write_sample(shared_data / "scifact", root, n_docs=200, n_queries=6)
    return open_dataset_dir(root), root.parent / "indexes"


def test_saved_index_reloads_to_identical_codes_and_results(sample):
    dataset, index_root = sample
    params = {"bits": 2, "width": 128, "epochs": 3}
    path, manifest, _ = build_index(dataset, "binary", params, index_root=index_root)
    store = EmbeddingStore(manifest.dependency(path, "embeddings"))
    codes, meta = load_codes(path)
    assert codes.shape == (200, 2, 16) and meta["width"] == 128
    recoded, _ = RecurrentCoder(load_binarizer(path)).encode(np.asarray(store.matrix, dtype=np.float32))
    np.testing.assert_array_equal(recoded, codes)
    query = "vitamin D and bone density"
    assert BinaryRetriever(path, rescore=0).search(query, 20) == BinaryRetriever(path, rescore=0).search(query, 20)
    # Rescoring the whole list gives exactly the float ranking of the candidates.
    hits = BinaryRetriever(path, candidates=200, rescore=200).search(query, 200)
    embedding = BinaryRetriever(path).encoder.encode([query])[0]
    exact = np.asarray(store.matrix, dtype=np.float32) @ embedding
    expected = break_ties([Hit(doc_id, float(score)) for doc_id, score in zip(store.doc_ids, exact, strict=True)])
    assert [h.doc_id for h in hits[:10]] == [h.doc_id for h in expected[:10]]


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_candidate_indexes_match_flat_when_searched_exhaustively(sample, kind):
    dataset, index_root = sample
    flat, _, _ = build_index(dataset, "binary", {"method": "sign"}, index_root=index_root)
    other, _, _ = build_index(dataset, "binary", {"method": "sign", "faiss": kind, "nlist": 4}, index_root=index_root)
    query = "antibiotics and gut bacteria"
    expected = BinaryRetriever(flat, rescore=0, candidates=200).search(query, 10)
    found = BinaryRetriever(other, rescore=0, candidates=200, nprobe=4, ef_search=400).search(query, 10)
    assert [h.score for h in found] == [h.score for h in expected]


def test_bad_input(sample, tmp_path):
    dataset, index_root = sample
    path, _, _ = build_index(dataset, "binary", {"method": "sign"}, index_root=index_root)
    retriever = BinaryRetriever(path)
    with pytest.raises(BraidError, match=r"expects \(384,\)"):
        retriever.search_embedding(np.zeros(128, dtype=np.float32))
    with pytest.raises(BraidError, match=r"was built with model='all-MiniLM-L6-v2', not 'intfloat/e5-small'"):
        open_index_retriever(path, {"model": "intfloat/e5-small"})
    with pytest.raises(BraidError, match=r"binary bits must be 1\.\.4"):
        validate_params({"bits": 8})
    with pytest.raises(BraidError, match=r"candidate_planes must be 1\.\.bits \(2\), got 3"):
        validate_params({"bits": 2, "candidate_planes": 3})
    with pytest.raises(BraidError, match="method 'sign' codes 1 bit"):
        validate_params({"method": "sign", "bits": 2})
    empty = write_beir(tmp_path / "empty", docs={}, queries={"q": "x"}, qrels=[])
    with pytest.raises(BraidError, match="has no documents"):
        build_index(open_dataset_dir(empty), "binary", {}, index_root=tmp_path / "i")
    assert Manifest.read(path).depends_on["embeddings"].startswith("../embeddings-")
