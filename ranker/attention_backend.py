"""The attention step of a BlockRank prompt, behind one interface: an exact PyTorch backend here, GPU kernels
plug in beside it by name (``braid.kernels`` offers ``triton`` through an entry point).

A backend answers three calls per layer, one per kind of block, so that no backend ever builds the quadratic
mask: the instruction attends causally to itself; documents (packed back to back, no padding) attend to the
instruction and causally to themselves; the query block attends causally to itself and to everything before it,
and reports how much attention mass its last ``probe`` tokens put on each document block (what attention
scoring reads).
Keys and values arrive with their ``num_key_value_heads`` (grouped-query attention); queries with all heads.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from importlib import metadata

import torch

from braid.common.errors import BraidError


class AttentionBackend(ABC):
    """Block-sparse attention for one layer of a BlockRank prompt (shapes in each method's docstring)."""

    name: str = ""
    #: whether gradients flow through it (training needs that; the Triton kernels are forward only)
    differentiable: bool = False

    def check_device(self, device: str) -> None:  # noqa: B027 - most backends run anywhere
        """Raise :class:`BraidError` if this backend cannot run on ``device`` (checked when a ranker opens)."""

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
        lengths: Sequence[int],
        scale: float,
    ) -> torch.Tensor:
        """q (H, T, D), inst_k/v (Hkv, Li, D), k/v (Hkv, T, D): documents packed back to back, no padding, with
        ``lengths`` summing to T -> (H, T, D).

        Row t of a document attends to every instruction key and to its own document's keys 0..t.
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
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor, scale: float, from_key: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q k^T * scale, masked) v with the softmax in float32, as the models' eager attention does.

    ``allowed`` covers the keys from ``from_key`` on; every row sees the keys before it (a block's shared prefix),
    so a query block over a long cached context masks only its own causal square. Explicit rather than fused SDPA
    so that the reference backend rounds like the dense reference; returns the output and the float32
    probabilities.
    """
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale
    # The mask is added as 0 / -inf in place, which gives masked_fill's numbers (x + 0 == x; finite scores only):
    # masked_fill_ broadcasting a mask over heads onto a strided slice cost ~10x the add (5 ms against 0.5 ms a
    # layer for 20 documents on a 2-core AVX512_BF16 CPU). The softmax widens to float32 inside: the same numbers as
    # widening first, without another pass over the score tensor.
    blocked = torch.zeros(allowed.shape, dtype=scores.dtype, device=scores.device).masked_fill_(~allowed, float("-inf"))
    scores[..., from_key:] += blocked
    probs = scores.softmax(dim=-1, dtype=torch.float32)
    return torch.matmul(probs.to(v.dtype), v), probs


def grouped_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor, scale: float, from_key: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`masked_attention` for grouped-query heads without copying keys and values once per query head.

    q (..., H, Lq, D); k and v (..., Hkv, Lk, D); ``allowed`` (..., Lq, Lk - from_key), the same for every head.
    The query heads that share a key/value head are folded into its rows (H, Lq) -> (Hkv, H / Hkv * Lq), so each
    key block is read in place. Returns the output (..., H, Lq, D) and the float32 probabilities (..., H, Lq, Lk).
    """
    *batch, heads, rows, dim = q.shape
    kv_heads = k.shape[-3]
    groups = heads // kv_heads
    folded = q.reshape(*batch, kv_heads, groups * rows, dim)
    mask = allowed if groups == 1 else allowed.repeat(*([1] * (allowed.dim() - 2)), groups, 1)
    out, probs = masked_attention(folded, k, v, mask.unsqueeze(-3), scale, from_key)
    return out.reshape(*batch, heads, rows, dim), probs.reshape(*batch, heads, rows, probs.shape[-1])


class TorchBlockBackend(AttentionBackend):
    """Exact block-sparse attention in PyTorch: one call for the instruction, one batched call for all documents
    (padded to the longest, masked), one for the query block; each block only ever sees its own keys."""

    name = "torch"
    differentiable = True

    def instruction(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
        length = q.shape[1]
        causal = torch.ones(length, length, dtype=torch.bool, device=q.device).tril()
        return grouped_attention(q, k, v, causal, scale)[0]

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
        # The reference pads the packed documents into one (n, H, L, D) batch and masks; kernels need not. Rows are
        # gathered with index_select (a row copy per index), not advanced indexing: in bfloat16 the latter took
        # ~4% of a cold 20-document rerank on a 2-core AVX512_BF16 CPU, 1.4x its float32 time.
        device = q.device
        n, longest = len(lengths), max(lengths)
        n_inst = inst_k.shape[-2]
        sizes = torch.tensor(list(lengths), device=device)
        rows = torch.arange(longest, device=device)
        valid = rows[None, :] < sizes[:, None]  # (n, L)
        gather = ((sizes.cumsum(0) - sizes)[:, None] + rows[None, :]).clamp(max=q.shape[1] - 1).flatten()

        def padded(x: torch.Tensor) -> torch.Tensor:  # (h, T, D) -> (n, h, L, D)
            return x.index_select(1, gather).view(x.shape[0], n, longest, -1).transpose(0, 1)

        keys = torch.cat([inst_k.unsqueeze(0).expand(n, -1, -1, -1), padded(k)], dim=2)
        values = torch.cat([inst_v.unsqueeze(0).expand(n, -1, -1, -1), padded(v)], dim=2)
        own = (rows[None, :] <= rows[:, None])[None] & valid[:, None, :]  # every row sees the whole instruction
        out = grouped_attention(padded(q), keys, values, own, scale, from_key=n_inst)[0]  # (n, H, L, D)
        unpadded = valid.flatten().nonzero().squeeze(1)
        return out.transpose(0, 1).reshape(out.shape[1], n * longest, -1).index_select(1, unpadded)

    def query(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        doc_bounds: torch.Tensor,
        scale: float,
        probe: int,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        n_query = q.shape[1]
        n_ctx = k.shape[-2] - n_query
        causal = torch.ones(n_query, n_query, dtype=torch.bool, device=q.device).tril()  # all of the context
        out, probs = grouped_attention(q, k, v, causal, scale, from_key=n_ctx)
        mass = None
        if probe > 0:
            mass = block_mass(probs[:, n_query - probe :, :], doc_bounds)
        return out, mass


def block_mass(probs: torch.Tensor, doc_bounds: torch.Tensor) -> torch.Tensor:
    """Sum attention probabilities (..., K) over each [start, end) span: (..., n)."""
    cumulative = torch.nn.functional.pad(probs.cumsum(dim=-1), (1, 0))
    bounds = doc_bounds.to(probs.device)
    return cumulative[..., bounds[:, 1]] - cumulative[..., bounds[:, 0]]


ENTRY_POINT_GROUP = "braid.attention_backends"
ATTENTION_BACKENDS: dict[str, Callable[[], AttentionBackend]] = {"torch": TorchBlockBackend}


def register_backend(name: str, factory: Callable[[], AttentionBackend]) -> None:
    """Make a backend selectable by name at run time (a test double, or a backend built in a notebook)."""
    ATTENTION_BACKENDS[name] = factory


def _installed_backends() -> dict[str, metadata.EntryPoint]:
    """Backends that installed packages declare under the ``braid.attention_backends`` entry point group.

    This is how ``braid.kernels`` offers its Triton backend (pyproject.toml): the ranker finds it by name and loads it
    only when asked for, so it never imports the kernels (nor Triton) itself.
    """
    return {entry.name: entry for entry in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def backend_names() -> list[str]:
    return sorted({*ATTENTION_BACKENDS, *_installed_backends()})


def get_backend(name: str) -> AttentionBackend:
    if name in ATTENTION_BACKENDS:
        return ATTENTION_BACKENDS[name]()
    installed = _installed_backends()
    if name not in installed:
        raise BraidError(f"unknown attention backend {name!r} (allowed: {', '.join(backend_names())})")
    factory = installed[name].load()
    return factory()
