"""Registry of retriever kinds usable in pipelines: their parameters, index and constructor."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from braid.retriever.binary_retriever import BinaryRetriever
from braid.retriever.bm25_retriever import BM25Retriever
from braid.retriever.dense_retriever import DenseRetriever
from braid.retriever.multivector_retriever import MultiVectorRetriever
from braid.retriever.slim_retriever import SlimRetriever
from braid.retriever.splade_retriever import SpladeRetriever


@dataclass(frozen=True)
class Param:
    type: type
    default: Any
    doc: str


@dataclass(frozen=True)
class RetrieverKind:
    """A retriever kind: which index it needs, which of its parameters shape that index (build time)
    and which only the search (query time)."""

    name: str
    index_kind: str
    index_params: dict[str, Param]
    search_params: dict[str, Param]
    open: Callable[..., Any]
    # Whether the retriever can score given documents (``score(query, doc_ids)``), which cascades need.
    can_score: bool = False

    @property
    def params(self) -> dict[str, Param]:
        return {**self.index_params, **self.search_params}


# Build-time parameters shared by the encoders that read term weights off a masked-LM head (SPLADE, SLIM).
_MASKED_LM_PARAMS = {
    "model": Param(str, "splade-tiny", "masked-LM checkpoint: embedded name, local folder or hub name"),
    "query_max_length": Param(int, 64, "query tokens kept"),
    "doc_max_length": Param(int, 256, "document tokens kept"),
}

_DENSE_PARAMS = {
    "model": Param(str, "all-MiniLM-L6-v2", "sentence-transformers checkpoint: embedded name, folder or hub name"),
    "max_length": Param(int, 256, "tokens kept per text"),
}

RETRIEVER_KINDS: dict[str, RetrieverKind] = {
    "bm25": RetrieverKind(
        name="bm25",
        index_kind="bm25",
        index_params={
            "stemmer": Param(str, "porter", "Lucene stemmer: porter, krovetz or none"),
            "keep_stopwords": Param(bool, False, "index stopwords instead of dropping them"),
        },
        search_params={
            "k1": Param(float, 0.9, "BM25 term-frequency saturation"),
            "b": Param(float, 0.4, "BM25 length normalization"),
        },
        open=lambda index_dir, params, threads: BM25Retriever(index_dir, params["k1"], params["b"], threads),
    ),
    "splade": RetrieverKind(
        name="splade",
        index_kind="splade",
        index_params={**_MASKED_LM_PARAMS, "scale": Param(int, 100, "weights x scale, rounded, are the impacts")},
        search_params={},
        open=lambda index_dir, params, threads: SpladeRetriever(index_dir, threads),
    ),
    "slim": RetrieverKind(
        name="slim",
        index_kind="slim",
        index_params={
            **_MASKED_LM_PARAMS,
            "top_k_terms": Param(int, 20, "vocabulary terms kept per token"),
            "scale": Param(int, 100, "first-stage weights x scale, rounded, are the impacts"),
        },
        search_params={"candidates": Param(int, 1000, "first-stage candidates refined by late interaction")},
        open=lambda index_dir, params, threads: SlimRetriever(index_dir, params["candidates"], threads),
        can_score=True,
    ),
    "dense": RetrieverKind(
        name="dense",
        index_kind="embeddings",
        index_params=_DENSE_PARAMS,
        search_params={},
        open=lambda index_dir, params, threads: DenseRetriever(index_dir, threads),
        can_score=True,
    ),
    "binary": RetrieverKind(
        name="binary",
        index_kind="binary",
        index_params={
            **_DENSE_PARAMS,
            "method": Param(str, "recurrent", "recurrent (BEBR) or sign"),
            "bits": Param(int, 1, "bit planes per dimension, 1..4"),
            "width": Param(int, 0, "code width in bits per plane; 0 = embedding dimension"),
            "faiss": Param(str, "flat", "candidate index: flat, ivf or hnsw"),
            "candidate_planes": Param(int, 1, "leading bit planes the candidate index covers"),
            "nlist": Param(int, 0, "IVF lists; 0 = about 4 sqrt(n)"),
            "hnsw_m": Param(int, 32, "HNSW neighbours per node"),
            "epochs": Param(int, 20, "binarizer training epochs"),
            "seed": Param(int, 0, "training seed"),
        },
        search_params={
            "mode": Param(str, "symmetric", "code scoring: symmetric, asymmetric or hamming"),
            "candidates": Param(int, 1000, "candidates from the faiss binary index"),
            "rescore": Param(int, 100, "head rescored with float embeddings; 0 = none"),
            "nprobe": Param(int, 16, "IVF lists probed"),
            "ef_search": Param(int, 128, "HNSW search breadth"),
        },
        open=lambda index_dir, params, threads: BinaryRetriever(
            index_dir,
            params["mode"],
            params["candidates"],
            params["rescore"],
            params["nprobe"],
            params["ef_search"],
            threads,
        ),
    ),
    "multivector": RetrieverKind(
        name="multivector",
        index_kind="multivector",
        index_params={
            "model": Param(str, "all-MiniLM-L6-v2", "token encoder: ColBERT checkpoint or plain encoder"),
            "doc_max_length": Param(int, 256, "document tokens kept"),
            "query_max_length": Param(int, 32, "query tokens kept"),
            "pool_factor": Param(int, 1, "token pooling factor, 1..4"),
            "protected_tokens": Param(int, 1, "leading tokens never pooled ([CLS])"),
            "centroids": Param(int, 0, "k-means centroids; 0 = a power of two near 2 sqrt(tokens)"),
            "seed": Param(int, 0, "k-means seed"),
        },
        search_params={
            "mode": Param(str, "maxsim", "maxsim (exact on candidates) or xtr (retrieved tokens only)"),
            "nprobe": Param(int, 8, "centroids probed per query token"),
            "candidates": Param(int, 512, "documents scored exactly (maxsim)"),
            "token_k": Param(int, 1000, "tokens retrieved per query token (xtr)"),
        },
        open=lambda index_dir, params, threads: MultiVectorRetriever(
            index_dir, params["mode"], params["nprobe"], params["candidates"], params["token_k"], threads
        ),
        can_score=True,
    ),
}
