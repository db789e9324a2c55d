"""Encoders on OpenVINO and ONNX Runtime: exported once into the cache, equal (ONNX Runtime) or within bfloat16
rounding (OpenVINO) of eager float32, independent of the batch, int8 in folders of its own."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from braid.common.errors import BraidError
from braid.indexer import onnx_transformer
from braid.indexer.dense_encoder import DenseEncoder
from braid.indexer.index_store import index_identity
from braid.indexer.onnx_transformer import OnnxTransformer, encoder_runtime
from braid.indexer.openvino_transformer import OpenVinoTransformer
from braid.indexer.splade_encoder import SpladeEncoder
from braid.indexer.token_encoder import TokenEncoder

TEXTS = [
    "vitamin D deficiency and the risk of respiratory infection",
    "x",
    "a longer passage about protein folding, chaperones and the heat shock response " * 8,
]


@pytest.fixture(autouse=True)
def scratch_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BRAID_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def raising(error: Exception):
    def fail(*args):
        raise error

    return fail


def graphs(cache) -> list:
    return sorted(path.name for path in (cache / "onnx").rglob("*.onnx"))


def test_dense_onnx_equals_eager_and_the_export_is_cached(monkeypatch, scratch_cache):
    monkeypatch.setenv("BRAID_ENCODER_RUNTIME", "torch")
    eager = DenseEncoder()
    monkeypatch.setenv("BRAID_ENCODER_RUNTIME", "onnx")
    onnx = DenseEncoder()
    assert (eager.runtime, onnx.runtime) == ("torch", "onnx")
    assert isinstance(onnx.model[0].model, OnnxTransformer)
    assert graphs(scratch_cache) == ["model.onnx"]
    np.testing.assert_allclose(onnx.encode(TEXTS), eager.encode(TEXTS), atol=1e-5)
    # A second encoder reuses the cached graph instead of exporting again.
    monkeypatch.setattr(onnx_transformer, "_export", lambda *args: pytest.fail("exported twice"))
    assert DenseEncoder().runtime == "onnx"


def test_int8_is_close_but_not_equal_and_gets_its_own_index_folders(monkeypatch, scratch_cache):
    monkeypatch.setenv("BRAID_ENCODER_RUNTIME", "torch")
    reference = DenseEncoder().encode(TEXTS)
    monkeypatch.setenv("BRAID_ENCODER_RUNTIME", "onnx-int8")
    int8 = DenseEncoder()
    assert int8.runtime == "onnx-int8"
    assert graphs(scratch_cache) == ["model.int8.v2.onnx", "model.onnx"]
    cosines = (int8.encode(TEXTS) * reference).sum(axis=1)
    assert np.all(cosines > 0.95) and np.any(cosines < 0.9999)
    params = {"model": "all-MiniLM-L6-v2", "max_length": 256}
    assert index_identity("embeddings", params)["encoder_runtime"] == "onnx-int8"
    assert "encoder_runtime" not in index_identity("bm25", {})
    monkeypatch.setenv("BRAID_ENCODER_RUNTIME", "onnx")
    assert index_identity("embeddings", params) == {"kind": "embeddings", "params": params}


def test_splade_and_token_encoders_on_onnx_equal_eager(monkeypatch):
    monkeypatch.setenv("BRAID_ENCODER_RUNTIME", "torch")
    splade_eager, tokens_eager = SpladeEncoder(), TokenEncoder()
    monkeypatch.setenv("BRAID_ENCODER_RUNTIME", "onnx")
    splade_onnx, tokens_onnx = SpladeEncoder(), TokenEncoder()
    assert (splade_onnx.runtime, tokens_onnx.runtime) == ("onnx", "onnx")
    for eager_terms, onnx_terms in zip(
        splade_eager.encode_queries(TEXTS), splade_onnx.encode_queries(TEXTS), strict=True
    ):
        shared = eager_terms.keys() & onnx_terms.keys()
        # A term at the edge of zero may appear on one side only; its weight is then ~0.
        assert all(
            abs(eager_terms.get(t, 0) - onnx_terms.get(t, 0)) < 1e-4 for t in eager_terms.keys() | onnx_terms.keys()
        )
        assert len(shared) >= 0.99 * len(eager_terms)
    for eager_tokens, onnx_tokens in zip(
        tokens_eager.encode_documents(TEXTS), tokens_onnx.encode_documents(TEXTS), strict=True
    ):
        assert eager_tokens.shape == onnx_tokens.shape
        np.testing.assert_allclose(onnx_tokens, eager_tokens, atol=1e-5)


def test_an_unknown_runtime_is_refused_naming_the_allowed_ones(monkeypatch):
    monkeypatch.setenv("BRAID_ENCODER_RUNTIME", "tensorrt")
    with pytest.raises(BraidError, match="openvino, onnx, onnx-int8, torch"):
        encoder_runtime()


@pytest.mark.parametrize(
    ("broken", "runtime", "fallback", "message"),
    [("_export", "onnx", "torch", "stays on eager PyTorch"), ("compile_graph", "openvino", "onnx", "runs on onnx")],
)
def test_an_unavailable_runtime_falls_back_and_says_so(monkeypatch, capsys, broken, runtime, fallback, message):
    monkeypatch.setattr(onnx_transformer, broken, raising(ImportError(f"{broken} is missing")))
    monkeypatch.setenv("BRAID_ENCODER_RUNTIME", runtime)
    encoder = DenseEncoder()
    assert encoder.runtime == fallback
    assert message in capsys.readouterr().err
    assert encoder.encode(["still works"]).shape == (1, 384)


def test_openvino_is_the_default_within_bfloat16_rounding_of_float32_and_the_same_in_any_batch(monkeypatch):
    monkeypatch.setenv("BRAID_ENCODER_RUNTIME", "torch")
    eager_dense, eager_splade, eager_tokens = DenseEncoder(), SpladeEncoder(), TokenEncoder()
    monkeypatch.delenv("BRAID_ENCODER_RUNTIME")
    dense, splade, tokens = DenseEncoder(), SpladeEncoder(), TokenEncoder()
    assert (dense.runtime, splade.runtime, tokens.runtime) == ("openvino",) * 3
    assert isinstance(dense.model[0].model, OpenVinoTransformer)
    vectors = dense.encode(TEXTS)
    assert np.all((vectors * eager_dense.encode(TEXTS)).sum(axis=1) > 0.999)
    # Each text alone (padded to its own length) gives the very same vector as inside a batch padded to the longest
    # (Texts of 14 to 254 tokens: without the padding to whole blocks, those of 38, 98 and 158 differ by up to 4e-4.)
    varied = [
        "vitamin D deficiency and the risk of respiratory infection in older adults " * k for k in (1, 3, 8, 13, 21)
    ]
    np.testing.assert_array_equal(np.concatenate([dense.encode([text]) for text in varied]), dense.encode(varied))
    assert [splade.encode_documents([text], progress=False)[0] for text in varied] == splade.encode_documents(
        varied, progress=False
    )
    for text, matrix in zip(varied, tokens.encode_documents(varied), strict=True):
        np.testing.assert_array_equal(tokens.encode_documents([text])[0], matrix)
    terms = splade.encode_documents(TEXTS, progress=False)
    for ours, eager in zip(terms, eager_splade.encode_documents(TEXTS, progress=False), strict=True):
        top = sorted(eager, key=eager.get, reverse=True)[:10]
        assert len(set(top) & set(sorted(ours, key=ours.get, reverse=True)[: len(top)])) >= 0.8 * len(top)
    for matrix, eager in zip(tokens.encode_documents(TEXTS), eager_tokens.encode_documents(TEXTS), strict=True):
        assert matrix.shape == eager.shape
        assert np.all((matrix * eager).sum(axis=1) > 0.99)


# In a fresh interpreter: OpenVINO's bindings set up numpy before any encoder runs, and the dense and SPLADE
# encoders' first batches, side by side (the scene of the hang in openvino_transformer's docstring), both finish.
FIRST_BATCHES_SIDE_BY_SIDE = """
import sys, threading
from braid.indexer import openvino_transformer
from braid.indexer.dense_encoder import DenseEncoder
from braid.indexer.splade_encoder import SpladeEncoder

assert not openvino_transformer._bindings_ready, "set up before any graph was compiled"
dense, splade = DenseEncoder(), SpladeEncoder()
assert (dense.runtime, splade.runtime) == ("openvino", "openvino")
assert openvino_transformer._bindings_ready, "no encoder set up the bindings when it compiled its graph"
barrier = threading.Barrier(2)

def first(encode):
    barrier.wait()
    encode(["vitamin D and respiratory infection"])

threads = [threading.Thread(target=first, args=(f,), daemon=True) for f in (dense.encode, splade.encode_queries)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join(120)
sys.exit(1 if any(thread.is_alive() for thread in threads) else 0)
"""


def test_openvino_bindings_are_ready_before_two_encoders_first_run_side_by_side(monkeypatch):
    monkeypatch.delenv("BRAID_ENCODER_RUNTIME", raising=False)
    result = subprocess.run(
        [sys.executable, "-c", FIRST_BATCHES_SIDE_BY_SIDE], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_int8_unavailable_is_an_error_not_float32_vectors_in_int8_folders(monkeypatch):
    monkeypatch.setattr(onnx_transformer, "_quantize", raising(ImportError("no quantizer")))
    monkeypatch.setenv("BRAID_ENCODER_RUNTIME", "onnx-int8")
    with pytest.raises(BraidError, match="onnx-int8 unavailable"):
        DenseEncoder()
