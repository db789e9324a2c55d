"""BM25 search over a braid Lucene index.

Lucene's BM25 scores a term as idf * tf / (tf + k1 * (1 - b + b * dl / avgdl)) with
idf = ln(1 + (N - df + 0.5) / (df + 0.5)) (Robertson & Zaragoza, "The Probabilistic Relevance Framework:
BM25 and Beyond"; Lucene omits the constant (k1 + 1) factor, which does not change rankings).

Queries are analyzed exactly as the index was (Anserini's English analyzer with the manifest's stemmer and
stopword setting) and run through Lucene's IndexSearcher directly. pyserini's searcher would also load every
hit's stored document and copy it through pyjnius, which costs 5x more at depth 1000; here a hit is an
internal doc number and a score, mapped to its id through the index's ``docids.txt``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from braid.common.errors import BraidError
from braid.indexer.lucene_jvm import java_calls, java_class, search_top
from braid.indexer.lucene_reader import open_reader, open_searcher, read_docids
from braid.indexer.manifest import Manifest
from braid.retriever.hit import Hit
from braid.retriever.protocol import Retriever
from braid.retriever.ties import DocIds


class BM25Retriever(Retriever):
    """Okapi BM25 over a Lucene inverted index built by :mod:`braid.indexer.bm25_index`."""

    def __init__(self, index_dir: Path, k1: float = 0.9, b: float = 0.4, threads: int | None = None) -> None:
        if k1 < 0:
            raise BraidError(f"bm25 k1 must be >= 0, got {k1}")
        if not 0 <= b <= 1:
            raise BraidError(f"bm25 b must be between 0 and 1, got {b}")
        self.index_dir = Path(index_dir)
        manifest = Manifest.read(self.index_dir)
        self.threads = threads or os.cpu_count() or 1
        self._doc_ids = DocIds(read_docids(self.index_dir, manifest.doc_count))
        self._lucene_ids = {doc_id: number for number, doc_id in enumerate(self._doc_ids.ids.tolist())}
        self._reader = open_reader(self.index_dir)
        bm25 = java_class("org.apache.lucene.search.similarities.BM25Similarity")(k1, b)
        self._searcher = open_searcher(self._reader, bm25)
        self._analyzer = java_class("io.anserini.analysis.DefaultEnglishAnalyzer").fromArguments(
            manifest.params["stemmer"], bool(manifest.params["keep_stopwords"]), None
        )
        self._generator = java_class("io.anserini.search.query.BagOfWordsQueryGenerator")()

    @property
    def num_docs(self) -> int:
        return len(self._doc_ids)

    def search(self, query: str, k: int = 10) -> list[Hit]:
        with java_calls():
            lucene_query = self._generator.buildQuery("contents", self._analyzer, query)
        return self._doc_ids.top_k(lambda depth: search_top(self._searcher, lucene_query, depth), int(k))

    def batch_search(self, queries: Mapping[str, str], k: int = 1000) -> dict[str, list[Hit]]:
        qids = list(queries)
        with ThreadPoolExecutor(max_workers=self.threads) as pool:
            results = list(pool.map(lambda qid: self.search(queries[qid], k), qids))
        return dict(zip(qids, results, strict=True))

    def document_text(self, doc_id: str) -> str | None:
        number = self._lucene_ids.get(doc_id)
        if number is None:
            return None
        with java_calls():
            raw = self._reader.storedFields().document(number).get("raw")
        try:
            return json.loads(raw).get("contents", raw)
        except (TypeError, json.JSONDecodeError):
            return raw
