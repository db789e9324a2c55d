"""BM25 search over a braid Lucene index (Anserini's BM25 via pyserini).

Lucene's BM25 scores a term as idf * tf / (tf + k1 * (1 - b + b * dl / avgdl)) with
idf = ln(1 + (N - df + 0.5) / (df + 0.5)) (Robertson & Zaragoza, "The Probabilistic Relevance Framework:
BM25 and Beyond"; Lucene omits the constant (k1 + 1) factor, which does not change rankings). Batch search
runs the queries on all cores inside the JVM.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from eval.errors import BraidError
from indexer.lucene_jvm import lucene
from retriever.hit import Hit


class BM25Retriever:
    """Okapi BM25 over a Lucene inverted index built by :mod:`indexer.bm25_index`."""

    def __init__(self, index_dir: Path, k1: float = 0.9, b: float = 0.4, threads: int | None = None) -> None:
        if k1 < 0:
            raise BraidError(f"bm25 k1 must be >= 0, got {k1}")
        if not 0 <= b <= 1:
            raise BraidError(f"bm25 b must be between 0 and 1, got {b}")
        self.index_dir = Path(index_dir)
        self.threads = threads or os.cpu_count() or 1
        self._searcher = lucene().LuceneSearcher(str(self.index_dir))
        self._searcher.set_bm25(float(k1), float(b))

    @property
    def num_docs(self) -> int:
        return int(self._searcher.num_docs)

    def search(self, query: str, k: int = 10) -> list[Hit]:
        return [Hit(hit.docid, float(hit.score)) for hit in self._searcher.search(query, k)]

    def batch_search(self, queries: Mapping[str, str], k: int = 1000) -> dict[str, list[Hit]]:
        if not queries:
            return {}
        qids = list(queries)
        results = self._searcher.batch_search([queries[q] for q in qids], qids, k=k, threads=self.threads)
        return {qid: [Hit(hit.docid, float(hit.score)) for hit in results.get(qid, [])] for qid in qids}

    def document_text(self, doc_id: str) -> str | None:
        document = self._searcher.doc(doc_id)
        if document is None:
            return None
        raw = document.raw()
        try:
            return json.loads(raw).get("contents", raw)
        except (TypeError, json.JSONDecodeError):
            return raw
