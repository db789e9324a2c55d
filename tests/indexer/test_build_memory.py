"""Bounded-memory builds: the streamed multivector and binary builds equal the in-memory arithmetic they replace,
encoder graphs split into small calls give the same vectors, SLIM's per-text projection equals the batch's, and
builds record their peak RSS, release their encoders and refuse to start over a memory budget."""

from __future__ import annotations

import json
import subprocess
import sys

import faiss
import numpy as np
import pytest
import torch

from braid.common.dataset_resolver import open_dataset_dir
from braid.common.errors import BraidError
from braid.indexer import binary_index, encoder_cache, graph_rows, multivector_index
from braid.indexer.build_memory import check_memory_budget, estimate_build_bytes, parse_size
from braid.indexer.index_store import build_index
from braid.indexer.manifest import Manifest
from braid.indexer.matrix_file import gather_rows, read_blocks
from braid.indexer.opened_memory import opened_memory
from braid.indexer.token_index import TokenStore
from braid.service.cli.main import main
from tests.conftest import write_sample


@pytest.fixture(scope="module")
def sample(shared_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("bounded")
    write_sample(shared_data / "scifact", root / "sample", n_docs=40, n_queries=2)
    return root, open_dataset_dir(root / "sample")


def test_matrix_files_read_in_blocks_and_gathered_in_any_order(tmp_path):
    matrix = np.arange(70 * 3, dtype=np.float32).reshape(70, 3)
    matrix.tofile(tmp_path / "m.f32")
    blocks = list(read_blocks(tmp_path / "m.f32", np.float32, 3, rows=16))
    assert [start for start, _ in blocks] == [0, 16, 32, 48, 64]
    assert np.array_equal(np.concatenate([block for _, block in blocks]), matrix)
    rows = np.array([69, 3, 40, 0, 17, 16])
    assert np.array_equal(gather_rows(tmp_path / "m.f32", np.float32, 3, rows), matrix[rows])


def test_the_training_sample_is_the_one_faiss_draws_itself():
    rng = np.random.default_rng(1)
    tokens = rng.standard_normal((5000, 16)).astype(np.float32)
    tokens /= np.linalg.norm(tokens, axis=1, keepdims=True)
    count = 8  # 8 x 64 = 512 of 5,000 tokens: faiss subsamples
    rows = multivector_index.sample_rows(len(tokens), count, seed=3)
    assert len(rows) == count * multivector_index.MAX_POINTS_PER_CENTROID and len(set(rows.tolist())) == len(rows)
    whole = multivector_index.train_centroids(tokens, count, seed=3)
    sampled = multivector_index.train_centroids(tokens[rows], count, seed=3)
    assert np.array_equal(whole, sampled)
    assert np.array_equal(multivector_index.sample_rows(300, count, seed=3), np.arange(300))  # all of a small set


def test_the_sample_stops_growing_with_the_collection(monkeypatch):
    monkeypatch.setattr(multivector_index, "SAMPLE_LIMIT", 100)
    assert len(multivector_index.sample_rows(20_000, 64, seed=0)) == 100  # faiss's permutation, cut short
    monkeypatch.setattr(multivector_index, "PERMUTATION_LIMIT", 1000)
    rows = multivector_index.sample_rows(50_000, 64, seed=0)
    assert len(rows) == 100 and len(set(rows.tolist())) == 100 and rows.max() < 50_000
    assert np.array_equal(rows, multivector_index.sample_rows(50_000, 64, seed=0))


def test_streamed_multivector_build_equals_the_in_memory_build(sample):
    root, dataset = sample
    params = {"centroids": 4, "pool_factor": 2}  # 4 x 64 training points, far fewer than the tokens: sampled
    path, manifest, _ = build_index(dataset, "multivector", params, index_root=root / "indexes")
    store = TokenStore(manifest.dependency(path, "tokens"))
    # The build as it was: every document pooled into memory, k-means over all of them, assignment of all.
    full = multivector_index.validate_params(params)
    pooled = multivector_index.pool_documents((store.document(r) for r in range(len(store))), full)
    flat = np.concatenate(pooled)
    assert len(flat) > 4 * multivector_index.MAX_POINTS_PER_CENTROID
    centroids = multivector_index.train_centroids(flat, 4, full["seed"])
    generation = multivector_index.current_generation(path)
    assert np.array_equal(np.fromfile(generation / "centroids.f32", dtype=np.float32).reshape(4, -1), centroids)
    expected = multivector_index.assign(flat, centroids)
    assert np.array_equal(np.fromfile(generation / "token_centroid.i32", dtype=np.int32), expected)
    tokens = np.fromfile(generation / "tokens.f16", dtype=np.float16)
    assert np.array_equal(tokens, flat.astype(np.float16).ravel())
    assert not list(path.glob(multivector_index.POOLED_SCRATCH))  # the scratch file is gone


def test_binary_codes_in_blocks_and_a_bounded_training_sample(sample, monkeypatch, tmp_path):
    root, dataset = sample
    path, manifest, _ = build_index(dataset, "binary", {"epochs": 2}, index_root=root / "indexes")
    codes, _ = binary_index.load_codes(path)
    store_dir = manifest.dependency(path, "embeddings")
    vectors = np.fromfile(store_dir / "embeddings.f16", dtype=np.float16).reshape(len(codes), -1).astype(np.float32)
    coder = binary_index.load_coder(path, manifest.params, vectors.shape[1])
    assert np.array_equal(codes, coder.encode(vectors)[0])  # coded a block at a time = coded at once
    # Past the limit the binarizer trains on a seeded sample of that many distinct embeddings.
    monkeypatch.setattr(binary_index, "TRAINING_LIMIT", 10)
    sample_rows = binary_index.training_sample(store_dir / "embeddings.f16", vectors.shape[1], len(vectors), 0)
    assert sample_rows.shape == (10, vectors.shape[1])
    assert len({row.tobytes() for row in sample_rows}) == 10
    assert all(any(np.array_equal(row, v) for v in vectors) for row in sample_rows)


def test_encoder_graph_split_into_small_calls_gives_the_same_vectors(monkeypatch):
    from braid.indexer.dense_encoder import DenseEncoder

    encoder = DenseEncoder("all-MiniLM-L6-v2", 128, batch_size=16)
    texts = [f"document {i} about " + "proteins and cells " * (i % 7 + 1) for i in range(16)]
    whole = encoder.encode(texts)
    monkeypatch.setattr(graph_rows, "CALL_ELEMENTS", 1)  # one text per call
    assert graph_rows.rows_per_call(encoder.model[0].model.config, "token_embeddings", 128) == 1
    split = encoder.encode(texts)
    assert np.array_equal(whole.astype(np.float16), split.astype(np.float16))
    assert float(np.abs(whole - split).max()) < 1e-5


def test_rows_per_call_bounds_the_largest_intermediate():
    class Config:
        num_attention_heads, intermediate_size, vocab_size = 12, 1536, 30522

    assert graph_rows.rows_per_call(Config, "token_embeddings", 256, budget=12 * 256 * 256 * 10) == 10
    assert graph_rows.rows_per_call(Config, "token_embeddings", 512, budget=12 * 256 * 256 * 10) == 2
    assert graph_rows.rows_per_call(Config, "logits", 256, budget=30522 * 256 * 3) == 3  # the vocabulary projection
    assert graph_rows.rows_per_call(Config, "logits", 512, budget=1) == 1
    calls = []

    def run(feeds):
        calls.append(len(feeds["ids"]))
        return feeds["ids"] * 2

    ids = np.arange(10).reshape(5, 2)
    assert np.array_equal(graph_rows.run_in_rows(run, {"ids": ids}, 2), ids * 2) and calls == [2, 2, 1]


def test_slim_projects_each_text_as_the_whole_batch_did():
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

    from braid.indexer.slim_encoder import SlimEncoder

    encoder = SlimEncoder.__new__(SlimEncoder)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    model = BertForMaskedLM(config).eval()
    reference = BertForMaskedLM(config).eval()
    reference.load_state_dict(model.state_dict())
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(115)]
    tokenizer_dir = pytest.importorskip("tempfile").mkdtemp()
    with open(f"{tokenizer_dir}/vocab.txt", "w") as handle:
        handle.write("\n".join(vocab))
    encoder.tokenizer = BertTokenizerFast(f"{tokenizer_dir}/vocab.txt")
    encoder.model, encoder.top_k_terms, encoder.batch_size, encoder.device = model, 5, 4, "cpu"
    encoder.vocab_size, encoder.vocab = 120, vocab
    encoder.decoder = encoder._detach_projection()
    texts = ["w1 w2 w3", "w4 w5 w6 w7 w8 w9", "w10", "w11 w12 w13 w14", "w15 w16"]
    matrices = encoder.encode(texts, 16)
    batch = encoder.tokenizer(texts[:4], padding=True, return_tensors="pt", return_special_tokens_mask=True)
    with torch.inference_mode():
        logits = reference(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    values, indices = torch.log1p(torch.relu(logits)).topk(5, dim=-1)
    keep = (batch["attention_mask"] > 0) & (batch["special_tokens_mask"] == 0)
    for row in range(4):
        dense = np.zeros((int(keep[row].sum()), 120), dtype=np.float32)
        for position, (vals, cols) in enumerate(zip(values[row][keep[row]], indices[row][keep[row]], strict=True)):
            dense[position, cols.numpy()] = vals.numpy()
        # One text's rows through the projection round like the batch's up to the matrix product's blocking (1 ulp).
        assert np.array_equal(matrices[row].toarray() != 0, dense != 0)
        assert np.allclose(matrices[row].toarray(), dense, rtol=1e-6, atol=1e-7)


def test_a_build_records_its_peak_and_releases_its_encoders(sample, capsys):
    root, dataset = sample
    path, manifest, built = build_index(dataset, "embeddings", {"max_length": 64}, index_root=root / "indexes")
    assert built and manifest.build["peak_rss_bytes"] > 100 << 20
    assert Manifest.read(path).build["peak_rss_bytes"] == manifest.build["peak_rss_bytes"]
    assert not [key for key in encoder_cache._CACHE if key[2] == "build"]
    assert "peak RSS" in capsys.readouterr().err
    memory = opened_memory(path)  # dense search loads float32 vectors: twice the float16 file
    assert memory.loaded_bytes >= 2 * (path / "embeddings.f16").stat().st_size
    assert memory.mapped_bytes == (path / "embeddings.f16").stat().st_size
    assert main(["index", "info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "peak RSS" in out and "GB" in out and "MB memory-mapped" in out
    assert main(["index", "info", "--json", str(path)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["opened_memory"]["mapped_bytes"] == memory.mapped_bytes


def test_peak_memory_sees_an_allocation_it_did_not_keep():
    # A fresh interpreter: in a long-lived one, freed memory stays resident and a new allocation may not raise RSS.
    script = """
import time
import numpy as np
from braid.common.peak_memory import PeakMemory, resident_bytes
# The first raises the process's high-water mark (exact); the second, smaller, stays under it (sampled).
for size in (200 << 20, 100 << 20):
    before = resident_bytes()
    with PeakMemory() as peak:
        block = np.ones(size // 8)
        time.sleep(0.05)
        del block
    print(peak.exact, peak.bytes - before >= 0.9 * size)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60)
    assert result.stdout.split() == ["True", "True", "False", "True"]


def test_a_build_over_the_memory_budget_is_refused_before_it_starts(sample, capsys, tmp_path):
    root, dataset = sample
    output = tmp_path / "refused"
    code = main(["index", "build", "--dataset", str(root / "sample"), "--kind", "embeddings", "--output", str(output),
                 "--memory-budget", "200MB"])  # fmt: skip
    error = capsys.readouterr().err
    assert code == 2 and "needs about" in error and "memory budget of 0.20 GB" in error and "encoder" in error
    assert not output.exists()
    assert main(["index", "build", "--dataset", str(root / "sample"), "--memory-budget", "lots"]) == 2
    assert "is not a size like 3GB" in capsys.readouterr().err
    parts = check_memory_budget(dataset, "bm25", {}, budget=parse_size("8GB"))
    assert parts["jvm"] > 0 and sum(parts.values()) < parse_size("8GB")


def test_estimates_stay_flat_as_the_collection_grows():
    for kind, params in [("embeddings", {"model": "all-MiniLM-L6-v2"}), ("bm25", {}), ("multivector", {})]:
        small = sum(estimate_build_bytes(kind, params, 10_000, 10_000 * 250).values())
        large = sum(estimate_build_bytes(kind, params, 40_000, 40_000 * 250).values())
        assert large / small < 1.2, kind
    assert parse_size("1.5G") == 3 << 29 and parse_size("512MiB") == 512 << 20 and parse_size(1024) == 1024
    with pytest.raises(BraidError, match="not a size"):
        parse_size("3 apples")


def test_faiss_permutation_is_available():
    permutation = np.empty(10, dtype=np.int32)
    faiss.rand_perm(faiss.swig_ptr(permutation), 10, 1)
    assert sorted(permutation.tolist()) == list(range(10))
