"""SPLADE's max pooling taken right after the vocabulary projection, a few token rows at a time.

SPLADE v2 (Formal et al., 2021) weighs vocabulary term j as max_t log(1 + ReLU(logit_tj)) over the text's tokens t.
log(1 + ReLU(x)) never decreases in x, so the max can be taken over the raw logits first and the activation applied
once per term: max_t log1p(relu(x_t)) == log1p(relu(max_t x_t)), exactly, in floating point too (both sides pick
the same float and map it through the same function; projecting a few rows at a time rounds the logits like any
other matrix blocking, ~1e-7). Taken a few token rows at a time while their logits are still in cache, the
(texts x tokens x 30522) logit tensor, about 1 GB for 32 documents of 256 tokens, is never written,
and the activation and the mask run on one row per text instead of one per token. On SPLADE-tiny that tensor, not
the two transformer layers, was where the encoding time went.

:class:`MaxPooledMLM` stands in for the masked LM inside sentence-transformers' ``MLMTransformer``: its ``logits``
are the pooled maxima as a one-token sequence (texts x 1 x vocabulary), so the ``SpladePooling`` module after it
applies the activation to that one row and pools over one position, unchanged.
"""

from __future__ import annotations

from typing import Any

import torch

ROWS_PER_CHUNK = 64


class MaxPooledMLM(torch.nn.Module):
    """A ``*ForMaskedLM`` whose output ``logits`` are max-pooled over each text's unmasked tokens."""

    def __init__(self, mlm: torch.nn.Module, rows_per_chunk: int = ROWS_PER_CHUNK) -> None:
        super().__init__()
        decoder = mlm.get_output_embeddings()
        if not isinstance(decoder, torch.nn.Linear):
            raise TypeError(f"{type(mlm).__name__}'s vocabulary projection is not a Linear layer")
        name = next((name for name, module in mlm.named_modules() if module is decoder), "")
        if "." not in name:
            raise TypeError(f"{type(mlm).__name__}'s vocabulary projection sits outside its head")
        parent_name, attribute = name.rsplit(".", 1)
        # The model then returns the projection's input (the head's transformed hidden states); the projection
        # itself (weights and bias as they are) runs here, chunk by chunk.
        setattr(mlm.get_submodule(parent_name), attribute, torch.nn.Identity())
        self.mlm, self.decoder, self.config = mlm, decoder, mlm.config
        self.rows_per_chunk = rows_per_chunk

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any) -> dict:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        kwargs = {key: value for key, value in kwargs.items() if key == "token_type_ids" and value is not None}
        hidden = self.mlm(input_ids=input_ids, attention_mask=attention_mask, return_dict=True, **kwargs).logits
        if torch.jit.is_tracing():
            padding = ~attention_mask.bool()
            # The ONNX export traces one graph for every sequence length: no Python loop over the length.
            logits = self.decoder(hidden).masked_fill(padding[..., None], float("-inf"))
            return {"logits": logits.amax(dim=1, keepdim=True)}
        # The unmasked tokens of all texts, one after another, projected a few rows at a time: 64 rows of 30,522
        # logits are 7.8 MB, about what the cache holds, where one chunk of positions across a whole batch was not.
        valid = attention_mask.bool()
        rows = hidden[valid]
        lengths = valid.sum(dim=1).tolist()
        pooled = torch.full((hidden.shape[0], self.decoder.out_features), float("-inf"), dtype=hidden.dtype)
        text, start_of_text = 0, 0
        for start in range(0, rows.shape[0], self.rows_per_chunk):
            logits = self.decoder(rows[start : start + self.rows_per_chunk])
            position = start
            while position < start + logits.shape[0]:
                while position >= start_of_text + lengths[text]:
                    start_of_text += lengths[text]
                    text += 1
                end = min(start_of_text + lengths[text], start + logits.shape[0])
                segment = logits[position - start : end - start].amax(dim=0)
                torch.maximum(pooled[text], segment, out=pooled[text])
                position = end
        return {"logits": pooled[:, None, :]}


def pool_after_projection(st_model: Any) -> bool:
    """Install :class:`MaxPooledMLM` in a sentence-transformers SPLADE model (MLM transformer + max SpladePooling);
    returns whether it did. Anything else (sum pooling, left padding, another head) is left as it is."""
    if len(st_model) < 2:
        return False
    transformer, pooling = st_model[0], st_model[1]
    if type(pooling).__name__ != "SpladePooling" or getattr(pooling, "pooling_strategy", None) != "max":
        return False
    # SpladePooling multiplies the one pooled row by the first position's mask: it must be a real token.
    if getattr(transformer.tokenizer, "padding_side", "right") != "right" or isinstance(
        transformer.model, MaxPooledMLM
    ):
        return False
    try:
        transformer.model = MaxPooledMLM(transformer.model)
    except (TypeError, AttributeError, NotImplementedError):
        return False
    return True
