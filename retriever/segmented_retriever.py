"""One retriever over a live index: the base index plus the segments later writes added, deleted documents left out.

Lucene's own design (an index is a list of immutable segments, deletes are per-segment bitsets, searches run over
every segment and merge) with braid's indexes as the segments: each write batch is indexed as a small index of the
base's kind (:mod:`braid.indexer.segment_build`), and a document replaced or deleted is excluded from the segment
that held it. A query is answered as a document-partitioned search over the segments
(:mod:`braid.retriever.sharded_retriever`): encoded once, statistics combined where the kind has any (BM25's
document frequencies and lengths, which, as in Lucene, keep counting deleted documents until a merge; the
multi-vector and SLIM candidate cuts), each segment's list with its excluded documents left out inside its search
(:meth:`~braid.retriever.protocol.Retriever.search_partial`), and the lists merged. So a live index ranks as one
index of its live documents would, and exactly so for every kind whose scores depend on the document alone.

The segment list is one immutable tuple, replaced whole by a write (:meth:`SegmentedRetriever.publish`): a search
reads it once and never sees half a write.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from braid.common.errors import BraidError
from braid.retriever.hit import Hit, RankedList
from braid.retriever.protocol import NO_EXCLUSION, Retriever
from braid.retriever.sharded_retriever import MERGES, STATISTICS, UNENCODED, merge_scored

#: Kinds whose statistics describe the collection scored against (document frequencies, lengths), which deleted
#: documents leave and filtered-out ones do not.
LENGTH_STATISTICS = frozenset({"bm25"})


@dataclass(frozen=True)
class Segment:
    """An opened index and the documents of it that are no longer live (replaced or deleted since)."""

    retriever: Retriever
    ids: frozenset[str]
    dead: frozenset[str] = NO_EXCLUSION

    def holds(self, doc_id: str) -> bool:
        return doc_id in self.ids and doc_id not in self.dead


class SegmentedRetriever(Retriever):
    """A retriever kind over a base index and its write segments (module docstring)."""

    def __init__(self, kind: str, segments: Sequence[Segment], params: Mapping[str, Any] | None = None) -> None:
        if not segments:
            raise BraidError("a live index needs its base segment")
        self.kind = kind
        self.params = dict(params or {})
        self.segments: tuple[Segment, ...] = tuple(segments)
        # (filter's hidden set, segments) -> what each segment leaves out under it: the same set objects query after
        # query, so that retrievers' caches keyed by them (Lucene's NOT-id clause, faiss's bitmap) hit at once.
        self._excluded: dict[tuple[int, int], tuple[frozenset[str], tuple[Segment, ...], list[frozenset[str]]]] = {}

    def publish(self, segments: Sequence[Segment]) -> None:
        """Serve ``segments`` from the next search on (one reference swap)."""
        self.segments = tuple(segments)

    def _excluded_by(self, segments: tuple[Segment, ...], hidden: frozenset[str]) -> list[frozenset[str]]:
        """Each segment's documents left out of a search: its dead ones, and the live ones a filter hides."""
        if not hidden:
            return [segment.dead for segment in segments]
        key = (id(hidden), id(segments))
        found = self._excluded.get(key)
        if found is not None and found[0] is hidden and found[1] is segments:  # ids of live objects only
            return found[2]
        excluded = [segment.dead | (hidden & segment.ids) for segment in segments]
        if len(self._excluded) >= 16:
            self._excluded.clear()
        self._excluded[key] = (hidden, segments, excluded)
        return excluded

    @property
    def base(self) -> Retriever:
        return self.segments[0].retriever

    @property
    def doc_count(self) -> int:
        return sum(len(segment.ids) - len(segment.dead) for segment in self.segments)

    def search(self, query: str, k: int = 10, hidden: frozenset[str] = NO_EXCLUSION) -> list[Hit]:
        """The top ``k`` live documents; ``hidden``: live documents a filter leaves out, inside each segment's
        search (before its top k and candidate cuts), so that k hits come back whenever k documents match."""
        segments = self.segments
        if len(segments) == 1 and not segments[0].dead and not hidden:
            return segments[0].retriever.search(query, k)  # no writes yet: the base index as it is
        k = int(k)
        encoded = query if self.kind in UNENCODED else segments[0].retriever.encode_query(query)
        excluded = self._excluded_by(segments, hidden)
        statistics = None
        if self.kind in STATISTICS:
            # A filter narrows what is returned, not the collection BM25 scores against (as in Lucene and
            # Elasticsearch); candidate cuts (multi-vector, SLIM) are taken among the documents that may be returned.
            parts = [
                segment.retriever.query_statistics(encoded, k, segment.dead if self.kind in LENGTH_STATISTICS else out)
                for segment, out in zip(segments, excluded, strict=True)
            ]
            statistics = STATISTICS[self.kind](parts)
        partials = [
            segment.retriever.search_partial(encoded, k, statistics, out)
            for segment, out in zip(segments, excluded, strict=True)
        ]
        merge = MERGES.get(self.kind)
        return merge(partials, k, self.params) if merge else merge_scored(partials, k)

    def search_ranked(self, query: str, k: int = 10, hidden: frozenset[str] = NO_EXCLUSION) -> RankedList:
        segments = self.segments
        if len(segments) == 1 and not segments[0].dead and not hidden:
            return segments[0].retriever.search_ranked(query, k)
        return RankedList.of_hits(self.search(query, k, hidden))

    def batch_search(self, queries: Mapping[str, str], k: int = 1000) -> dict[str, list[Hit]]:
        segments = self.segments
        if len(segments) == 1 and not segments[0].dead:
            return segments[0].retriever.batch_search(queries, k)
        return {qid: self.search(query, k) for qid, query in queries.items()}

    def document_text(self, doc_id: str) -> str | None:
        for segment in reversed(self.segments):
            if segment.holds(doc_id):
                return segment.retriever.document_text(doc_id)
        return None

    def score(self, query: str, doc_ids: list[str]) -> np.ndarray:
        """Exact scores of live documents (a cascade stage), each from the segment that holds it."""
        segments = self.segments
        scores = np.zeros(len(doc_ids), dtype=np.float64)
        owners: dict[int, list[int]] = {}
        for position, doc_id in enumerate(doc_ids):
            owner = next((i for i in range(len(segments) - 1, -1, -1) if segments[i].holds(doc_id)), None)
            if owner is None:
                raise BraidError(f"document {doc_id!r} is not in the collection")
            owners.setdefault(owner, []).append(position)
        for owner, positions in owners.items():
            scorer = segments[owner].retriever
            found = scorer.score(query, [doc_ids[position] for position in positions])  # type: ignore[attr-defined]
            scores[positions] = np.asarray(found, dtype=np.float64)
        return scores
