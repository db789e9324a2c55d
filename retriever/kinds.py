"""Retriever kinds usable in pipelines: the index kind each searches, its retriever class, and its search-time
parameters. Build-time parameters are the index kind's own (:class:`~braid.indexer.index_kind.IndexKind`): a
pipeline and ``braid index build`` read the same defaults, so they name the same index folder."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from braid.indexer import binary_index, bm25_index, embedding_index, multivector_index, slim_index, splade_index
from braid.indexer.index_kind import IndexKind, Param
from braid.retriever.binary_retriever import BinaryRetriever
from braid.retriever.bm25_retriever import BM25Retriever
from braid.retriever.dense_retriever import DenseRetriever
from braid.retriever.multivector_retriever import MultiVectorRetriever
from braid.retriever.protocol import Retriever, Scorer
from braid.retriever.slim_retriever import SlimRetriever
from braid.retriever.splade_retriever import SpladeRetriever


@dataclass(frozen=True)
class RetrieverKind:
    """A retriever kind: the index it searches and its class, opened as ``retriever(index_dir, threads=, **search)``
    with the search parameters as keyword arguments.

    ``unmatched_score``: the score every document that does not match the query gets, for retrievers that have one
    and leave those documents out of their lists (sparse term matching: 0); None where every document scores on its
    own. Fusion reads it to tell a list that ran out of matches from one cut at its depth
    (:class:`braid.retriever.fusion.ListShape`). ``encodes_queries``: a model encodes each query (all but BM25);
    a pipeline shares the cores among the encodings that run at once (:mod:`braid.indexer.encoding_threads`)."""

    name: str
    index: IndexKind
    retriever: type[Retriever]
    search_params: Mapping[str, Param] = field(default_factory=dict)
    unmatched_score: float | None = None
    encodes_queries: bool = True

    @property
    def index_params(self) -> Mapping[str, Param]:
        return self.index.params

    @property
    def params(self) -> dict[str, Param]:
        return {**self.index_params, **self.search_params}

    @property
    def can_score(self) -> bool:
        """Whether it scores given documents (``score(query, doc_ids)``), which cascade stages need."""
        return issubclass(self.retriever, Scorer)

    def open(self, index_dir: Path, search_params: Mapping[str, Any], threads: int | None = None) -> Retriever:
        return self.retriever(index_dir, threads=threads, **search_params)


RETRIEVER_KINDS: dict[str, RetrieverKind] = {
    kind.name: kind
    for kind in (
        RetrieverKind(
            "bm25",
            bm25_index.KIND,
            BM25Retriever,
            {"k1": Param(0.9, "BM25 term-frequency saturation"), "b": Param(0.4, "BM25 length normalization")},
            unmatched_score=0.0,
            encodes_queries=False,
        ),
        RetrieverKind("splade", splade_index.KIND, SpladeRetriever, unmatched_score=0.0),
        RetrieverKind(
            "slim",
            slim_index.KIND,
            SlimRetriever,
            {"candidates": Param(1000, "first-stage candidates refined by late interaction")},
        ),
        RetrieverKind("dense", embedding_index.KIND, DenseRetriever),
        RetrieverKind(
            "binary",
            binary_index.KIND,
            BinaryRetriever,
            {
                "mode": Param("symmetric", "code scoring: symmetric, asymmetric or hamming"),
                "candidates": Param(1000, "candidates from the faiss binary index"),
                "rescore": Param(100, "head rescored with float embeddings; 0 = none"),
                "nprobe": Param(16, "IVF lists probed"),
                "ef_search": Param(128, "HNSW search breadth"),
            },
        ),
        RetrieverKind(
            "multivector",
            multivector_index.KIND,
            MultiVectorRetriever,
            {
                "mode": Param("maxsim", "maxsim (exact on candidates) or xtr (retrieved tokens only)"),
                "nprobe": Param(8, "centroids probed per query token"),
                "candidates": Param(512, "documents scored exactly (maxsim)"),
                "token_k": Param(1000, "tokens retrieved per query token (xtr)"),
                "prefilter": Param(0, "documents ranked by centroid interaction before exact MaxSim (0: none)"),
            },
        ),
    )
}
