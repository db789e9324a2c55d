"""The attention step of a BlockRank prompt, behind one interface: an exact PyTorch backend here, GPU kernels
plug in beside it (``kernels/``) by registering under another name.

A backend answers three calls per layer, one per kind of block, so that no backend ever builds the quadratic
mask: the instruction attends causally to itself; documents (a padded batch) attend to the instruction and
causally to themselves; the query block attends causally to itself and to everything before it, and reports
how much attention mass its last ``probe`` tokens put on each document block (what attention scoring reads).
Keys and values arrive with their ``num_key_value_heads`` (grouped-query attention); queries with all heads.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import torch

from eval.errors import BraidError


class AttentionBackend(ABC):
    """Block-sparse attention for one layer of a BlockRank prompt (shapes in each method's docstring)."""

    name: str = ""

    @abstractmethod
    def instruction(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
        """q (H, Li, D), k/v (Hkv, Li, D) -> (H, Li, D): causal self-attention."""

    @abstractmethod
    def documents(
        self,
        q: torch.Tensor,
        inst_k: torch.Tensor,
        inst_v: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        lengths: torch.Tensor,
        scale: float,
    ) -> torch.Tensor:
        """q (n, H, L, D), inst_k/v (Hkv, Li, D), k/v (n, Hkv, L, D) padded to L, lengths (n,) -> (n, H, L, D).

        Row t of document i attends to every instruction key and to its own keys 0..t; padded rows are ignored.
        """

    @abstractmethod
    def query(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        doc_bounds: torch.Tensor,
        scale: float,
        probe: int,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """q (H, Lq, D); k/v (Hkv, Lctx + Lq, D) = instruction, all documents unpadded, then the query itself.

        ``doc_bounds`` (n, 2) are the [start, end) offsets of each document in k. Returns the output (H, Lq, D)
        and, when ``probe`` > 0, the attention mass (H, probe, n) of the last ``probe`` query rows on each
        document, in float32.
        """


def repeat_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """Expand grouped key/value heads (dim -3) to ``heads`` query heads."""
    groups = heads // x.shape[-3]
    return x if groups == 1 else x.repeat_interleave(groups, dim=-3)


def masked_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q k^T * scale, masked) v with the softmax in float32, as the models' eager attention does.

    Explicit rather than fused SDPA so that the reference backend rounds like the dense reference; returns the
    output and the float32 probabilities.
    """
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale
    probs = scores.float().masked_fill(~allowed, float("-inf")).softmax(dim=-1)
    return torch.matmul(probs.to(v.dtype), v), probs


class TorchBlockBackend(AttentionBackend):
    """Exact block-sparse attention in PyTorch: one call for the instruction, one batched call for all documents
    (padded to the longest, masked), one for the query block; each block only ever sees its own keys."""

    name = "torch"

    def instruction(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
        heads, length = q.shape[0], q.shape[1]
        causal = torch.ones(length, length, dtype=torch.bool, device=q.device).tril()
        return masked_attention(q, repeat_heads(k, heads), repeat_heads(v, heads), causal, scale)[0]

    def documents(
        self,
        q: torch.Tensor,
        inst_k: torch.Tensor,
        inst_v: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        lengths: torch.Tensor,
        scale: float,
    ) -> torch.Tensor:
        n, heads, length, _ = q.shape
        n_inst = inst_k.shape[-2]
        keys = torch.cat([inst_k.unsqueeze(0).expand(n, -1, -1, -1), k], dim=2)
        values = torch.cat([inst_v.unsqueeze(0).expand(n, -1, -1, -1), v], dim=2)
        rows = torch.arange(length, device=q.device)
        own = (rows[None, :] <= rows[:, None])[None] & (rows[None, None, :] < lengths[:, None, None].to(q.device))
        mask = torch.cat([torch.ones(n, length, n_inst, dtype=torch.bool, device=q.device), own], dim=2)
        return masked_attention(q, repeat_heads(keys, heads), repeat_heads(values, heads), mask[:, None], scale)[0]

    def query(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        doc_bounds: torch.Tensor,
        scale: float,
        probe: int,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        heads, n_query, _ = q.shape
        n_ctx = k.shape[-2] - n_query
        rows = torch.arange(n_query, device=q.device)
        allowed = torch.ones(n_query, n_ctx + n_query, dtype=torch.bool, device=q.device)
        allowed[:, n_ctx:] = rows[None, :] <= rows[:, None]
        out, probs = masked_attention(q, repeat_heads(k, heads), repeat_heads(v, heads), allowed, scale)
        mass = None
        if probe > 0:
            mass = block_mass(probs[:, n_query - probe :, :], doc_bounds)
        return out, mass


def block_mass(probs: torch.Tensor, doc_bounds: torch.Tensor) -> torch.Tensor:
    """Sum attention probabilities (..., K) over each [start, end) span: (..., n)."""
    cumulative = torch.nn.functional.pad(probs.cumsum(dim=-1), (1, 0))
    bounds = doc_bounds.to(probs.device)
    return cumulative[..., bounds[:, 1]] - cumulative[..., bounds[:, 0]]


ATTENTION_BACKENDS: dict[str, Callable[[], AttentionBackend]] = {"torch": TorchBlockBackend}


def register_backend(name: str, factory: Callable[[], AttentionBackend]) -> None:
    """Make a backend selectable by name (``kernels`` registers its Triton backend here)."""
    ATTENTION_BACKENDS[name] = factory


def get_backend(name: str) -> AttentionBackend:
    if name not in ATTENTION_BACKENDS:
        raise BraidError(f"unknown attention backend {name!r} (allowed: {', '.join(sorted(ATTENTION_BACKENDS))})")
    return ATTENTION_BACKENDS[name]()
