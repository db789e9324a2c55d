"""The ``triton`` attention backend: BlockRank's three block calls on the kernels of
:mod:`braid.kernels.block_attention`.

Selected with ``backend = "triton"`` in a pipeline's ``[rerank]`` table (or ``get_backend("triton")``), found by the
ranker through this package's ``braid.attention_backends`` entry point (pyproject.toml). The
instruction is a prefix-causal call with an empty prefix; the documents one call over all of them packed; the
query block one call whose prefix is the instruction and every document (split-K over that long prefix), then
one :func:`~braid.kernels.block_attention.block_mass` call for the attention its last rows put on each document.
Forward only: training runs the exact ``torch`` backend.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from braid.common.errors import BraidError
from braid.kernels.block_attention import block_mass, interpreting, prefix_causal_attention
from braid.ranker.attention_backend import AttentionBackend


def _check_device(device: str) -> None:
    if device != "cuda" and not interpreting():
        raise BraidError(
            "the triton attention backend runs on a CUDA GPU (or on CPU under TRITON_INTERPRET=1, for tests); "
            f"the ranker runs on {device}: use backend = 'torch' there (allowed: torch, triton)"
        )


def _runnable(x: torch.Tensor) -> None:
    _check_device(x.device.type)
    if torch.is_grad_enabled() and x.requires_grad:
        raise BraidError("the triton attention backend is forward only: train with backend 'torch'")


class TritonBlockBackend(AttentionBackend):
    """Block-sparse attention with Triton kernels whose cost is linear in the number of documents."""

    name = "triton"
    differentiable = False

    def check_device(self, device: str) -> None:
        _check_device(device)

    def instruction(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
        _runnable(q)
        return prefix_causal_attention(q, k[:, :0], v[:, :0], k, v, [q.shape[1]], scale)[0]

    def documents(
        self,
        q: torch.Tensor,
        inst_k: torch.Tensor,
        inst_v: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        lengths: Sequence[int],
        scale: float,
    ) -> torch.Tensor:
        _runnable(q)
        return prefix_causal_attention(q, inst_k, inst_v, k, v, lengths, scale)[0]

    def query(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        doc_bounds: torch.Tensor,
        scale: float,
        probe: int,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        _runnable(q)
        n_query = q.shape[1]
        n_ctx = k.shape[1] - n_query
        out, lse = prefix_causal_attention(
            q, k[:, :n_ctx], v[:, :n_ctx], k[:, n_ctx:], v[:, n_ctx:], [n_query], scale, return_lse=probe > 0
        )
        if probe <= 0:
            return out, None
        rows = slice(n_query - probe, n_query)
        return out, block_mass(q[:, rows], k, lse[:, rows], doc_bounds, scale)
