"""SLIM search: candidates from the pooled-vector impact index, then exact sparsified late interaction.

Refinement scores each candidate d as sum over query tokens i of max over document tokens j of q_i . d_j, from
the memory-mapped token CSR arrays (Li et al., SIGIR 2023). The first stage's bound guarantees that every
document it ranks above the cut-off could score at least as high; ``candidates`` sets how many are refined.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from braid.common.errors import BraidError
from braid.indexer.encoder_cache import cached_encoder
from braid.indexer.manifest import Manifest
from braid.indexer.slim_index import TOKEN_ARRAYS, TOKENS_DIR, encoder_for, pooled_terms
from braid.indexer.splade_encoder import quantize
from braid.indexer.splade_index import IMPACT_DIR
from braid.retriever.hit import Hit
from braid.retriever.impact_search import ImpactSearcher
from braid.retriever.protocol import NO_EXCLUSION, Partial, Retriever
from braid.retriever.ties import id_ranks


def _map(path: Path, dtype: type) -> np.ndarray:
    # mmap refuses empty files, which a corpus of empty documents legitimately produces.
    return np.memmap(path, dtype=dtype, mode="r") if path.stat().st_size else np.zeros(0, dtype=dtype)


class SlimRetriever(Retriever):
    """Sparsified late interaction over a braid SLIM index."""

    def __init__(self, index_dir: Path, candidates: int = 1000, threads: int | None = None) -> None:
        if candidates < 1:
            raise BraidError(f"slim candidates must be >= 1, got {candidates}")
        self.index_dir = Path(index_dir)
        manifest = Manifest.read(self.index_dir)
        self.params = manifest.params
        self.candidates = candidates
        self.threads = threads or os.cpu_count() or 1
        self.encoder = cached_encoder(encoder_for, self.params, role="query")  # one per process
        self._impact = ImpactSearcher(self.index_dir / IMPACT_DIR, manifest.doc_count)
        tokens = self.index_dir / TOKENS_DIR
        self._meta = json.loads((tokens / "meta.json").read_text(encoding="utf-8"))
        self._arrays = {name: _map(tokens / f"{name}.bin", dtype) for name, dtype in TOKEN_ARRAYS.items()}
        doc_ids = (tokens / "doc_ids.txt").read_text(encoding="utf-8").split("\n")[: manifest.doc_count]
        self._position = {doc_id: number for number, doc_id in enumerate(doc_ids)}
        self._id_rank = id_ranks(doc_ids)

    def query_matrix(self, query: str) -> sp.csr_matrix:
        return self.encoder.encode([query], self.params["query_max_length"])[0]

    def first_stage_vector(self, matrix: sp.csr_matrix) -> dict[str, int]:
        return quantize(pooled_terms(matrix, self.encoder.vocab, "sum"), self.params["scale"])

    def document_tokens(self, doc_ids: list[str]) -> tuple[sp.csr_matrix, np.ndarray]:
        """Stack the token rows of ``doc_ids``; also return each document's number of rows."""
        offsets, indptr = self._arrays["doc_offsets"], self._arrays["indptr"]
        positions = np.array([self._position[doc_id] for doc_id in doc_ids], dtype=np.int64)
        row_starts, row_ends = offsets[positions], offsets[positions + 1]
        pieces_ptr, pieces_idx, pieces_val, base = [np.zeros(1, dtype=np.int64)], [], [], 0
        for start, end in zip(row_starts, row_ends, strict=True):
            first, last = indptr[start], indptr[end]
            pieces_ptr.append(indptr[start + 1 : end + 1] - first + base)
            pieces_idx.append(self._arrays["indices"][first:last])
            pieces_val.append(self._arrays["values"][first:last])
            base += last - first
        matrix = sp.csr_matrix(
            (
                np.concatenate(pieces_val).astype(np.float32) if pieces_val else np.zeros(0, np.float32),
                np.concatenate(pieces_idx) if pieces_idx else np.zeros(0, np.int32),
                np.concatenate(pieces_ptr),
            ),
            shape=(int((row_ends - row_starts).sum()), self._meta["vocab_size"]),
        )
        return matrix, (row_ends - row_starts)

    def late_interaction(self, query: sp.csr_matrix, doc_ids: list[str]) -> np.ndarray:
        """Exact SLIM scores of ``doc_ids`` for a query token matrix."""
        if not doc_ids or query.shape[0] == 0:
            return np.zeros(len(doc_ids), dtype=np.float32)
        documents, lengths = self.document_tokens(doc_ids)
        similarities = (query @ documents.T).toarray()  # query tokens x document tokens
        scores = np.zeros(len(doc_ids), dtype=np.float32)
        present = lengths > 0
        if present.any():
            starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])[present]
            scores[present] = np.maximum.reduceat(similarities, starts, axis=1).sum(axis=0)
        return scores

    def search_matrix(self, query: sp.csr_matrix, k: int) -> list[Hit]:
        candidates = self._impact.search_ranked(self.first_stage_vector(query), max(k, self.candidates))
        return self._refine(query, candidates.ids, k)

    def _refine(self, query: sp.csr_matrix, doc_ids: list[str], k: int) -> list[Hit]:
        """The top ``k`` of ``doc_ids`` by exact late interaction."""
        scores = self.late_interaction(query, doc_ids)
        # Exact ties (duplicate documents) go by id, as everywhere in braid, not by candidate order, so that a
        # sharded collection ranks them as one index does.
        id_rank = self._id_rank[[self._position[doc_id] for doc_id in doc_ids]]
        order = np.lexsort((id_rank, -scores))[:k]
        return [Hit(doc_ids[i], float(scores[i])) for i in order if scores[i] > 0]

    def score(self, query: str, doc_ids: list[str]) -> np.ndarray:
        """Exact SLIM scores of the given documents (for cascades)."""
        return self.late_interaction(self.query_matrix(query), doc_ids)

    def search(self, query: str, k: int = 10) -> list[Hit]:
        return self.search_matrix(self.query_matrix(query), k)

    def encode_query(self, query: str) -> sp.csr_matrix:
        return self.query_matrix(query)

    def _first_stage(self, query: sp.csr_matrix, depth: int, exclude: frozenset[str]) -> Partial:
        """First-stage candidates (every one tied at ``depth`` included), the ``exclude``d ones left out."""
        return self._impact.search_raw(self.first_stage_vector(query), depth, exclude)

    def query_statistics(self, query: sp.csr_matrix, k: int, exclude: frozenset[str] = NO_EXCLUSION) -> dict:
        """This shard's best first-stage scores, as many as the unsharded index refines: the broker finds the
        collection's cut-off among them (:func:`~braid.retriever.sharded_retriever.first_stage_cut`)."""
        depth = max(k, self.candidates)
        scores = np.asarray(self._first_stage(query, depth, exclude).scores)
        return {"scores": np.sort(scores)[::-1][:depth], "depth": depth}

    def search_partial(
        self, query: sp.csr_matrix, k: int, statistics: Any = None, exclude: frozenset[str] = NO_EXCLUSION
    ) -> Partial:
        depth = max(k, self.candidates)
        if statistics is None:
            # This index's own first ``depth`` candidates, as search_matrix takes them, the excluded left out.
            vector = self.first_stage_vector(query)
            found = self._impact.search_ranked(vector, depth + len(exclude))
            hits = self._refine(query, [doc_id for doc_id in found.ids if doc_id not in exclude][:depth], k)
        else:
            # Refine exactly this shard's documents among the collection's first-stage candidates.
            first = self._first_stage(query, depth, exclude)
            keep = (np.asarray(first.scores) >= statistics["min"]).tolist()
            hits = self._refine(query, [doc_id for doc_id, kept in zip(first.ids, keep, strict=True) if kept], k)
        return Partial.of_hits(hits)

    def batch_search(self, queries: Mapping[str, str], k: int = 1000) -> dict[str, list[Hit]]:
        qids = list(queries)
        matrices = self.encoder.encode([queries[qid] for qid in qids], self.params["query_max_length"])
        with ThreadPoolExecutor(max_workers=self.threads) as pool:
            results = list(pool.map(lambda matrix: self.search_matrix(matrix, k), matrices))
        return dict(zip(qids, results, strict=True))
