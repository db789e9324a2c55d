"""Reranking through the server: the Rerank call, a rerank pipeline, and dynamic batching of the model calls."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from braid.ranker.rerank_spec import RerankSpec
from braid.ranker.reranker import BlockRanker
from braid.service.client import BraidClient
from braid.service.rerank_batcher import BatchingReranker
from tests.service.conftest import ServerThread, make_core

DOCS = [
    ("aspirin", "Aspirin lowers the risk of a heart attack in adults with heart disease."),
    ("weather", "Tomorrow will be sunny with light winds."),
    ("cat", "The cat sat on the mat."),
]


def test_concurrent_requests_share_one_model_call(smollm2):
    ranker = BlockRanker(RerankSpec(mode="first", window=4, stride=2), smollm2)
    sizes: list[int] = []
    batcher = BatchingReranker(ranker, max_batch=4, max_wait_ms=300, on_batch=sizes.append)
    queries = ["does aspirin prevent heart attacks", "what is the weather", "where did the cat sit"]
    try:
        barrier = threading.Barrier(len(queries))

        def ask(query):
            barrier.wait()
            return batcher.rerank(query, DOCS)

        with ThreadPoolExecutor(len(queries)) as pool:
            batched = list(pool.map(ask, queries))
    finally:
        batcher.close()
    assert max(sizes) > 1 and sum(sizes) == len(queries)
    for query, got in zip(queries, batched, strict=True):
        alone = ranker.rerank(query, DOCS)
        assert [doc for doc, _ in got] == [doc for doc, _ in alone]
        assert [s for _, s in got] == pytest.approx([s for _, s in alone], abs=1e-4)


def test_rerank_call_and_rerank_pipeline_over_grpc(service_data, smollm2):
    running = ServerThread(make_core(service_data, ("bm25", "bm25-first")))
    try:
        with BraidClient(running.grpc) as client:
            answer = client.rerank("does aspirin prevent heart attacks", DOCS)
            assert answer.pipeline == "bm25-first" and sorted(h.doc_id for h in answer.hits) == sorted(
                d for d, _ in DOCS
            )
            assert [h.score for h in answer.hits] == sorted((h.score for h in answer.hits), reverse=True)
            reranked = client.search("cat fish", k=3, pipeline="bm25-first", explain=True)
            assert all("rerank" in h.explanation.stages for h in reranked.hits)
            skipped = client.search("cat fish", k=3, pipeline="bm25-first", rerank_depth=0)
            assert [h.doc_id for h in skipped.hits] == [h.doc_id for h in client.search("cat fish", k=3).hits]
            # An id given twice is answered once, for its last version (as an upsert keeps it).
            assert [h.doc_id for h in client.rerank("q", [("a", "x"), ("b", "z"), ("a", "y")]).hits].count("a") == 1
            with pytest.raises(grpc.RpcError) as no_reranker:
                client.rerank("q", DOCS, "bm25")
            assert no_reranker.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        running.stop()
