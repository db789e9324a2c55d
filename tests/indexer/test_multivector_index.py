"""Pooled multi-vector index on real MiniLM token embeddings: exact MaxSim with every centroid probed, XTR,
document updates equal to a fresh build, and refused updates that leave the index unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from braid.common.dataset_resolver import open_dataset_dir
from braid.common.errors import BraidError
from braid.indexer.index_store import build_index
from braid.indexer.kinds import add_documents, delete_documents
from braid.indexer.multivector_index import MultiVectorStore, current_generation, validate_params
from braid.retriever.multivector_retriever import MultiVectorRetriever
from tests.conftest import write_beir, write_sample

PARAMS = {"pool_factor": 2, "centroids": 16}


@pytest.fixture(scope="module")
def sample(shared_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("mv")
    docs, queries = write_sample(shared_data / "scifact", root / "sample", n_docs=60, n_queries=6)
    path, _, _ = build_index(open_dataset_dir(root / "sample"), "multivector", PARAMS, index_root=root / "indexes")
    return root, docs, queries, path


def brute_force(retriever: MultiVectorRetriever, query: str) -> list[tuple[str, float]]:
    tokens = retriever.encoder.encode_queries([query])[0]
    store = retriever.store
    scores = [float((tokens @ store.document(r).astype(np.float32).T).max(axis=1).sum()) for r in range(len(store))]
    return sorted(zip(store.doc_ids, scores, strict=True), key=lambda item: (-item[1], item[0]))


@pytest.mark.parametrize("mode", ["maxsim", "xtr"])
def test_every_centroid_probed_gives_the_brute_force_maxsim_ranking(sample, mode):
    _, _, queries, path = sample
    assert len(MultiVectorStore(path)) == 60
    retriever = MultiVectorRetriever(path, mode=mode, nprobe=16, candidates=1000, token_k=10**9)
    for query in queries.values():
        expected = brute_force(retriever, query)
        hits = retriever.search(query, 60)
        assert [hit.doc_id for hit in hits] == [doc_id for doc_id, _ in expected]
        assert [hit.score for hit in hits] == pytest.approx([score for _, score in expected], abs=1e-3)


def test_maxsim_over_blocks_equals_per_document_maxsim(monkeypatch):
    from braid.retriever import multivector_retriever

    monkeypatch.setattr(multivector_retriever, "BLOCK_TOKENS", 7)  # blocks that cut documents apart
    rng = np.random.default_rng(0)
    lengths = np.array([5, 0, 12, 1, 9, 3])
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    tokens = rng.normal(size=(offsets[-1], 8)).astype(np.float16)
    query = rng.normal(size=(4, 8)).astype(np.float32)
    rows = np.array([4, 1, 0, 2])
    expected = [
        float((query @ tokens[offsets[r] : offsets[r + 1]].astype(np.float32).T).max(axis=1).sum()) if lengths[r] else 0
        for r in rows
    ]
    scores = multivector_retriever.maxsim(query, torch.from_numpy(tokens), offsets, rows)
    assert scores.tolist() == pytest.approx(expected, abs=1e-5)


def test_prefilter_scores_exactly_the_best_documents_by_centroid_interaction(sample):
    _, _, queries, path = sample
    # Two probed centroids per query token: the candidate bound then differs from the centroid interaction.
    retriever = MultiVectorRetriever(path, nprobe=2, prefilter=60, candidates=12)
    store = retriever.store
    for query in queries.values():
        tokens = retriever.encoder.encode_queries([query])[0]
        centroid_scores = tokens @ store.centroids.T
        probed = set(np.argsort(-centroid_scores, axis=1)[:, :2].ravel().tolist())
        reached = [
            r
            for r in range(len(store))
            if probed & set(store.token_centroid[store.offsets[r] : store.offsets[r + 1]].tolist())
        ]
        # Centroid interaction written per document: each token replaced by its centroid, then MaxSim.
        interaction = {
            r: centroid_scores[:, store.token_centroid[store.offsets[r] : store.offsets[r + 1]]].max(axis=1).sum()
            for r in reached
        }
        kept = sorted(interaction, key=lambda r: -interaction[r])[:12]
        ids = [store.doc_ids[r] for r in kept]
        exact = dict(zip(ids, retriever.score(query, ids).tolist(), strict=True))
        expected = sorted(exact, key=lambda doc_id: (-exact[doc_id], doc_id))[:5]
        assert [hit.doc_id for hit in retriever.search(query, 5)] == expected


def test_pooling_halves_the_stored_tokens(sample):
    root, _, _, path = sample
    unpooled, _, _ = build_index(
        open_dataset_dir(root / "sample"), "multivector", {**PARAMS, "pool_factor": 1}, index_root=root / "indexes"
    )
    full, pooled = len(MultiVectorStore(unpooled).matrix), len(MultiVectorStore(path).matrix)
    # Each document keeps [CLS] plus half of the rest (rounded down, at least one).
    assert 0.45 * full < pooled < 0.56 * full


def test_add_and_delete_equal_a_fresh_build(sample, tmp_path):
    _, docs, queries, _ = sample
    first, later = docs[:40], docs[40:]
    write_beir(tmp_path / "first", docs={d.doc_id: (d.title, d.text) for d in first}, queries=queries, qrels=[])
    path, _, _ = build_index(open_dataset_dir(tmp_path / "first"), "multivector", PARAMS, index_root=tmp_path / "i")
    assert add_documents(path, [(d.doc_id, d.contents) for d in later]) == 60
    removed = [d.doc_id for d in docs[::6]]
    assert delete_documents(path, removed) == 60 - len(removed)
    kept = [d for d in docs if d.doc_id not in removed]
    write_beir(tmp_path / "fresh", docs={d.doc_id: (d.title, d.text) for d in kept}, queries=queries, qrels=[])
    fresh, _, _ = build_index(open_dataset_dir(tmp_path / "fresh"), "multivector", PARAMS, index_root=tmp_path / "i")
    updated = MultiVectorRetriever(path, nprobe=16, candidates=1000)
    rebuilt = MultiVectorRetriever(fresh, nprobe=16, candidates=1000)
    assert sorted(updated.store.doc_ids) == sorted(rebuilt.store.doc_ids)
    for query in queries.values():
        a, b = updated.search(query, 20), rebuilt.search(query, 20)
        assert [hit.doc_id for hit in a] == [hit.doc_id for hit in b]
        assert [hit.score for hit in a] == pytest.approx([hit.score for hit in b], abs=1e-3)
    assert len(list(path.glob("gen-*"))) == 1  # old generations are removed once the new one is live
    # A build for the original collection must not silently overwrite the edited index.
    with pytest.raises(BraidError, match="were edited"):
        build_index(open_dataset_dir(tmp_path / "first"), "multivector", PARAMS, index_root=tmp_path / "i")


def test_refused_updates_leave_the_index_unchanged(sample, tmp_path):
    _, docs, _, path = sample
    before = {p.relative_to(path): p.read_bytes() for p in path.rglob("*") if p.is_file()}
    with pytest.raises(BraidError, match=r"have no tokens after tokenization, e\.g\. \['blank'\]; nothing added"):
        add_documents(path, [("new", "some text"), ("blank", "   ")])
    with pytest.raises(BraidError, match=r"already in the index"):
        add_documents(path, [(docs[0].doc_id, "text")])
    with pytest.raises(BraidError, match=r"1 unknown document id\(s\), e\.g\. \['ghost'\]; nothing deleted"):
        delete_documents(path, [docs[1].doc_id, "ghost"])
    after = {p.relative_to(path): p.read_bytes() for p in path.rglob("*") if p.is_file()}
    assert after == before


def test_int8_tokens_score_as_float16_at_half_the_size_and_take_updates(sample, tmp_path):
    root, docs, queries, path = sample
    int8, _, _ = build_index(
        open_dataset_dir(root / "sample"), "multivector", {**PARAMS, "precision": "int8"}, index_root=root / "indexes"
    )
    assert int8 != path and (current_generation(int8) / "tokens.i8").is_file()
    size = {folder: sum(f.stat().st_size for f in current_generation(folder).glob("token*")) for folder in (path, int8)}
    assert 0.5 < size[int8] / size[path] < 0.52  # 384 + 4 bytes a token instead of 768
    half, full = MultiVectorStore(int8), MultiVectorStore(path)
    assert np.abs(half.document(3) - full.document(3).astype(np.float32)).max() < 0.005
    exact, coded = MultiVectorRetriever(path), MultiVectorRetriever(int8, nprobe=16, candidates=1000)
    for query in queries.values():
        ids = full.doc_ids[:30]
        assert coded.score(query, ids) == pytest.approx(exact.score(query, ids), abs=0.02)  # sums of ~30 tokens
        # Searching the codes ranks as MaxSim over the dequantized vectors does.
        expected = brute_force(coded, query)[:5]
        hits = coded.search(query, 5)
        assert [hit.doc_id for hit in hits] == [doc_id for doc_id, _ in expected]
        assert [hit.score for hit in hits] == pytest.approx([score for _, score in expected], abs=1e-4)
    # Updates keep the precision, and the codes of the documents carried over.
    kept_codes = half.matrix[half.offsets[1] : half.offsets[2]].copy()
    assert add_documents(int8, [("new-doc", "aspirin lowers the risk of heart attacks")]) == len(docs) + 1
    updated = MultiVectorStore(int8)
    assert updated.scales is not None and np.array_equal(
        updated.matrix[updated.offsets[1] : updated.offsets[2]], kept_codes
    )
    with pytest.raises(BraidError, match="precision must be one of float16, int8, got 'int4'"):
        validate_params({"precision": "int4"})


@pytest.mark.parametrize("factor", [0, 5, 1.5])
def test_pool_factor_out_of_range_is_refused(factor):
    with pytest.raises(BraidError, match="pool_factor"):
        validate_params({"pool_factor": factor})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"mode": "colbert"}, r"mode must be one of maxsim, xtr, got 'colbert'"),
        ({"nprobe": 0}, r"must be >= 1, got 0, 512 and 1000"),
        ({"prefilter": -1}, r"prefilter must be >= 0 \(0 = none\), got -1"),
    ],
)
def test_bad_search_options_are_refused_naming_the_allowed_values(sample, options, message):
    _, _, _, path = sample
    with pytest.raises(BraidError, match=message):
        MultiVectorRetriever(path, **options)


def test_precision_at_its_default_leaves_older_index_folder_names_as_they_were():
    from braid.indexer.index_store import index_identity

    params = validate_params({})
    assert params["precision"] == "float16"
    assert "precision" not in index_identity("multivector", params)["params"]
    assert index_identity("multivector", {**params, "precision": "int8"})["params"]["precision"] == "int8"
