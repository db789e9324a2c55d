"""Binary retrieval: code the query with the index's binarizer, take candidates from the faiss binary index,
score them from codes (symmetric popcounts, asymmetric float-vs-reconstruction, or plain Hamming), and rescore
the head with the stored float embeddings (BEBR's last step, which restores most of the float quality).

Hits past the rescoring depth keep their code order and get scores below every rescored hit, so a run sorted
by score keeps the intended ranking.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from braid.common.errors import BraidError
from braid.indexer.binary_codes import asymmetric_scores, hamming_scores, symmetric_scores
from braid.indexer.binary_index import load_coder, load_codes
from braid.indexer.embedding_index import EmbeddingStore, encoder_for
from braid.indexer.encoder_cache import cached_encoder
from braid.indexer.manifest import Manifest
from braid.retriever.hit import Hit
from braid.retriever.protocol import NO_EXCLUSION, Partial, Retriever, excluded_rows
from braid.retriever.ties import break_ties, id_ranks

MODES = ("symmetric", "asymmetric", "hamming")


class BinaryRetriever(Retriever):
    def __init__(
        self,
        index_dir: Path,
        mode: str = "symmetric",
        candidates: int = 1000,
        rescore: int = 100,
        nprobe: int = 16,
        ef_search: int = 128,
        threads: int | None = None,
    ) -> None:
        if mode not in MODES:
            raise BraidError(f"binary mode must be one of {', '.join(MODES)}, got {mode!r}")
        if candidates < 1 or rescore < 0 or nprobe < 1 or ef_search < 1:
            raise BraidError("binary candidates, nprobe and ef_search must be >= 1 and rescore >= 0")
        self.index_dir = Path(index_dir)
        manifest = Manifest.read(self.index_dir)
        embeddings_dir = manifest.dependency(self.index_dir, "embeddings")
        embeddings = Manifest.read(embeddings_dir)
        if (
            embeddings.corpus_checksum != manifest.corpus_checksum
            or embeddings.params.get("model") != manifest.params["model"]
        ):
            raise BraidError(f"{embeddings_dir} is not the embeddings index {self.index_dir} was built from")
        self.params = manifest.params
        self.mode, self.candidates, self.rescore = mode, candidates, rescore
        self.store = EmbeddingStore(embeddings_dir)
        self.encoder = cached_encoder(encoder_for, embeddings.params, role="query")  # one per process
        self.coder = load_coder(self.index_dir, self.params, self.store.dimension)
        self.codes, meta = load_codes(self.index_dir)
        self.width, self.scales = meta["width"], np.asarray(meta["scales"], dtype=np.float64)
        self._faiss = faiss.read_index_binary(str(self.index_dir / "faiss.index"))
        self._id_rank = id_ranks(self.store.doc_ids)
        self._row_of = {doc_id: row for row, doc_id in enumerate(self.store.doc_ids)}
        if self.params["faiss"] == "ivf":
            self._faiss.nprobe = nprobe
        elif self.params["faiss"] == "hnsw":
            self._faiss.hnsw.efSearch = ef_search
        if threads:
            faiss.omp_set_num_threads(threads)

    @property
    def bytes_per_document(self) -> int:
        return int(self.codes.shape[1] * self.codes.shape[2])

    def search_embedding(self, embedding: np.ndarray, k: int = 10) -> list[Hit]:
        rows, scores, head = self._ranked(embedding, k)
        return rescored_hits([self.store.doc_ids[row] for row in rows.tolist()], scores, head)

    def encode_query(self, query: str) -> np.ndarray:
        return self.encoder.encode([query])[0]

    def search_partial(
        self, query: np.ndarray, k: int, statistics: Any = None, exclude: frozenset[str] = NO_EXCLUSION
    ) -> Partial:
        # Code scores and float rescoring scores both compare across shards; the merge redoes the head's choice.
        rows, scores, head = self._ranked(query, k, exclude)
        return Partial([self.store.doc_ids[row] for row in rows.tolist()], scores, head)

    def _ranked(
        self, embedding: np.ndarray, k: int, exclude: frozenset[str] = NO_EXCLUSION
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows and code scores of the top ``k`` by code score, and the float scores of the first ``rescore`` of
        them (NaN past the rescored head); ``exclude``d documents are left out of the candidates."""
        embedding = np.asarray(embedding, dtype=np.float32)
        if embedding.ndim != 1 or embedding.shape[0] != self.store.dimension:
            raise BraidError(
                f"query embedding has shape {embedding.shape}; this index expects ({self.store.dimension},)"
            )
        query_codes, projection = self.coder.encode(embedding[None, :])
        gone = excluded_rows(exclude, self._row_of) if exclude else np.zeros(0, dtype=np.int64)
        depth = min(max(k, self.candidates), len(self.codes) - len(gone))
        if depth <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0)
        leading = query_codes[:, : self.params["candidate_planes"]]
        # Deeper by the excluded documents, which are then dropped: the candidates of an index without them.
        _, rows = self._faiss.search(np.ascontiguousarray(leading.reshape(1, -1)), depth + len(gone))
        rows = rows[0][rows[0] >= 0]
        if len(gone):
            rows = rows[~np.isin(rows, gone)][:depth]
        candidate_codes = self.codes[rows]
        if self.mode == "symmetric":
            scores = symmetric_scores(query_codes[0], candidate_codes, self.scales, self.width)
        elif self.mode == "asymmetric":
            scores = asymmetric_scores(projection[0], candidate_codes, self.scales, self.width)
        else:
            scores = hamming_scores(query_codes[0], candidate_codes)
        # Equal code scores (frequent: they are sums of popcounts) go by document id, not by faiss's row order, so
        # that the head chosen for rescoring is the same however the collection is sharded.
        order = np.lexsort((self._id_rank[rows], -scores))[:k]
        rows, scores = rows[order], np.asarray(scores[order], dtype=np.float64)
        head = np.full(len(rows), np.nan)
        count = min(self.rescore, len(rows))
        if count:
            ascending = np.sort(rows[:count])  # the memory map is read in order
            exact = np.asarray(self.store.matrix[ascending], dtype=np.float32) @ embedding
            head[:count] = exact[np.searchsorted(ascending, rows[:count])]
        return rows, scores, head

    def search(self, query: str, k: int = 10) -> list[Hit]:
        return self.search_embedding(self.encoder.encode([query])[0], k)

    def batch_search(self, queries: Mapping[str, str], k: int = 1000) -> dict[str, list[Hit]]:
        qids = list(queries)
        embeddings = self.encoder.encode([queries[qid] for qid in qids]) if qids else []
        return {qid: self.search_embedding(embedding, k) for qid, embedding in zip(qids, embeddings, strict=True)}


def rescored_hits(ids: list[str], scores: np.ndarray, head: np.ndarray) -> list[Hit]:
    """Hits from candidates in code-score order: the rescored head (finite ``head``) by its float score, then the
    rest in code order with scores below every rescored hit, so that a run sorted by score keeps the ranking."""
    rescored = np.flatnonzero(np.isfinite(head))
    if rescored.size:
        exact = head[rescored]
        order = rescored[np.argsort(-exact, kind="stable")]
        floor = float(exact.min())
        hits = [Hit(ids[row], float(head[row])) for row in order.tolist()]
        tail = np.flatnonzero(~np.isfinite(head)).tolist()
        hits += [Hit(ids[row], floor - 1.0 - i) for i, row in enumerate(tail)]
        return break_ties(hits)
    # Code scores tie often (they are sums of popcounts); distinct scores keep the order through evaluation.
    return break_ties([Hit(doc_id, float(score)) for doc_id, score in zip(ids, scores.tolist(), strict=True)])
