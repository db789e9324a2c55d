"""The int64 arrays an exported encoder graph takes, from the tensors a sentence-transformers tokenizer gives."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def graph_feeds(
    input_names: list[str], input_ids: torch.Tensor, attention_mask: torch.Tensor | None, extra: dict[str, Any]
) -> dict[str, np.ndarray]:
    """One int64 array per graph input; a missing attention mask means every position counts, a missing segment
    id means segment 0 (what the eager model assumes)."""
    given = {"input_ids": input_ids, "attention_mask": attention_mask, **extra}
    if given.get("attention_mask") is None:
        given["attention_mask"] = torch.ones_like(input_ids)
    if "token_type_ids" in input_names and given.get("token_type_ids") is None:
        given["token_type_ids"] = torch.zeros_like(input_ids)
    return {name: given[name].cpu().numpy().astype(np.int64, copy=False) for name in input_names}
