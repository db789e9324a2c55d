"""SPLADE search: encode the query, quantize it like the documents, and take the dot product in Lucene."""

from __future__ import annotations

import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from braid.indexer.encoder_cache import cached_encoder
from braid.indexer.manifest import Manifest
from braid.indexer.splade_encoder import quantize
from braid.indexer.splade_index import IMPACT_DIR, encoder_for
from braid.retriever.hit import Hit, RankedList
from braid.retriever.impact_search import ImpactSearcher
from braid.retriever.protocol import NO_EXCLUSION, Partial, Retriever


class SpladeRetriever(Retriever):
    """Learned-sparse retrieval (SPLADE) with the encoder recorded in the index manifest."""

    def __init__(self, index_dir: Path, threads: int | None = None) -> None:
        self.index_dir = Path(index_dir)
        manifest = Manifest.read(self.index_dir)
        self.params = manifest.params
        self.threads = threads or os.cpu_count() or 1
        self.encoder = cached_encoder(encoder_for, self.params, role="query")  # one per process
        self._impact = ImpactSearcher(self.index_dir / IMPACT_DIR, manifest.doc_count)

    def query_vector(self, query: str) -> dict[str, int]:
        return quantize(self.encoder.encode_queries([query])[0], self.params["scale"])

    def search_vector(self, vector: Mapping[str, int], k: int = 10) -> list[Hit]:
        return self._impact.search(vector, k)

    def search(self, query: str, k: int = 10) -> list[Hit]:
        return self.search_vector(self.query_vector(query), k)

    def search_ranked(self, query: str, k: int = 10) -> RankedList:
        return self._impact.search_ranked(self.query_vector(query), k)

    def encode_query(self, query: str) -> dict[str, int]:
        return self.query_vector(query)

    def search_partial(
        self, query: Mapping[str, int], k: int, statistics: Any = None, exclude: frozenset[str] = NO_EXCLUSION
    ) -> Partial:
        # Impact scores are dot products of stored weights: they compare across shards without statistics.
        return self._impact.search_raw(query, k, exclude)

    def batch_search(self, queries: Mapping[str, str], k: int = 1000) -> dict[str, list[Hit]]:
        qids = list(queries)
        vectors = self.encoder.encode_queries([queries[qid] for qid in qids])
        scaled = [quantize(vector, self.params["scale"]) for vector in vectors]
        with ThreadPoolExecutor(max_workers=self.threads) as pool:
            results = list(pool.map(lambda vector: self.search_vector(vector, k), scaled))
        return dict(zip(qids, results, strict=True))
