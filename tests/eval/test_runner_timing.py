"""`braid eval`'s timings pay every query's encoding: the process's query cache carries nothing between pipelines,
nor from the batch into the single-query latency sample."""

from __future__ import annotations

from braid.common.dataset_resolver import open_dataset_dir
from braid.eval.runner import run_pipeline
from braid.indexer.query_encodings import query_memo
from braid.pipelines.pipeline import load_pipeline, open_pipeline


def test_each_timing_encodes_its_queries_afresh(tiny_beir, tmp_path):
    dataset = open_dataset_dir(tiny_beir)
    queries = dataset.judged_queries("test")
    pipeline = open_pipeline(load_pipeline("dense"), dataset, tmp_path / "indexes")
    for _ in range(2):  # the second run finds the first run's encodings in no cache
        result = run_pipeline(pipeline, dataset, "test", latency_sample=len(queries))
        memo = query_memo()
        # What the cache saw since the latency sample began: each of its queries once, never found.
        assert (memo.hits, memo.misses) == (0, len(queries))
        assert result.queries_per_s and set(result.latency_ms) == {"p50", "p99"}
