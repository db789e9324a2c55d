"""Late-interaction search over a pooled multi-vector index: exact MaxSim on candidates, or XTR scoring.

MaxSim (ColBERT): score(q, d) = sum over query tokens i of max over document tokens j of q_i . d_j. Candidates
come from the inverted file: each query token probes its ``nprobe`` nearest centroids; documents are ranked by
the centroid approximation of MaxSim (each probed token stands in for its centroid, as PLAID's centroid
interaction does; a query token none of whose probed lists holds one of the document's tokens counts with its
lowest probed centroid score) and the top ``candidates`` are scored exactly from the float16 tokens.

XTR (Lee et al., "Rethinking the Role of Token Retrieval in Multi-Vector Retrieval", NeurIPS 2023): each query
token retrieves its ``token_k`` most similar tokens (exact similarity, within the probed lists), and a document is
scored from those alone: for each query token, the best retrieved similarity among the document's tokens, or, when
none of its tokens was retrieved, the imputed value m_i = the lowest similarity that query token retrieved (an
upper bound on what was missed). No document's full token set is read.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from braid.common.errors import BraidError
from braid.indexer.manifest import Manifest
from braid.indexer.multivector_index import MultiVectorStore
from braid.indexer.token_index import encoder_for
from braid.retriever.fusion import ranked
from braid.retriever.hit import Hit
from braid.retriever.protocol import Retriever

MODES = ("maxsim", "xtr")


def maxsim(query: np.ndarray, tokens: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """MaxSim of one query (Q x D) against documents laid back to back in ``tokens`` with ``lengths``."""
    scores = np.zeros(len(lengths), dtype=np.float32)
    present = lengths > 0
    if not present.any():
        return scores
    similarities = query @ np.asarray(tokens, dtype=np.float32).T  # Q x tokens
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])[present]
    scores[present] = np.maximum.reduceat(similarities, starts, axis=1).sum(axis=0)
    return scores


class MultiVectorRetriever(Retriever):
    def __init__(
        self,
        index_dir: Path,
        mode: str = "maxsim",
        nprobe: int = 8,
        candidates: int = 512,
        token_k: int = 1000,
        threads: int | None = None,
    ) -> None:
        if mode not in MODES:
            raise BraidError(f"multivector mode must be one of {', '.join(MODES)}, got {mode!r}")
        if nprobe < 1 or candidates < 1 or token_k < 1:
            raise BraidError("multivector nprobe, candidates and token_k must be >= 1")
        self.index_dir = Path(index_dir)
        self.params = Manifest.read(self.index_dir).params
        self.store = MultiVectorStore(self.index_dir)
        self.encoder = encoder_for(self.params)
        self.mode, self.candidates, self.token_k = mode, candidates, token_k
        self.nprobe = min(nprobe, len(self.store.centroids))
        self.threads = threads or os.cpu_count() or 1
        self._row = {doc_id: row for row, doc_id in enumerate(self.store.doc_ids)}

    def _probe(self, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per query token: its centroid similarities and the ids of its ``nprobe`` nearest centroids."""
        centroid_scores = query @ self.store.centroids.T
        if self.nprobe >= centroid_scores.shape[1]:
            return centroid_scores, np.tile(np.arange(centroid_scores.shape[1]), (len(query), 1))
        return centroid_scores, np.argpartition(-centroid_scores, self.nprobe - 1, axis=1)[:, : self.nprobe]

    def _exact(self, query: np.ndarray, rows: np.ndarray) -> np.ndarray:
        offsets = self.store.offsets
        tokens = np.concatenate([self.store.matrix[offsets[r] : offsets[r + 1]] for r in rows])
        return maxsim(query, tokens, (offsets[rows + 1] - offsets[rows]))

    def _maxsim(self, query: np.ndarray, centroid_scores: np.ndarray, probed: np.ndarray, k: int):
        """Candidates by the centroid approximation, then exact MaxSim: (rows, scores)."""
        approx = np.full((len(query), len(self.store)), -np.inf, dtype=np.float32)
        for i, centroids in enumerate(probed):
            tokens = self.store.list_tokens(centroids)
            np.maximum.at(
                approx[i], self.store.token_doc[tokens], centroid_scores[i, self.store.token_centroid[tokens]]
            )
        reached = np.isfinite(approx).any(axis=0)
        # A document with no token in a query token's probed centroids has its best match in an unprobed one,
        # whose centroid score is at most the lowest probed score: impute that (not 0, which buries documents
        # whose few tokens, as after pooling, missed one probed list) -- XTR's imputation, for the bound.
        floor = np.take_along_axis(centroid_scores, probed, axis=1).min(axis=1)
        bound = np.where(np.isfinite(approx), approx, floor[:, None]).sum(axis=0)
        rows = np.flatnonzero(reached)
        rows = rows[np.argsort(-bound[rows], kind="stable")[: max(k, self.candidates)]]
        return rows, (self._exact(query, rows) if rows.size else np.zeros(0, dtype=np.float32))

    def _xtr(self, query: np.ndarray, probed: np.ndarray):
        """Scores from retrieved tokens alone, missing similarities imputed: (rows, scores)."""
        best = np.empty((len(query), len(self.store)), dtype=np.float32)
        reached = np.zeros(len(self.store), dtype=bool)
        for i, centroids in enumerate(probed):
            tokens = np.sort(self.store.list_tokens(centroids))  # ascending rows read the memory map in order
            if tokens.size == 0:
                best[i] = 0.0
                continue
            similarities = np.asarray(self.store.matrix[tokens], dtype=np.float32) @ query[i]
            if tokens.size > self.token_k:
                top = np.argpartition(-similarities, self.token_k - 1)[: self.token_k]
                tokens, similarities = tokens[top], similarities[top]
            best[i] = similarities.min()  # imputed m_i for documents this query token did not retrieve
            docs = self.store.token_doc[tokens]
            np.maximum.at(best[i], docs, similarities)
            reached[docs] = True
        rows = np.flatnonzero(reached)
        return rows, best[:, rows].sum(axis=0)

    def search_tokens(self, query: np.ndarray, k: int) -> list[Hit]:
        if len(query) == 0:
            return []
        centroid_scores, probed = self._probe(query)
        if self.mode == "maxsim":
            rows, scores = self._maxsim(query, centroid_scores, probed, k)
        else:
            rows, scores = self._xtr(query, probed)
        ids = [self.store.doc_ids[row] for row in rows]
        return [Hit(ids[position], score) for position, score in ranked(ids, scores.astype(np.float64), k)]

    def search(self, query: str, k: int = 10) -> list[Hit]:
        return self.search_tokens(self.encoder.encode_queries([query])[0], k)

    def batch_search(self, queries: Mapping[str, str], k: int = 1000) -> dict[str, list[Hit]]:
        qids = list(queries)
        encoded = self.encoder.encode_queries([queries[qid] for qid in qids])
        with ThreadPoolExecutor(max_workers=self.threads) as pool:
            results = list(pool.map(lambda tokens: self.search_tokens(tokens, k), encoded))
        return dict(zip(qids, results, strict=True))

    def score(self, query: str, doc_ids: list[str]) -> np.ndarray:
        """Exact MaxSim of the given documents (for cascades)."""
        rows = np.array([self._row[doc_id] for doc_id in doc_ids], dtype=np.int64)
        if rows.size == 0:
            return np.zeros(0, dtype=np.float32)
        return self._exact(self.encoder.encode_queries([query])[0], rows)
