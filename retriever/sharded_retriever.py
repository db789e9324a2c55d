"""Document-partitioned retrieval: one retriever over a collection cut into shards, each shard searched in full.

A query is encoded once (by one shard, round robin: an embedding, a sparse vector) and goes to every shard; each
returns its own top k (:class:`~braid.retriever.protocol.Partial`), and the lists merge into the collection's top k.
This is exact because every retriever ranks a document by a score that does not depend on which other documents
share its shard, once a shard knows what it must of the whole collection (a first round, where needed):

- **BM25** needs collection-wide document frequencies, document count and average length; the query takes two
  rounds (Elasticsearch's ``dfs_query_then_fetch``): every shard reports its share of the query's statistics, the
  sums go back with the search, and each shard scores as the whole collection would
  (:class:`~braid.retriever.bm25_retriever.BM25Retriever`).
- **SPLADE** (impact dot products) and **dense** inner products compare across shards as they are; Lucene's
  shards return every hit tied at rank k so the merge breaks ties by id over the whole collection.
- **Binary** returns its top k by code score with the float rescoring of its head; the merge takes the global top
  k by code score and rescores the global head from the shards' float scores.
- **Multi-vector** scores candidates exactly, and which documents are candidates depends on the whole collection
  (the best ``prefilter`` by the centroid bound, then the best ``candidates`` by centroid interaction). The shards
  share the unsharded index's centroids, so bounds and approximations are the same numbers; a first round collects
  each shard's best ones, the broker finds the collection's two cut-off scores, and each shard scores exactly its
  documents above them: together, the unsharded index's candidates (:func:`candidate_cuts`).
- **SLIM** refines the best ``candidates`` of its impact index by exact late interaction; a first round finds the
  collection's first-stage cut-off score (:func:`first_stage_cut`), and each shard refines its documents above it.

The shards behind a :class:`ShardedRetriever` are anything with ``encode_query``, ``query_statistics``,
``search_partial`` and ``document_text``: the retrievers themselves in one process, or Ray Serve deployments
(:mod:`braid.service.ray_serving`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

import numpy as np

from braid.common.errors import BraidError
from braid.retriever.binary_retriever import rescored_hits
from braid.retriever.hit import Hit
from braid.retriever.protocol import Partial, Retriever
from braid.retriever.ties import id_ranks, tie_order

T = TypeVar("T")


class Shard(Protocol):
    """What a sharded search asks of one shard of a retriever's index."""

    def query_statistics(self, query: Any, k: int) -> Any: ...

    def encode_query(self, query: str) -> Any: ...

    def search_partial(self, query: Any, k: int, statistics: Any = None) -> Partial: ...

    def document_text(self, doc_id: str) -> str | None: ...


def sum_statistics(parts: Sequence[dict]) -> dict:
    """BM25's collection statistics from each shard's share: counts add up, document frequencies term by term."""
    df: dict[str, int] = {}
    for part in parts:
        for term, count in part["df"].items():
            df[term] = df.get(term, 0) + int(count)
    return {
        "documents": sum(int(part["documents"]) for part in parts),
        "length": sum(int(part["length"]) for part in parts),
        "df": df,
    }


def merge_scored(partials: Sequence[Partial], k: int) -> list[Hit]:
    """Union of the shards' lists, by descending score, equal scores by ascending id."""
    ids = [doc_id for part in partials for doc_id in part.ids]
    if not ids:
        return []
    scores = np.concatenate([np.asarray(part.scores, dtype=np.float64) for part in partials])
    order = np.lexsort((id_ranks(ids), -scores))[:k]
    return [Hit(ids[row], float(scores[row])) for row in order.tolist()]


def merge_tied(partials: Sequence[Partial], k: int) -> list[Hit]:
    """Lucene shards' raw scores: ties broken by id over the union, exactly as one index breaks them."""
    ids = [doc_id for part in partials for doc_id in part.ids]
    if not ids:
        return []
    scores = np.concatenate([np.asarray(part.scores) for part in partials])
    order, adjusted = tie_order(scores, id_ranks(ids))
    return [Hit(ids[row], score) for row, score in zip(order[:k].tolist(), adjusted[:k].tolist(), strict=True)]


def merge_binary(partials: Sequence[Partial], k: int, rescore: int) -> list[Hit]:
    """The global top ``k`` by code score; its first ``rescore`` keep the float scores their shards computed."""
    ids = [doc_id for part in partials for doc_id in part.ids]
    if not ids:
        return []
    scores = np.concatenate([np.asarray(part.scores, dtype=np.float64) for part in partials])
    head = np.concatenate([np.asarray(part.head, dtype=np.float64) for part in partials])
    order = np.lexsort((id_ranks(ids), -scores))[:k]
    merged_head = head[order]
    merged_head[rescore:] = np.nan
    return rescored_hits([ids[row] for row in order.tolist()], scores[order], merged_head)


#: How each retriever kind's shard lists merge; kinds not listed merge by score (:func:`merge_scored`).
MERGES: dict[str, Callable[[Sequence[Partial], int, Mapping[str, Any]], list[Hit]]] = {
    "bm25": lambda partials, k, params: merge_tied(partials, k),
    "splade": lambda partials, k, params: merge_tied(partials, k),
    "binary": lambda partials, k, params: merge_binary(partials, k, int(params.get("rescore", 100))),
}


def candidate_cuts(parts: Sequence[dict | None]) -> dict | None:
    """Multi-vector's collection-wide candidate cuts from each shard's best bounds and centroid-interaction scores:
    the bound of the unsharded index's last kept document, and the approximate score of its last exactly scored
    one (None where it keeps few enough to score them all)."""
    found = [part for part in parts if part is not None]
    if not found:
        return None
    exact, keep = found[0]["exact"], found[0]["keep"]
    bound = np.concatenate([part["bound"] for part in found])
    bound_min = float(np.sort(bound)[::-1][keep - 1]) if bound.size > keep else float("-inf")
    selected = bound >= bound_min
    approximate_min = None
    if int(selected.sum()) > exact and all(part["approximate"] is not None for part in found):
        approximate = np.concatenate([part["approximate"] for part in found])[selected]
        approximate_min = float(np.sort(approximate)[::-1][exact - 1])
    return {"bound_min": bound_min, "approximate_min": approximate_min}


def first_stage_cut(parts: Sequence[dict]) -> dict:
    """SLIM's collection-wide first-stage cut-off: the score of the unsharded index's last refined candidate."""
    depth = parts[0]["depth"]
    scores = np.concatenate([part["scores"] for part in parts])
    return {"min": float(np.sort(scores)[::-1][depth - 1]) if scores.size > depth else float("-inf")}


#: Kinds whose search needs to know the whole collection: each shard's share, combined before the search round.
STATISTICS: dict[str, Callable[[Sequence[Any]], Any]] = {
    "bm25": sum_statistics,
    "multivector": candidate_cuts,
    "slim": first_stage_cut,
}
#: Kinds that search with the query text itself (analysis is per shard and cheap); the others encode it once.
UNENCODED = frozenset({"bm25"})


class ShardedRetriever(Retriever):
    """One retriever kind over a document-partitioned collection: fan out, merge (module docstring)."""

    def __init__(
        self, kind: str, shards: Sequence[Shard], params: Mapping[str, Any] | None = None, doc_count: int = 0
    ) -> None:
        if not shards:
            raise BraidError("a sharded retriever needs at least one shard")
        self.kind = kind
        self.shards = list(shards)
        self.params = dict(params or {})
        self.doc_count = doc_count
        self._turn = itertools.count()
        self._pool = ThreadPoolExecutor(max_workers=len(self.shards), thread_name_prefix=f"shards-{kind}")

    def _each(self, call: Callable[[Shard], T]) -> list[T]:
        return list(self._pool.map(call, self.shards))

    def search(self, query: str, k: int = 10) -> list[Hit]:
        k = int(k)
        encoded = query
        if self.kind not in UNENCODED:
            # One shard encodes the query (round robin) and every shard searches with the result: the encoder's
            # cost is paid once per query, not once per shard.
            encoded = self.shards[next(self._turn) % len(self.shards)].encode_query(query)
        statistics = None
        if self.kind in STATISTICS:
            statistics = STATISTICS[self.kind](self._each(lambda shard: shard.query_statistics(encoded, k)))
        partials = self._each(lambda shard: shard.search_partial(encoded, k, statistics))
        merge = MERGES.get(self.kind)
        return merge(partials, k, self.params) if merge else merge_scored(partials, k)

    def batch_search(self, queries: Mapping[str, str], k: int = 1000) -> dict[str, list[Hit]]:
        return {qid: self.search(query, k) for qid, query in queries.items()}

    def document_text(self, doc_id: str) -> str | None:
        for shard in self.shards:
            found = shard.document_text(doc_id)
            if found is not None:
                return found
        return None

    def close(self) -> None:
        self._pool.shutdown(wait=False)
