"""Query encodings share the cores when a pipeline runs several at once: the budget a thread sets, the compiled
copy an OpenVINO encoder runs for it, and the pipelines that set it (the hybrid) and those that do not."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from braid.common.dataset_resolver import open_dataset_dir
from braid.indexer import openvino_transformer
from braid.indexer.dense_encoder import DenseEncoder
from braid.indexer.encoding_threads import encoding_thread_budget, encoding_threads
from braid.pipelines.pipeline import load_pipeline, open_pipeline

TEXTS = ["vitamin D deficiency and the risk of respiratory infection", "x", "protein folding and chaperones " * 9]


def test_the_budget_is_per_thread_nests_and_is_restored():
    assert encoding_thread_budget() is None
    with encoding_threads(2):
        with encoding_threads(1):
            assert encoding_thread_budget() == 1
        with encoding_threads(None):
            assert encoding_thread_budget() is None
        assert encoding_thread_budget() == 2
    assert encoding_thread_budget() is None
    with pytest.raises(ValueError, match=">= 1"), encoding_threads(0):
        pass


def test_a_budget_runs_a_copy_compiled_for_it_once_with_the_same_vectors(monkeypatch):
    monkeypatch.setenv("BRAID_ENCODER_RUNTIME", "openvino")
    encoder = DenseEncoder()
    model = encoder.model[0].model
    assert isinstance(model, openvino_transformer.OpenVinoTransformer)
    assert model.threads == torch.get_num_threads() and list(model._compiled) == [model.threads]
    compiled = []
    real = model.compile
    model.compile = lambda threads: compiled.append(threads) or real(threads)
    full = encoder.encode(TEXTS)
    with encoding_threads(1):
        one = encoder.encode(TEXTS)
        encoder.encode(TEXTS[:1])
    with encoding_threads(model.threads + 8):  # more than the default: the default
        wide = encoder.encode(TEXTS)
    assert compiled == ([1] if model.threads > 1 else [])
    np.testing.assert_array_equal(wide, full)
    # Bit-identical where measured (AVX2 float32, AVX512_BF16 bfloat16); the check allows oneDNN's other paths.
    np.testing.assert_allclose(one, full, rtol=0, atol=1e-6)


HYBRID = """
name = "two-encoders"
[[retrievers]]
name = "bm25"
kind = "bm25"
depth = 5
[[retrievers]]
name = "dense"
kind = "dense"
depth = 5
[[retrievers]]
name = "splade"
kind = "splade"
depth = 5
[fusion]
method = "rrf"
"""


def test_a_pipeline_with_two_encoders_shares_the_cores_and_a_lone_one_does_not(tiny_beir, tmp_path, monkeypatch):
    seen = []

    def budget() -> int | None:
        seen.append(encoding_thread_budget())
        return seen[-1]

    monkeypatch.setattr(openvino_transformer, "encoding_thread_budget", budget)
    path = tmp_path / "hybrid.toml"
    path.write_text(HYBRID)
    dataset = open_dataset_dir(tiny_beir)
    hybrid = open_pipeline(load_pipeline(str(path)), dataset, tmp_path / "indexes")
    dense = open_pipeline(load_pipeline("dense"), dataset, tmp_path / "indexes")
    try:
        seen.clear()
        hybrid.search("cats that fish in rivers", 3)  # a text no other test encodes: the query cache misses
        assert seen and set(seen) == {max(1, (os.cpu_count() or 1) // 2)}
        seen.clear()
        dense.search("dogs that chase birds in parks", 3)
        assert seen and set(seen) == {None}
    finally:
        hybrid.close()
        dense.close()
