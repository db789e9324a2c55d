"""Dot-product search over a Lucene impact index, for any learned-sparse query vector.

The query is a disjunction of term queries boosted by the query weights; with Anserini's ImpactSimilarity a
term scores boost x stored impact, so a document's score is exactly the dot product of the two vectors. Every
query term is searched whatever its document frequency: pyserini's impact searcher drops terms whose idf is at
most ``min_idf`` (0 by default), silently removing terms that occur in every document.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from braid.indexer.lucene_jvm import java_calls, java_class, search_top
from braid.indexer.lucene_reader import open_reader, open_searcher, read_docids
from braid.retriever.hit import Hit
from braid.retriever.ties import DocIds


class TermDisjunction:
    """Lucene queries that sum boosted term matches over the ``contents`` field: OR of BoostQuery(TermQuery) clauses.

    What an impact query (boost = query weight) and a sharded BM25 query (boost = query count x idf correction) are
    made of. Each term's (immutable) TermQuery is made once: two of the four JNI calls a query term costs.
    """

    def __init__(self) -> None:
        self._Builder = java_class("org.apache.lucene.search.BooleanQuery$Builder")
        self._BoostQuery = java_class("org.apache.lucene.search.BoostQuery")
        self._TermQuery = java_class("org.apache.lucene.search.TermQuery")
        self._Term = java_class("org.apache.lucene.index.Term")
        self._should = java_class("org.apache.lucene.search.BooleanClause$Occur").SHOULD
        self._term_queries: dict[str, object] = {}  # filled under java_calls()

    def _term_query(self, term: str):
        query = self._term_queries.get(term)
        if query is None:
            query = self._term_queries[term] = self._TermQuery(self._Term("contents", term))
        return query

    def build(self, weights: Mapping[str, float]):
        with java_calls():
            builder = self._Builder()
            for term, weight in weights.items():
                builder.add(self._BoostQuery(self._term_query(term), float(weight)), self._should)
            return builder.build()


class ImpactSearcher:
    def __init__(self, index_dir: Path, doc_count: int) -> None:
        self._doc_ids = DocIds(read_docids(index_dir, doc_count))
        self._reader = open_reader(index_dir)
        self._searcher = open_searcher(self._reader, java_class("io.anserini.search.similarity.ImpactSimilarity")())
        index_searcher = java_class("org.apache.lucene.search.IndexSearcher")
        # SPLADE queries expand to hundreds of terms; Lucene's default cap is 1024 clauses.
        index_searcher.setMaxClauseCount(max(8192, index_searcher.getMaxClauseCount()))
        self._disjunction = TermDisjunction()

    def search(self, vector: Mapping[str, float], k: int) -> list[Hit]:
        query = self._disjunction.build(vector)
        return self._doc_ids.top_k(lambda depth: search_top(self._searcher, query, depth), int(k))

    def search_raw(self, vector: Mapping[str, float], k: int) -> tuple[list[str], np.ndarray]:
        """Ids and raw scores of the hits that can be in the top ``k`` (see :meth:`DocIds.top_k_raw`)."""
        query = self._disjunction.build(vector)
        return self._doc_ids.top_k_raw(lambda depth: search_top(self._searcher, query, depth), int(k))
