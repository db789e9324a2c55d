"""Late-interaction search over a pooled multi-vector index: exact MaxSim on candidates, or XTR scoring.

MaxSim (ColBERT): score(q, d) = sum over query tokens i of max over document tokens j of q_i . d_j. Candidates
come from the inverted file: each query token probes its ``nprobe`` nearest centroids; documents are ranked by
the centroid approximation of MaxSim (each probed token stands in for its centroid, as PLAID's centroid
interaction does; a query token none of whose probed lists holds one of the document's tokens counts with its
lowest probed centroid score) and the top ``candidates`` are scored exactly from the float16 tokens. With
``prefilter`` (Santhanam et al., "PLAID", CIKM 2022), the top ``prefilter`` by that bound are first ranked by
centroid interaction over all their tokens (each token replaced by its centroid: a table lookup, not a product)
and only the best ``candidates`` of them are scored exactly: on scifact at pool factor 2, 1024 -> 256 kept
nDCG@10 (0.7068 vs 0.7057 exact on 512) at 43 ms instead of 59 ms a query.

XTR (Lee et al., "Rethinking the Role of Token Retrieval in Multi-Vector Retrieval", NeurIPS 2023): each query
token retrieves its ``token_k`` most similar tokens (exact similarity, within the probed lists), and a document is
scored from those alone: for each query token, the best retrieved similarity among the document's tokens, or, when
none of its tokens was retrieved, the imputed value m_i = the lowest similarity that query token retrieved (an
upper bound on what was missed). No document's full token set is read.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from braid.common.errors import BraidError
from braid.indexer.encoder_cache import cached_encoder
from braid.indexer.manifest import Manifest
from braid.indexer.multivector_index import MultiVectorStore
from braid.indexer.token_index import encoder_for
from braid.retriever.fusion import ranked
from braid.retriever.hit import Hit
from braid.retriever.protocol import NO_EXCLUSION, Partial, Retriever, excluded_rows

MODES = ("maxsim", "xtr")


#: Candidate tokens are gathered, widened from float16 and multiplied this many rows at a time, while they sit in
#: cache: one float32 copy of a scifact query's ~60,000 candidate tokens cost 4x the arithmetic (memory-bound).
BLOCK_TOKENS = 1024


def gather_positions(offsets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Token row numbers of documents ``rows`` back to back (document r holds rows ``offsets[r]:offsets[r + 1]``),
    where each document begins among them, and each document's token count: one gather, not a slice per document."""
    starts, lengths = offsets[rows], offsets[rows + 1] - offsets[rows]
    first = np.cumsum(lengths) - lengths
    return np.arange(int(lengths.sum())) + np.repeat(starts - first, lengths), first, lengths


def max_per_document(similarities: np.ndarray, first: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Sum over query tokens of each document's best similarity, from (query tokens x gathered tokens).

    That layout, not its transpose: ``reduceat`` over contiguous rows ran 10x faster than down columns.
    """
    scores = np.zeros(len(lengths), dtype=np.float32)
    present = lengths > 0
    if present.any():
        scores[present] = np.maximum.reduceat(similarities, first[present], axis=1).sum(axis=0)
    return scores


def maxsim(
    query: np.ndarray,
    tokens: torch.Tensor,
    offsets: np.ndarray,
    rows: np.ndarray,
    scales: torch.Tensor | None = None,
) -> np.ndarray:
    """MaxSim of one query (Q x D) against documents ``rows`` of ``tokens`` (float16 or float32, e.g. over a memory
    map, or int8 codes whose row r reads back as code x ``scales[r]``), whose document r holds the token rows
    ``offsets[r]:offsets[r + 1]``."""
    positions, first, lengths = gather_positions(offsets, rows)
    selected = torch.from_numpy(positions)
    transposed = torch.from_numpy(np.ascontiguousarray(query, dtype=np.float32)).T
    similarities = torch.empty(len(positions), len(query))
    for begin in range(0, len(positions), BLOCK_TOKENS):
        block = selected[begin : begin + BLOCK_TOKENS]
        out = similarities[begin : begin + BLOCK_TOKENS]
        torch.mm(torch.index_select(tokens, 0, block).float(), transposed, out=out)
        if scales is not None:  # (code x scale) . q = scale x (code . q): scale the products, not the rows
            out.mul_(torch.index_select(scales, 0, block)[:, None])
    return max_per_document(similarities.T.contiguous().numpy(), first, lengths)


class MultiVectorRetriever(Retriever):
    def __init__(
        self,
        index_dir: Path,
        mode: str = "maxsim",
        nprobe: int = 8,
        candidates: int = 512,
        token_k: int = 1000,
        prefilter: int = 0,
        threads: int | None = None,
    ) -> None:
        if mode not in MODES:
            raise BraidError(f"multivector mode must be one of {', '.join(MODES)}, got {mode!r}")
        if nprobe < 1 or candidates < 1 or token_k < 1:
            raise BraidError(
                f"multivector nprobe, candidates and token_k must be >= 1, got {nprobe}, {candidates} and {token_k}"
            )
        if prefilter < 0:
            raise BraidError(f"multivector prefilter must be >= 0 (0 = none), got {prefilter}")
        self.index_dir = Path(index_dir)
        self.params = Manifest.read(self.index_dir).params
        self.store = MultiVectorStore(self.index_dir)
        self.encoder = cached_encoder(encoder_for, self.params, role="query")  # one per process
        self.mode, self.candidates, self.token_k, self.prefilter = mode, candidates, token_k, prefilter
        self.nprobe = min(nprobe, len(self.store.centroids))
        self.threads = threads or os.cpu_count() or 1
        self._row = {doc_id: row for row, doc_id in enumerate(self.store.doc_ids)}
        self._centroids = torch.from_numpy(self.store.centroids)
        with warnings.catch_warnings():
            # The memory map is read-only, which torch warns about; the tensor is only ever read.
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            self._tokens = torch.from_numpy(self.store.matrix)
        self._scales = None if self.store.scales is None else torch.from_numpy(self.store.scales)

    def _probe(self, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per query token: its centroid similarities and the ids of its ``nprobe`` nearest centroids."""
        # torch, as MaxSim's blocks are: numpy's BLAS threads spin after a call and slowed the torch matmuls that
        # followed by 2-3x on 2 cores.
        centroid_scores = (torch.from_numpy(np.asarray(query, dtype=np.float32)) @ self._centroids.T).numpy()
        if self.nprobe >= centroid_scores.shape[1]:
            return centroid_scores, np.tile(np.arange(centroid_scores.shape[1]), (len(query), 1))
        return centroid_scores, np.argpartition(-centroid_scores, self.nprobe - 1, axis=1)[:, : self.nprobe]

    def _exact(self, query: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return maxsim(query, self._tokens, self.store.offsets, rows, self._scales)

    def _alive(self, exclude: frozenset[str]) -> np.ndarray | None:
        """Which rows a search may return: all (None) but the ``exclude``d documents."""
        if not exclude:
            return None
        alive = np.ones(len(self.store), dtype=bool)
        alive[excluded_rows(exclude, self._row)] = False
        return alive

    def _bound(
        self, centroid_scores: np.ndarray, probed: np.ndarray, alive: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rows reached by the probed lists (and ``alive``) and their centroid bound on MaxSim."""
        # A document with no token in a query token's probed centroids has its best match in an unprobed one,
        # whose centroid score is at most the lowest probed score: impute that (not 0, which buries documents
        # whose few tokens, as after pooling, missed one probed list) -- XTR's imputation, for the bound. Every
        # probed score is at least that floor, so the bound starts from it.
        floor = np.take_along_axis(centroid_scores, probed, axis=1).min(axis=1)
        documents = len(self.store)
        bound = np.repeat(floor[:, None], documents, axis=1)
        # All query tokens' probed lists in one pass: (query token, document) cells and the list's centroid score.
        lists = probed.ravel()
        positions, _, lengths = gather_positions(self.store.ivf_offsets, lists)
        docs = self.store.token_doc[self.store.ivf_tokens[positions]]
        query_token = np.repeat(np.repeat(np.arange(len(centroid_scores)), probed.shape[1]), lengths)
        list_score = np.repeat(
            centroid_scores[np.repeat(np.arange(len(centroid_scores)), probed.shape[1]), lists], lengths
        )
        np.maximum.at(bound.ravel(), query_token * documents + docs, list_score)
        reached = np.zeros(documents, dtype=bool)
        reached[docs] = True
        if alive is not None:
            reached &= alive
        rows = np.flatnonzero(reached)
        return rows, bound.sum(axis=0)[rows]

    def _approximate(self, centroid_scores: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """PLAID's centroid interaction: MaxSim with every token of the document standing in for its centroid (a
        table lookup per token, not a 384-dimensional product), to pick the few documents scored exactly."""
        positions, first, lengths = gather_positions(self.store.offsets, rows)
        lookup = np.take(centroid_scores, self.store.token_centroid[positions], axis=1)
        return max_per_document(lookup, first, lengths)

    def _cuts(self, k: int) -> tuple[int, int]:
        """(documents scored exactly, documents kept by the bound): the two candidate cuts."""
        exact = max(k, self.candidates)
        return exact, max(exact, self.prefilter)

    def _maxsim(
        self, query: np.ndarray, centroid_scores: np.ndarray, probed: np.ndarray, k: int, cuts=None, alive=None
    ):
        """Candidates by the centroid approximation, then exact MaxSim: (rows, scores).

        ``cuts``: a sharded search's collection-wide thresholds (:meth:`query_statistics`): every document whose
        bound, and then whose centroid interaction, reaches the collection's cut is a candidate, so the shards
        together score exactly the unsharded index's candidates.
        """
        rows, bound = self._bound(centroid_scores, probed, alive)
        exact, keep = self._cuts(k)
        if cuts is not None:
            rows, bound = rows[bound >= cuts["bound_min"]], None
            if cuts["approximate_min"] is not None and rows.size:
                rows = rows[self._approximate(centroid_scores, rows) >= cuts["approximate_min"]]
        else:
            rows = rows[np.argsort(-bound, kind="stable")[:keep]]
            if len(rows) > exact:
                rows = rows[np.argsort(-self._approximate(centroid_scores, rows), kind="stable")[:exact]]
        return rows, (self._exact(query, rows) if rows.size else np.zeros(0, dtype=np.float32))

    def query_statistics(self, query: np.ndarray, k: int, exclude: frozenset[str] = NO_EXCLUSION) -> dict | None:
        """This shard's candidate scores for the collection's cuts: its best bounds (as many as the unsharded
        index keeps) and, where a centroid-interaction stage follows, those documents' approximate scores."""
        if self.mode != "maxsim" or len(query) == 0:
            return None
        centroid_scores, probed = self._probe(query)
        rows, bound = self._bound(centroid_scores, probed, self._alive(exclude))
        exact, keep = self._cuts(k)
        order = np.argsort(-bound, kind="stable")[:keep]
        approximate = self._approximate(centroid_scores, rows[order]) if keep > exact and order.size else None
        return {"bound": bound[order], "approximate": approximate, "exact": exact, "keep": keep}

    def _xtr(self, query: np.ndarray, probed: np.ndarray, alive: np.ndarray | None = None):
        """Scores from retrieved tokens alone, missing similarities imputed: (rows, scores)."""
        best = np.empty((len(query), len(self.store)), dtype=np.float32)
        reached = np.zeros(len(self.store), dtype=bool)
        for i, centroids in enumerate(probed):
            tokens = np.sort(self.store.list_tokens(centroids))  # ascending rows read the memory map in order
            if tokens.size == 0:
                best[i] = 0.0
                continue
            similarities = np.asarray(self.store.matrix[tokens], dtype=np.float32) @ query[i]
            if self.store.scales is not None:
                similarities *= self.store.scales[tokens]
            if tokens.size > self.token_k:
                top = np.argpartition(-similarities, self.token_k - 1)[: self.token_k]
                tokens, similarities = tokens[top], similarities[top]
            best[i] = similarities.min()  # imputed m_i for documents this query token did not retrieve
            docs = self.store.token_doc[tokens]
            np.maximum.at(best[i], docs, similarities)
            reached[docs] = True
        if alive is not None:
            reached &= alive
        rows = np.flatnonzero(reached)
        return rows, best[:, rows].sum(axis=0)

    def search_tokens(
        self, query: np.ndarray, k: int, cuts: dict | None = None, exclude: frozenset[str] = NO_EXCLUSION
    ) -> list[Hit]:
        if len(query) == 0:
            return []
        centroid_scores, probed = self._probe(query)
        alive = self._alive(exclude)
        if self.mode == "maxsim":
            rows, scores = self._maxsim(query, centroid_scores, probed, k, cuts, alive)
        else:
            rows, scores = self._xtr(query, probed, alive)
        ids = [self.store.doc_ids[row] for row in rows]
        return [Hit(ids[position], score) for position, score in ranked(ids, scores.astype(np.float64), k)]

    def search(self, query: str, k: int = 10) -> list[Hit]:
        return self.search_tokens(self.encoder.encode_queries([query])[0], k)

    def encode_query(self, query: str) -> np.ndarray:
        return self.encoder.encode_queries([query])[0]

    def search_partial(
        self, query: np.ndarray, k: int, statistics: Any = None, exclude: frozenset[str] = NO_EXCLUSION
    ) -> Partial:
        return Partial.of_hits(self.search_tokens(query, k, statistics, exclude))

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
