"""What every retriever is to the layers above it: typed protocols that pipelines, tools and services program
against, so that none of them needs to know a concrete retriever class or probe one for a method."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from braid.retriever.hit import Hit, RankedList


@dataclass(frozen=True)
class Partial:
    """One index shard's answer to a query before the merge (:mod:`braid.retriever.sharded_retriever`).

    ``ids`` and ``scores`` are the shard's top hits, best first, with the retriever's raw scores: Lucene retrievers
    return every hit tied with rank k and leave tie-breaking to the merge, which sees all shards. ``head`` (binary
    only) holds the float-rescored scores of the shard's rescored head, NaN below it; ``scores`` are then the code
    scores that chose the head.
    """

    ids: list[str]
    scores: np.ndarray
    head: np.ndarray | None = None

    @classmethod
    def of_hits(cls, hits: list[Hit]) -> Partial:
        """A retriever's own top hits, whose scores compare across shards as they are."""
        ranked = RankedList.of_hits(hits)
        return cls(ranked.ids, ranked.scores)

    def without(self, exclude: frozenset[str]) -> Partial:
        """The list with the ``exclude`` documents left out (fetched ``len(exclude)`` deeper, so none is missing)."""
        if not exclude:
            return self
        keep = np.array([doc_id not in exclude for doc_id in self.ids], dtype=bool)
        ids = [doc_id for doc_id, kept in zip(self.ids, keep.tolist(), strict=True) if kept]
        return Partial(ids, np.asarray(self.scores)[keep], None if self.head is None else np.asarray(self.head)[keep])


#: Documents a search leaves out (a live collection's deleted and replaced ones), applied inside each retriever
#: before its top k and candidate cuts, so that the hits are those of an index without them.
NO_EXCLUSION: frozenset[str] = frozenset()


def excluded_rows(exclude: frozenset[str], row_of: Mapping[str, int]) -> np.ndarray:
    """The internal rows of the ``exclude`` documents this index holds."""
    return np.fromiter((row_of[doc_id] for doc_id in exclude if doc_id in row_of), dtype=np.int64)


class Retriever(Protocol):
    """Ranked hits over one index: best first, ties broken by document id, at most ``k``.

    Retriever classes subclass this protocol explicitly to inherit :meth:`document_text`; a class that keeps no
    text simply does not override it.
    """

    def search(self, query: str, k: int = 10) -> list[Hit]: ...

    def search_ranked(self, query: str, k: int = 10) -> RankedList:
        """:meth:`search`'s hits as arrays (what fusion reads); retrievers that rank arrays return them as they are."""
        return RankedList.of_hits(self.search(query, k))

    def batch_search(self, queries: Mapping[str, str], k: int = 1000) -> dict[str, list[Hit]]: ...

    def document_text(self, doc_id: str) -> str | None:
        """The document's text as the index stored it, or None where the index keeps no text."""
        return None

    def query_statistics(self, query: Any, k: int, exclude: frozenset[str] = NO_EXCLUSION) -> Any:
        """This index's share of what a sharded search of the top ``k`` for ``query`` (as :meth:`encode_query` gave
        it) must know of the whole collection, to combine over shards before the search round: BM25's document
        frequencies and lengths, multi-vector's candidate scores. None where scores depend on the document alone.
        ``exclude``: documents left out of candidate scores (BM25's statistics keep counting them until a merge, as
        Lucene's do)."""
        return None

    def encode_query(self, query: str) -> Any:
        """The query as :meth:`search_partial` takes it (an embedding, a sparse vector, token vectors): a sharded
        search encodes it once, on one shard, and sends the result to all. By default the text itself."""
        return query

    def search_partial(
        self, query: Any, k: int, statistics: Any = None, exclude: frozenset[str] = NO_EXCLUSION
    ) -> Partial:
        """This index's top ``k`` as one shard of a document-partitioned collection, for ``query`` as
        :meth:`encode_query` gave it, scored with the collection's summed ``statistics`` where the retriever has
        any, the ``exclude`` documents left out. By default the hits of :meth:`search`, whose scores compare across
        shards as they are."""
        return Partial.of_hits(self.search(query, k + len(exclude))).without(exclude)


@runtime_checkable
class Scorer(Retriever, Protocol):
    """A retriever that can also score given documents exactly: what a cascade stage rescoring a head needs."""

    def score(self, query: str, doc_ids: list[str]) -> np.ndarray:
        """Scores of ``doc_ids`` for ``query``, in the given order."""
        ...
