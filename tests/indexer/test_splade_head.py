"""SPLADE's max pooling after the vocabulary projection: the same weights as sentence-transformers' own path."""

from __future__ import annotations

import numpy as np
from sentence_transformers import SparseEncoder

from braid.common.model_source import resolve_model
from braid.indexer.splade_head import MaxPooledMLM, pool_after_projection

TEXTS = [
    "x",
    "vitamin D deficiency and the risk of respiratory infection",
    "a longer passage about protein folding, chaperones and the heat shock response " * 12,
]


def splade_tiny() -> SparseEncoder:
    return SparseEncoder(resolve_model("splade-tiny"), device="cpu")


def encode(model) -> np.ndarray:
    model.max_seq_length = 256
    return model.encode_document(TEXTS, batch_size=3, convert_to_sparse_tensor=False).numpy()


def test_pooling_after_the_projection_equals_the_stock_path():
    stock = splade_tiny()
    pooled = splade_tiny()
    assert pool_after_projection(pooled)
    assert isinstance(pooled[0].model, MaxPooledMLM)
    # The texts differ in length, so padded positions are in the batch and must not count.
    # Swapping the max and the activation is exact; the projection of a few rows at a time rounds like any other
    # matrix blocking (~1e-7).
    np.testing.assert_allclose(encode(pooled), encode(stock), rtol=0, atol=1e-6)
    assert not pool_after_projection(pooled)  # installed once


def test_chunks_of_any_size_give_the_same_weights():
    reference = splade_tiny()
    pool_after_projection(reference)
    expected = encode(reference)
    reference[0].model.rows_per_chunk = 5  # chunks that end inside a text and span two
    np.testing.assert_allclose(encode(reference), expected, rtol=0, atol=1e-6)
