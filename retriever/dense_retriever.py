"""Exact dense retrieval: inner product of the query embedding with every stored document embedding.

Search runs on faiss's IndexFlatIP (exhaustive, exact), filled from the memory-mapped float16 store; this is
the float baseline that compressed indexes (binary codes, token pooling) are measured against.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from braid.indexer.embedding_index import EmbeddingStore, encoder_for
from braid.indexer.encoder_cache import cached_encoder
from braid.indexer.manifest import Manifest
from braid.retriever.hit import Hit, RankedList
from braid.retriever.protocol import NO_EXCLUSION, Partial, Retriever, excluded_rows
from braid.retriever.ties import id_ranks


class DenseRetriever(Retriever):
    def __init__(self, index_dir: Path, threads: int | None = None) -> None:
        manifest = Manifest.read(Path(index_dir))
        self.encoder = cached_encoder(encoder_for, manifest.params, role="query")  # one per process
        self.store = EmbeddingStore(Path(index_dir))
        faiss.omp_set_num_threads(threads or os.cpu_count() or 1)
        self._index = faiss.IndexFlatIP(self.store.dimension)
        self._index.add(np.asarray(self.store.matrix, dtype=np.float32))
        self._row = {doc_id: row for row, doc_id in enumerate(self.store.doc_ids)}
        self._bitmaps: dict[frozenset[str], tuple[np.ndarray, int]] = {}  # exclusion -> (allowed rows' bitmap, count)

    @cached_property
    def _id_rank(self) -> np.ndarray:
        return id_ranks(self.store.doc_ids)

    def _ranked(self, scores: np.ndarray, rows: np.ndarray) -> RankedList:
        scores, rows = scores[rows >= 0], rows[rows >= 0]
        if scores.size > 1 and (scores[1:] == scores[:-1]).any():
            # Exact ties (duplicate documents) go by id, not by faiss's row order: a sharded collection, whose rows
            # differ, then ranks them as one index does.
            order = np.lexsort((self._id_rank[rows], -scores))
            scores, rows = scores[order], rows[order]
        # Row numbers to ids through a C-level map over a plain list: per-hit Python cost more than faiss's search.
        return RankedList(list(map(self.store.doc_ids.__getitem__, rows.tolist())), scores.astype(np.float64))

    def _partial(self, scores: np.ndarray, rows: np.ndarray) -> Partial:
        ranked = self._ranked(scores, rows)
        return Partial(ranked.ids, ranked.scores)

    def search(self, query: str, k: int = 10) -> list[Hit]:
        return self.search_ranked(query, k).hits()

    def search_ranked(self, query: str, k: int = 10) -> RankedList:
        scores, rows = self._index.search(self.encoder.encode([query]), int(k))
        return self._ranked(scores[0], rows[0])

    def encode_query(self, query: str) -> np.ndarray:
        return self.encoder.encode([query])[0]

    def search_partial(
        self, query: np.ndarray, k: int, statistics: Any = None, exclude: frozenset[str] = NO_EXCLUSION
    ) -> Partial:
        vector = np.asarray(query, dtype=np.float32)[None, :]
        count = len(self.store.doc_ids)
        if not exclude:
            scores, rows = self._index.search(vector, min(int(k), count))
            return self._partial(scores[0], rows[0])
        # The excluded documents are left out inside faiss's scan (an ID selector over a bitmap of the rows that may
        # be returned), so the search stays k deep however many a filter leaves out.
        bitmap, allowed = self._bitmap(exclude)
        selector = faiss.IDSelectorBitmap(count, faiss.swig_ptr(bitmap))
        depth = min(int(k), allowed)
        if depth == 0:
            return Partial([], np.zeros(0, dtype=np.float64))
        scores, rows = self._index.search(vector, depth, params=faiss.SearchParameters(sel=selector))
        return self._partial(scores[0], rows[0])

    def _bitmap(self, exclude: frozenset[str]) -> tuple[np.ndarray, int]:
        """The rows that may be returned, as faiss's bitmap, and their count; the last few kept (a filter repeats)."""
        found = self._bitmaps.get(exclude)
        if found is None:
            allowed = np.ones(len(self.store.doc_ids), dtype=bool)
            allowed[excluded_rows(exclude, self._row)] = False
            found = (np.packbits(allowed, bitorder="little"), int(allowed.sum()))
            if len(self._bitmaps) >= 8:
                self._bitmaps.clear()
            self._bitmaps[exclude] = found
        return found

    def batch_search(self, queries: Mapping[str, str], k: int = 1000) -> dict[str, list[Hit]]:
        qids = list(queries)
        if not qids:
            return {}
        scores, rows = self._index.search(self.encoder.encode([queries[q] for q in qids]), int(k))
        return {qid: self._ranked(scores[i], rows[i]).hits() for i, qid in enumerate(qids)}

    def score(self, query: str, doc_ids: list[str]) -> np.ndarray:
        """Exact inner products of the query with the given documents (for cascades)."""
        rows = np.array([self._row[doc_id] for doc_id in doc_ids], dtype=np.int64)
        if rows.size == 0:
            return np.zeros(0, dtype=np.float32)
        return np.asarray(self.store.matrix[rows], dtype=np.float32) @ self.encoder.encode([query])[0]
