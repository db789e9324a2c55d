"""Dot-product search over a Lucene impact index, for any learned-sparse query vector.

The query is a disjunction of term queries boosted by the query weights; with Anserini's ImpactSimilarity a
term scores boost x stored impact, so a document's score is exactly the dot product of the two vectors. Every
query term is searched whatever its document frequency: pyserini's impact searcher drops terms whose idf is at
most ``min_idf`` (0 by default), silently removing terms that occur in every document.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from braid.indexer.lucene_jvm import java_calls, java_class, top_searches
from braid.indexer.lucene_reader import open_reader, open_searcher, read_docids
from braid.retriever.hit import Hit, RankedList
from braid.retriever.protocol import Partial
from braid.retriever.ties import DocIds


class TermDisjunction:
    """Lucene queries that sum boosted term matches over the ``contents`` field: OR of BoostQuery(TermQuery) clauses.

    What an impact query (boost = query weight) and a sharded BM25 query (boost = query count x idf correction) are
    made of. The weights cross into Java as one JSON object, read by Jackson into an ordered map of floats, and
    Anserini's ``BagOfWordsQueryGenerator`` builds the clauses in that order: three JNI calls a query instead of
    three or four a term (a SPLADE query has ~50 terms; building it cost more than searching it at depth 10). Each
    weight is rounded to float32 first, so the JSON decimal reads back as exactly the float a direct call passed.
    """

    def __init__(self) -> None:
        mapper = java_class("com.fasterxml.jackson.databind.ObjectMapper")()
        self._reader = mapper.readerForMapOf(java_class("java.lang.Float"))  # a LinkedHashMap: insertion order
        self._generator = java_class("io.anserini.search.query.BagOfWordsQueryGenerator")()

    def build(self, weights: Mapping[str, float]):
        floats = np.asarray(list(weights.values()), dtype=np.float32).tolist()
        text = json.dumps(dict(zip(weights, floats, strict=True)))
        with java_calls():
            return self._generator.buildQuery("contents", self._reader.readValue(text))


#: Up to this many documents left out of a Lucene search are fetched past and dropped; more are excluded by the query.
SMALL_EXCLUSION = 256
_not_ids: OrderedDict[frozenset[str], object] = OrderedDict()  # id set -> its TermInSetQuery, most recent last
_not_ids_lock = threading.Lock()


def excluding(query, k: int, exclude: frozenset[str]) -> tuple[object, int, frozenset[str]]:
    """``query`` with the ``exclude``d documents left out inside Lucene: (the query to run, the depth to fetch for
    a top ``k``, the ids still to drop from its hits).

    A few documents (a collection's deleted ones) are fetched past: the search goes ``len(exclude)`` deeper and drops
    them. Many (a selective metadata filter leaves most of the collection out) would make the search as deep as the
    collection, so the query becomes ``query AND NOT id IN exclude`` (Lucene's ReqExclScorer: scores are the query's
    own) and fetches ``k``. The id set's TermInSetQuery costs one JNI call per id to build (~25 us), so the last few
    are kept: a filter repeats across queries, and the BM25 and SPLADE searches of one segment share it; Lucene's
    query cache then keeps its bitset.
    """
    if len(exclude) <= SMALL_EXCLUSION:
        return query, k + len(exclude), exclude
    with _not_ids_lock:
        ids = _not_ids.get(exclude)
        if ids is not None:
            _not_ids.move_to_end(exclude)
    with java_calls():
        if ids is None:
            refs = java_class("java.util.ArrayList")()
            bytes_ref = java_class("org.apache.lucene.util.BytesRef")
            for doc_id in exclude:
                refs.add(bytes_ref(doc_id.encode()))
            ids = java_class("org.apache.lucene.search.TermInSetQuery")("id", refs)
            with _not_ids_lock:
                _not_ids[exclude] = ids
                while len(_not_ids) > 8:
                    _not_ids.popitem(last=False)
        occur = java_class("org.apache.lucene.search.BooleanClause$Occur")
        builder = java_class("org.apache.lucene.search.BooleanQuery$Builder")()
        builder.add(query, occur.MUST)
        builder.add(ids, occur.MUST_NOT)
        return builder.build(), k, frozenset()


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
        return self.search_ranked(vector, k).hits()

    def search_ranked(self, vector: Mapping[str, float], k: int) -> RankedList:
        query = self._disjunction.build(vector)
        search, search_after = top_searches(self._searcher, query)
        return self._doc_ids.top_k(search, int(k), search_after)

    def search_raw(self, vector: Mapping[str, float], k: int, exclude: frozenset[str] = frozenset()) -> Partial:
        """Ids and raw scores of the hits that can be in the top ``k`` (see :meth:`DocIds.top_k_raw`), the
        ``exclude``d documents left out (:func:`excluding`)."""
        query, depth, leftover = excluding(self._disjunction.build(vector), int(k), exclude)
        search, search_after = top_searches(self._searcher, query)
        return Partial(*self._doc_ids.top_k_raw(search, depth, search_after)).without(leftover)
