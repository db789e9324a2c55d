"""A live collection's small write segments of the Lucene kinds, held in memory and scored with Lucene's arithmetic.

Elasticsearch buffers written documents in memory and refreshes them into a Lucene segment; braid's writes are
visible as soon as they are logged, and building a Lucene index for every small write (an IndexWriter opened,
committed and closed, a reader opened) cost as much as encoding the document. So a write batch of the BM25 and
SPLADE kinds is a segment in memory: postings as arrays, scored exactly as Lucene scores the base index, and merged
into a Lucene segment with the next merge (:mod:`braid.pipelines.live_collection`).

- **BM25** (:class:`MemoryBM25Segment`): documents analyzed by the base index's own analyzer; each term scores
  Lucene's ``weight - weight / (1 + tf * cache[norm])`` with ``weight = count x idf`` and the length normalization
  read off the same one-byte length norms Lucene stores (:func:`length_norm`), in float32 as Lucene computes it,
  with the collection's summed statistics (:mod:`braid.retriever.segmented_retriever`).
- **SPLADE** (:class:`MemoryImpactSegment`): quantized impacts; a document scores the dot product of the integer
  query weights and impacts, as Anserini's ImpactSimilarity does (exact: integer sums far below 2^24).

Either returns every matching document of the segment (a write batch: few), best first, for the merge to cut.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from braid.retriever.bm25_retriever import BM25Retriever, lucene_idf
from braid.retriever.protocol import NO_EXCLUSION, Partial


def _int4(value: int) -> int:
    """Lucene's SmallFloat.longToInt4: 3 mantissa bits and an exponent (lossy above 8)."""
    bits = value.bit_length()
    if bits < 4:
        return value
    shift = bits - 4
    return ((value >> shift) & 0x07) | ((shift + 1) << 3)


def _int4_value(encoded: int) -> int:
    """Lucene's SmallFloat.int4ToLong."""
    bits, shift = encoded & 0x07, (encoded >> 3) - 1
    return bits if shift == -1 else (bits | 0x08) << shift


_FREE = 255 - _int4(2**31 - 1)  # SmallFloat's NUM_FREE_VALUES: lengths below it are stored exactly


def length_norm(length: int) -> int:
    """The byte (0-255) Lucene stores for a field of ``length`` terms (SmallFloat.intToByte4)."""
    return length if length < _FREE else _FREE + _int4(length - _FREE)


def norm_length(norm: int) -> int:
    """The length Lucene's BM25 reads back from a stored norm byte (SmallFloat.byte4ToInt)."""
    return norm if norm < _FREE else _FREE + _int4_value(norm - _FREE)


class _Postings:
    """term -> (rows, values): a tiny inverted index over one segment's documents, two flat arrays sorted by term."""

    def __init__(self, rows: Sequence[Mapping[str, float]]) -> None:
        terms = [term for weights in rows for term in weights]
        owners = np.repeat(np.arange(len(rows), dtype=np.int64), [len(weights) for weights in rows])
        values = np.fromiter((value for weights in rows for value in weights.values()), np.float32, len(terms))
        vocabulary, which = np.unique(np.asarray(terms, dtype=str), return_inverse=True)
        order = np.argsort(which, kind="stable")
        self._rows, self._values = owners[order], values[order]
        counts = np.bincount(which, minlength=len(vocabulary))
        ends = np.cumsum(counts)
        starts = ends - counts
        self._spans = {
            term: (int(start), int(end)) for term, start, end in zip(vocabulary.tolist(), starts, ends, strict=True)
        }

    def get(self, term: str) -> tuple[np.ndarray, np.ndarray] | None:
        span = self._spans.get(term)
        if span is None:
            return None
        return self._rows[span[0] : span[1]], self._values[span[0] : span[1]]


def _ranked(doc_ids: np.ndarray, scores: np.ndarray, matched: np.ndarray, exclude: frozenset[str]) -> Partial:
    rows = np.flatnonzero(matched)
    rows = rows[np.argsort(-scores[rows], kind="stable")]
    return Partial(doc_ids[rows].tolist(), scores[rows]).without(exclude)


class MemoryBM25Segment:
    """One write batch of a BM25 index, in memory (module docstring); ``base``: the collection's opened BM25 index,
    whose analyzer and k1, b it shares."""

    def __init__(self, base: BM25Retriever, doc_ids: Sequence[str], texts: Sequence[str]) -> None:
        self.k1, self.b = np.float32(base.k1), np.float32(base.b)
        self._base = base
        self._doc_ids = np.asarray(doc_ids, dtype=object)
        self._rows = {doc_id: row for row, doc_id in enumerate(doc_ids)}
        self._texts = dict(zip(doc_ids, texts, strict=True))
        counts = [Counter(base.analyze(text)) for text in texts]
        self._terms = [frozenset(count) for count in counts]
        self._lengths = np.array([sum(count.values()) for count in counts], dtype=np.int64)
        # The length BM25 normalizes by is the one Lucene's one-byte norm keeps.
        self._norm_lengths = np.array([norm_length(length_norm(int(n))) for n in self._lengths], dtype=np.float32)
        self._postings = _Postings(counts)

    @property
    def num_docs(self) -> int:
        return len(self._doc_ids)

    def encode_query(self, query: str) -> str:
        return query

    def query_statistics(self, query: str, k: int = 0, exclude: frozenset[str] = NO_EXCLUSION) -> dict:
        """This segment's document count, total length and query-term document frequencies, ``exclude``d documents
        subtracted (as :meth:`BM25Retriever.query_statistics`)."""
        terms = Counter(self._base.analyze(query))
        df = {term: len(found[0]) if (found := self._postings.get(term)) else 0 for term in terms}
        documents, length = len(self._doc_ids), int(self._lengths.sum())
        for doc_id in exclude:
            row = self._rows.get(doc_id)
            if row is None:
                continue
            documents -= 1
            length -= int(self._lengths[row])
            for term in terms:
                if term in self._terms[row]:
                    df[term] -= 1
        return {"documents": documents, "length": length, "df": df}

    def search_partial(
        self, query: str, k: int, statistics: dict | None = None, exclude: frozenset[str] = NO_EXCLUSION
    ) -> Partial:
        """Every matching document but the ``exclude``d, scored with the collection's ``statistics`` (this segment's
        own when None), best first."""
        if statistics is None:
            statistics = self.query_statistics(query)
        documents, length = int(statistics["documents"]), int(statistics["length"])
        scores = np.zeros(len(self._doc_ids), dtype=np.float64)
        matched = np.zeros(len(self._doc_ids), dtype=bool)
        if documents > 0 and length > 0:
            one = np.float32(1)
            avgdl = np.float32(length / documents)  # Lucene: (float) (sumTotalTermFreq / (double) docCount)
            inverse = one / (self.k1 * ((one - self.b) + self.b * self._norm_lengths / avgdl))
            for term, count in Counter(self._base.analyze(query)).items():
                found = self._postings.get(term)
                doc_freq = int(statistics["df"].get(term, 0))
                if found is None or doc_freq == 0:
                    continue
                rows, freqs = found
                weight = np.float32(count) * np.float32(lucene_idf(doc_freq, documents))
                scores[rows] += weight - weight / (one + freqs * inverse[rows])
                matched[rows] = True
        return _ranked(self._doc_ids, scores.astype(np.float32), matched, exclude)

    def document_text(self, doc_id: str) -> str | None:
        return self._texts.get(doc_id)


class MemoryImpactSegment:
    """One write batch of a SPLADE impact index, in memory (module docstring): ``vectors`` are the quantized
    document impacts."""

    def __init__(self, doc_ids: Sequence[str], vectors: Sequence[Mapping[str, int]]) -> None:
        self._doc_ids = np.asarray(doc_ids, dtype=object)
        self._postings = _Postings(vectors)

    @property
    def num_docs(self) -> int:
        return len(self._doc_ids)

    def query_statistics(self, query: Any, k: int = 0, exclude: frozenset[str] = NO_EXCLUSION) -> None:
        return None

    def search_partial(
        self, query: Mapping[str, int], k: int, statistics: Any = None, exclude: frozenset[str] = NO_EXCLUSION
    ) -> Partial:
        scores = np.zeros(len(self._doc_ids), dtype=np.float64)
        matched = np.zeros(len(self._doc_ids), dtype=bool)
        for term, weight in query.items():
            found = self._postings.get(term)
            if found is not None:
                rows, impacts = found
                scores[rows] += float(weight) * impacts.astype(np.float64)
                matched[rows] = True
        return _ranked(self._doc_ids, scores.astype(np.float32), matched, exclude)

    def document_text(self, doc_id: str) -> str | None:
        return None
