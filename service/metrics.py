"""Prometheus metrics of one server: request counts and latency per method, per-stage latency, queue depth, the
process's resident memory and what each pipeline's opened indexes hold (loaded or memory-mapped).

Each server owns its registry (not the process-global one), so several servers in one process (tests) never
share counters.
"""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from braid.common.peak_memory import resident_bytes
from braid.indexer.opened_memory import OpenedMemory, opened_memory
from braid.indexer.query_encodings import query_memo
from braid.service.result_cache import ResultCache

# Milliseconds to tens of seconds: BM25 answers in ~1 ms, an LLM rerank on a CPU in seconds.
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "braid_requests",
            "Requests answered, by protocol, method and status",
            ("protocol", "method", "code"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "braid_request_seconds",
            "Request latency, by protocol and method",
            ("protocol", "method"),
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.stage_latency = Histogram(
            "braid_stage_seconds",
            "Pipeline stage latency (retrievers, fusion, cascade, rerank, total)",
            ("pipeline", "stage"),
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.inflight = Gauge(
            "braid_inflight_requests", "Requests admitted and not yet answered", registry=self.registry
        )
        self.queue_depth = Gauge(
            "braid_queue_depth", "Admitted requests waiting for a worker thread", registry=self.registry
        )
        self.rejected = Counter(
            "braid_rejected", "Requests refused before any work, by reason", ("reason",), registry=self.registry
        )
        self.rerank_batch = Histogram(
            "braid_rerank_batch_size",
            "Requests sharing one reranker model call",
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32),
            registry=self.registry,
        )
        self.resident = Gauge(
            "braid_resident_bytes", "Resident memory (RSS) of the server process", registry=self.registry
        )
        self.resident.set_function(resident_bytes)
        self.index_memory = Gauge(
            "braid_index_memory_bytes",
            "Memory of each pipeline's indexes once opened: loaded into RAM, or memory-mapped (read on demand)",
            ("pipeline", "how"),
            registry=self.registry,
        )
        self.query_cache = Gauge(
            "braid_query_encoding_cache",
            "The process's query-encoding cache: hits and misses (per query text), entries, bytes",
            ("what",),
            registry=self.registry,
        )
        self.result_cache = Gauge(
            "braid_result_cache",
            "Each pipeline's cache of answers (emptied by a reload; keyed by the collection's write version): "
            "hits, misses, entries",
            ("pipeline", "what"),
            registry=self.registry,
        )
        self._result_caches: dict[str, ResultCache | None] = {}
        self.generation = Gauge(
            "braid_pipeline_generation",
            "Reloads of each pipeline so far (1 = as started)",
            ("pipeline",),
            registry=self.registry,
        )

    def observe_index_memory(self, pipeline: str, index_paths: list[Path]) -> None:
        """Record what the pipeline's indexes hold once opened (:mod:`braid.indexer.opened_memory`)."""
        total = OpenedMemory(0, 0)
        for path in index_paths:
            total += opened_memory(path)
        self.index_memory.labels(pipeline, "loaded").set(total.loaded_bytes)
        self.index_memory.labels(pipeline, "mapped").set(total.mapped_bytes)

    def watch_result_cache(self, pipeline: str, cache: ResultCache | None) -> None:
        """Report ``cache`` (the pipeline's current one: a reload replaces it) under the pipeline's name."""
        self._result_caches[pipeline] = cache

    def _collect_caches(self) -> None:
        memo = query_memo()
        self.query_cache.labels("hits").set(memo.hits)
        self.query_cache.labels("misses").set(memo.misses)
        self.query_cache.labels("entries").set(len(memo))
        self.query_cache.labels("bytes").set(memo.bytes)
        for pipeline, cache in self._result_caches.items():
            for what, value in (
                (("hits", 0), ("misses", 0), ("entries", 0))
                if cache is None
                else (("hits", cache.hits), ("misses", cache.misses), ("entries", len(cache)))
            ):
                self.result_cache.labels(pipeline, what).set(value)

    def observe_stages(self, pipeline: str, timings_ms: dict[str, float]) -> None:
        for stage, ms in timings_ms.items():
            self.stage_latency.labels(pipeline, stage).observe(ms / 1000)

    def render(self) -> bytes:
        self._collect_caches()
        return generate_latest(self.registry)
