"""The query-encoding cache: a repeated query is encoded once, answers equal uncached ones, entries are read-only."""

from __future__ import annotations

import numpy as np
import pytest

from braid.indexer import query_encodings
from braid.indexer.dense_encoder import DenseEncoder
from braid.indexer.query_encodings import CachingQueryEncoder, normalize_query, set_query_cache_bytes


@pytest.fixture
def fresh_cache():
    set_query_cache_bytes(1 << 20)
    yield query_encodings.query_memo()
    set_query_cache_bytes(query_encodings.DEFAULT_QUERY_CACHE_BYTES)


class Counting:
    """A real encoder that counts the texts it is asked to encode."""

    def __init__(self, encoder):
        self.encoder, self.seen = encoder, []
        self.dimension = encoder.dimension

    def encode(self, texts):
        self.seen += list(texts)
        return self.encoder.encode(texts)


def test_repeated_queries_are_encoded_once_and_equal_uncached(fresh_cache):
    plain = DenseEncoder("all-MiniLM-L6-v2", 32)
    counting = Counting(plain)
    cached = CachingQueryEncoder(counting, "minilm-32")
    first = cached.encode(["vitamin d  infection", "protein folding"])
    again = cached.encode(["  vitamin d infection ", "protein folding", "new query"])
    assert counting.seen == ["vitamin d infection", "protein folding", "new query"]
    assert isinstance(again, np.ndarray) and again.shape == (3, plain.dimension)
    assert np.array_equal(again[:2], first)
    assert np.array_equal(again, plain.encode(["vitamin d infection", "protein folding", "new query"]))
    assert fresh_cache.hits == 2 and fresh_cache.misses == 3 and len(fresh_cache) == 3 and fresh_cache.bytes > 0
    assert cached.dimension == plain.dimension  # everything else is the encoder's


def test_list_encodings_come_back_unshared_and_read_only(fresh_cache):
    class Sparse:
        def encode_queries(self, texts):
            return [{"term": float(len(text))} for text in texts]

    class Tokens:
        def encode_queries(self, texts):
            return [np.ones((len(text.split()), 4), dtype=np.float32) for text in texts]

    sparse = CachingQueryEncoder(Sparse(), "sparse")
    first = sparse.encode_queries(["a b"])[0]
    first["term"] = -1.0  # a caller changing its copy
    assert sparse.encode_queries(["a b"])[0] == {"term": 3.0}
    tokens = CachingQueryEncoder(Tokens(), "tokens").encode_queries(["a b c", "a b c"])
    assert tokens[0].shape == (3, 4) and not tokens[0].flags.writeable


def test_a_zero_budget_turns_the_cache_off():
    set_query_cache_bytes(0)
    try:
        counting = Counting(DenseEncoder("all-MiniLM-L6-v2", 32))
        cached = CachingQueryEncoder(counting, "off")
        cached.encode(["same"])
        cached.encode(["same"])
        assert counting.seen == ["same", "same"]
    finally:
        set_query_cache_bytes(query_encodings.DEFAULT_QUERY_CACHE_BYTES)


def test_normalized_text():
    assert normalize_query("  a\tb \n c ") == "a b c"
