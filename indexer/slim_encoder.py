"""SLIM token encoder: one sparse vocabulary vector per token.

SLIM (Li et al., "SLIM: Sparsified Late Interaction for Multi-Vector Retrieval with Inverted Indexes", SIGIR
2023) maps every contextualized token through the masked-LM head, applies log(1 + ReLU(logit)) and keeps the
top-k vocabulary terms of each token. A text becomes a sparse matrix (tokens x vocabulary); late interaction
then scores sum over query tokens of the max over document tokens of their sparse dot product.
Special tokens ([CLS], [SEP], padding) carry no text and are left out.

The vocabulary projection runs one text at a time on the batch's hidden states: the whole batch's logits (16 texts
of 256 tokens x 30,522 terms, 500 MB, and as much again for each activation) were the build's peak memory, where one
text's are 31 MB. The batch's transformer layers and the projection's weights are unchanged; a row's logits can round
differently by one unit in the last place when the matrix product is cut differently (a tiny test model), and on
SPLADE-tiny over 160 scifact abstracts every stored term and weight came out identical.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
import torch

from braid.common.errors import BraidError
from braid.common.model_source import offline_error, require_masked_lm, resolve_model


class SlimEncoder:
    def __init__(self, model: str, top_k_terms: int = 20, batch_size: int = 16, device: str = "cpu") -> None:
        from transformers import AutoModelForMaskedLM, AutoTokenizer

        if top_k_terms < 1:
            raise ValueError("top_k_terms must be >= 1")
        torch.set_num_threads(os.cpu_count() or 1)
        path = resolve_model(model)
        require_masked_lm(model, path)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModelForMaskedLM.from_pretrained(path).to(device).eval()
        except OSError as error:
            raise offline_error(model, error) from None
        self.top_k_terms = top_k_terms
        self.batch_size = batch_size
        self.device = device
        self.vocab_size = int(self.model.config.vocab_size)
        self.decoder = self._detach_projection()
        self.vocab = [token for token, _ in sorted(self.tokenizer.get_vocab().items(), key=lambda item: item[1])]

    def _detach_projection(self) -> torch.nn.Module:
        """Take the vocabulary projection out of the masked LM (which then returns the head's hidden states) and
        return it, to be applied a text at a time."""
        decoder = self.model.get_output_embeddings()
        name = next((name for name, module in self.model.named_modules() if module is decoder), "")
        if decoder is None or "." not in name:
            raise BraidError(f"{type(self.model).__name__} has no vocabulary projection inside its head")
        parent, attribute = name.rsplit(".", 1)
        setattr(self.model.get_submodule(parent), attribute, torch.nn.Identity())
        return decoder

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], max_length: int) -> list[sp.csr_matrix]:
        """One (tokens x vocabulary) float32 CSR matrix per text, top-k terms per token."""
        out: list[sp.csr_matrix] = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                list(texts[start : start + self.batch_size]),
                max_length=max_length,
                truncation=True,
                padding=True,
                return_tensors="pt",
                return_special_tokens_mask=True,
            )
            attention = batch["attention_mask"]
            keep = (attention > 0) & (batch["special_tokens_mask"] == 0)
            hidden = self.model(
                input_ids=batch["input_ids"].to(self.device), attention_mask=attention.to(self.device)
            ).logits
            for row in range(hidden.shape[0]):
                mask = keep[row]
                weights = torch.log1p_(torch.relu_(self.decoder(hidden[row][mask.to(self.device)])))
                values, indices = weights.topk(self.top_k_terms, dim=-1)
                vals = values.float().cpu().numpy()
                cols = indices.cpu().numpy().astype(np.int32)
                n_tokens = vals.shape[0]
                matrix = sp.csr_matrix(
                    (vals.ravel(), cols.ravel(), np.arange(0, (n_tokens + 1) * self.top_k_terms, self.top_k_terms)),
                    shape=(n_tokens, self.vocab_size),
                )
                matrix.eliminate_zeros()
                out.append(matrix)
        return out
