"""BM25 search over a braid Lucene index.

Lucene's BM25 scores a term as idf * tf / (tf + k1 * (1 - b + b * dl / avgdl)) with
idf = ln(1 + (N - df + 0.5) / (df + 0.5)) (Robertson & Zaragoza, "The Probabilistic Relevance Framework:
BM25 and Beyond"; Lucene omits the constant (k1 + 1) factor, which does not change rankings).

One shard of a document-partitioned collection scores with the whole collection's statistics (the two-round
scheme of Elasticsearch's ``dfs_query_then_fetch``): the broker sums every shard's document count, total length
and query-term document frequencies (:meth:`BM25Retriever.query_statistics`), and each shard reproduces the global
score through Lucene itself. A term's boost of idf_global / idf_shard makes its weight the global idf, and BM25 with
k1' = k1 (1 - b + b r) and b' = k1 b r / k1', where r = avgdl_shard / avgdl_global, has
k1' (1 - b' + b' dl / avgdl_shard) = k1 (1 - b + b dl / avgdl_global) for every document length dl: the global
length normalization. Sharded scores then equal unsharded ones up to float32 rounding.

Queries are analyzed exactly as the index was (Anserini's English analyzer with the manifest's stemmer and
stopword setting) and run through Lucene's IndexSearcher directly. pyserini's searcher would also load every
hit's stored document and copy it through pyjnius, which costs 5x more at depth 1000; here a hit is an
internal doc number and a score, mapped to its id through the index's ``docids.txt``.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from braid.common.errors import BraidError
from braid.indexer.lucene_jvm import java_calls, java_class, top_searches
from braid.indexer.lucene_reader import open_reader, open_searcher, read_docids
from braid.indexer.manifest import Manifest
from braid.retriever.hit import Hit, RankedList
from braid.retriever.impact_search import TermDisjunction, excluding
from braid.retriever.protocol import NO_EXCLUSION, Partial, Retriever
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
        self.k1, self.b = k1, b
        self._reader = open_reader(self.index_dir)
        self._BM25 = java_class("org.apache.lucene.search.similarities.BM25Similarity")
        self._searcher = open_searcher(self._reader, self._BM25(k1, b))
        self._analyzer = java_class("io.anserini.analysis.DefaultEnglishAnalyzer").fromArguments(
            manifest.params["stemmer"], bool(manifest.params["keep_stopwords"]), None
        )
        self._generator = java_class("io.anserini.search.query.BagOfWordsQueryGenerator")()
        self._analyze = java_class("io.anserini.analysis.AnalyzerUtils").analyze
        self._disjunction = TermDisjunction()
        self._Term = java_class("org.apache.lucene.index.Term")  # document frequencies, for collection-wide idf
        with java_calls():
            collection = self._searcher.collectionStatistics("contents")
            self._documents = int(collection.docCount()) if collection is not None else 0
            self._length = int(collection.sumTotalTermFreq()) if collection is not None else 0
        self._global_searchers: dict[tuple[float, float], object] = {}
        self._counts: dict[str, tuple[int, frozenset[str]]] = {}  # excluded documents' lengths and terms

    @property
    def num_docs(self) -> int:
        return len(self._doc_ids)

    def search(self, query: str, k: int = 10) -> list[Hit]:
        return self.search_ranked(query, k).hits()

    def search_ranked(self, query: str, k: int = 10) -> RankedList:
        with java_calls():
            lucene_query = self._generator.buildQuery("contents", self._analyzer, query)
        search, search_after = top_searches(self._searcher, lucene_query)
        return self._doc_ids.top_k(search, int(k), search_after)

    def analyze(self, text: str) -> list[str]:
        """``text``'s terms as this index analyzed its documents (stemmed, stopwords as built), in order."""
        with java_calls():
            listed = self._analyze(self._analyzer, text).toString()  # one JNI call, not one per term
        # "[a, b, c]": analyzed terms hold no whitespace, so ", " only ever separates them.
        return listed[1:-1].split(", ") if len(listed) > 2 else []

    def _terms(self, query: str) -> Counter[str]:
        return Counter(self.analyze(query))

    def _doc_freqs(self, terms: Counter[str]) -> dict[str, int]:
        with java_calls():
            return {term: int(self._reader.docFreq(self._Term("contents", term))) for term in terms}

    def query_statistics(self, query: str, k: int = 0, exclude: frozenset[str] = NO_EXCLUSION) -> dict:
        """This shard's document count, total length (in terms) and document frequency of each query term, the
        ``exclude``d documents subtracted: the statistics of an index without them (Lucene's own would count
        deleted documents until a merge; a live collection's scores then equal a fresh build's)."""
        terms = self._terms(query)
        df = self._doc_freqs(terms)
        documents, length = self._documents, self._length
        for doc_id in exclude:
            counted = self._counted(doc_id)
            if counted is None:
                continue
            doc_length, doc_terms = counted
            documents -= 1
            length -= doc_length
            for term in terms:
                if term in doc_terms:
                    df[term] -= 1
        return {"documents": documents, "length": length, "df": df}

    def _counted(self, doc_id: str) -> tuple[int, frozenset[str]] | None:
        """A document's length and terms as the index counted them (its stored text, analyzed as indexed)."""
        found = self._counts.get(doc_id)
        if found is None and doc_id in self._lucene_ids:
            analyzed = self.analyze(self.document_text(doc_id) or "")
            found = self._counts[doc_id] = (len(analyzed), frozenset(analyzed))
        return found

    def search_partial(
        self, query: str, k: int, statistics: dict | None = None, exclude: frozenset[str] = NO_EXCLUSION
    ) -> Partial:
        """The shard's top ``k`` (every hit tied at rank ``k`` included), scored with the collection's summed
        ``statistics`` (module docstring); with None, with this index's own statistics. ``exclude``d documents are
        left out after a search that much deeper, so the list is the top ``k`` of the others."""
        if statistics is None:
            with java_calls():
                lucene_query = self._generator.buildQuery("contents", self._analyzer, query)
            lucene_query, depth, leftover = excluding(lucene_query, k, exclude)
            search, search_after = top_searches(self._searcher, lucene_query)
            found = self._doc_ids.top_k_raw(search, depth, search_after)
            return Partial(*found).without(leftover)
        terms = self._terms(query)
        local = self._doc_freqs(terms)
        documents, length = int(statistics["documents"]), int(statistics["length"])
        boosts = {}
        for term, count in terms.items():
            shard_df, global_df = local[term], int(statistics["df"].get(term, 0))
            if shard_df == 0 or global_df == 0:
                continue  # no posting here to score
            boosts[term] = count * lucene_idf(global_df, documents) / lucene_idf(shard_df, self._documents)
        if not boosts or self._documents == 0:
            return Partial([], np.zeros(0, dtype=np.float32))
        searcher = self._searcher_for(self._length / self._documents, length / documents)
        lucene_query, depth, leftover = excluding(self._disjunction.build(boosts), k, exclude)
        search, search_after = top_searches(searcher, lucene_query)
        return Partial(*self._doc_ids.top_k_raw(search, depth, search_after)).without(leftover)

    def _searcher_for(self, shard_avgdl: float, global_avgdl: float):
        """A searcher over this shard whose BM25 length normalization is the collection's (module docstring)."""
        ratio = shard_avgdl / global_avgdl
        k1 = self.k1 * (1 - self.b + self.b * ratio)
        b = self.k1 * self.b * ratio / k1 if k1 > 0 else self.b
        key = (k1, min(b, 1.0))
        with java_calls():
            if key not in self._global_searchers:
                if len(self._global_searchers) > 64:  # the collection's average length changed (updates)
                    self._global_searchers.clear()
                self._global_searchers[key] = open_searcher(self._reader, self._BM25(*key))
            return self._global_searchers[key]

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


def lucene_idf(doc_freq: int, documents: int) -> float:
    """Lucene's BM25 idf, ln(1 + (N - df + 0.5) / (df + 0.5)), as it computes it (float32)."""
    return float(np.float32(math.log(1 + (documents - doc_freq + 0.5) / (doc_freq + 0.5))))
