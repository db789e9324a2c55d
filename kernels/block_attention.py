"""Triton kernels for BlockRank's block-sparse attention, forward only, fp16/bf16/fp32, grouped-query heads.

BlockRank (Gupta et al., "Scalable In-context Ranking with Generative Models", 2025) lets each document block
attend to the instruction and causally to itself, and the query block to everything before it. Every block is
then an instance of one pattern, *prefix + causal*: rows of a sequence attend to all keys of a shared prefix and
causally to the sequence's own keys. The instruction is a sequence with an empty prefix; the documents are many
sequences packed back to back (no padding: a tile table maps programs to (sequence, first row)) sharing the
instruction as prefix; the query block is one sequence whose prefix is the instruction and every document. Cost
is therefore linear in the number of documents: a document tile reads the instruction's keys and its own, never
another document's.

:func:`prefix_causal_attention` is FlashAttention-2's online softmax (Dao, 2023) over that pattern, with
split-K over the prefix (flash-decoding) when there are too few row tiles to fill the GPU, as for the query
block, whose few rows read tens of thousands of prefix keys. It returns each row's log-sum-exp (base 2), which
:func:`block_mass` uses to compute, without materializing probabilities, how much attention the query block's
last rows put on each document: what BlockRank's attention scoring reads.

On CPU the kernels run under ``TRITON_INTERPRET=1`` (slowly, for tests); the exact PyTorch backend in
:mod:`braid.ranker.attention_backend` is the reference they are tested against.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import torch
import triton
import triton.language as tl

LOG2E = 1.4426950408889634


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@triton.jit
def _dot(a, b, UPCAST: tl.constexpr):
    # Triton 3.9's interpreter computes tl.dot on bfloat16 operands wrongly (reads them as garbage); under the
    # interpreter bf16 operands are widened first, which gives the products a GPU's bf16 MMA accumulates in fp32.
    if UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32))
    if a.dtype == tl.float32:  # float32 inputs mean exactness is wanted: no TF32 rounding on the GPU
        return tl.dot(a, b, input_precision="ieee")
    return tl.dot(a, b)


@triton.jit
def _rows(ptr, rows, stride, dims, ok):
    """A (len(rows), HEAD_DIM) tile of a head's matrix; rows outside ``ok`` read as zeros."""
    return tl.load(ptr + rows[:, None] * stride + dims[None, :], mask=ok[:, None], other=0.0)


@triton.jit
def _prefix_causal_kernel(
    Q, K, V, PK, PV, Out, LSE,
    tile_seq, tile_row, seq_start, seq_len,
    prefix_len, split_size,
    stride_qh, stride_qt, stride_kh, stride_kt, stride_vh, stride_vt,
    stride_pkh, stride_pkt, stride_pvh, stride_pvt,
    stride_os, stride_oh, stride_ot, stride_ls, stride_lh,
    qk_scale,
    GROUPS: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    SPLIT: tl.constexpr, UPCAST: tl.constexpr,
):  # fmt: skip
    tile = tl.program_id(0)
    head = tl.program_id(1)
    split = tl.program_id(2)
    kv_head = head // GROUPS
    seq = tl.load(tile_seq + tile)
    row0 = tl.load(tile_row + tile)
    base = tl.load(seq_start + seq)
    length = tl.load(seq_len + seq)

    rows = row0 + tl.arange(0, BLOCK_M)
    row_ok = rows < length
    dims = tl.arange(0, HEAD_DIM)
    q = _rows(Q + head * stride_qh, base + rows, stride_qt, dims, row_ok)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)

    # The shared prefix: every row sees every key (this split's slice of it).
    lo = split * split_size
    hi = tl.minimum(lo + split_size, prefix_len)
    for start in range(lo, hi, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        col_ok = cols < hi
        k = _rows(PK + kv_head * stride_pkh, cols, stride_pkt, dims, col_ok)
        v = _rows(PV + kv_head * stride_pvh, cols, stride_pvt, dims, col_ok)
        s = _dot(q, tl.trans(k), UPCAST) * qk_scale
        s = tl.where(col_ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.math.exp2(m_i - m_new)
        p = tl.math.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + _dot(p.to(v.dtype), v, UPCAST)
        m_i = m_new

    # The sequence's own keys, causally; done by the last split only.
    if split == tl.num_programs(2) - 1:
        own_hi = tl.minimum(row0 + BLOCK_M, length)
        for start in range(0, own_hi, BLOCK_N):
            cols = start + tl.arange(0, BLOCK_N)
            col_ok = cols < length
            k = _rows(K + kv_head * stride_kh, base + cols, stride_kt, dims, col_ok)
            v = _rows(V + kv_head * stride_vh, base + cols, stride_vt, dims, col_ok)
            s = _dot(q, tl.trans(k), UPCAST) * qk_scale
            s = tl.where(col_ok[None, :] & (cols[None, :] <= rows[:, None]), s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            # Rows past the sequence's end see no key at all; keep them finite (they are never stored).
            m_new = tl.where(m_new == float("-inf"), 0.0, m_new)
            alpha = tl.math.exp2(m_i - m_new)
            p = tl.math.exp2(s - m_new[:, None])
            l_i = l_i * alpha + tl.sum(p, 1)
            acc = acc * alpha[:, None] + _dot(p.to(v.dtype), v, UPCAST)
            m_i = m_new

    l_safe = tl.where(l_i > 0.0, l_i, 1.0)
    out = acc / l_safe[:, None]
    o_ptr = Out + split * stride_os + head * stride_oh + (base + rows)[:, None] * stride_ot + dims[None, :]
    tl.store(o_ptr, out.to(Out.dtype.element_ty), mask=row_ok[:, None])
    if SPLIT:
        tl.store(LSE + split * stride_ls + head * stride_lh + base + rows, m_i + tl.math.log2(l_safe), mask=row_ok)
    elif LSE is not None:
        tl.store(LSE + head * stride_lh + base + rows, m_i + tl.math.log2(l_safe), mask=row_ok)


@triton.jit
def _block_mass_kernel(
    Q, K, LSE, MASS, span_start, span_end, n_rows,
    stride_qh, stride_qt, stride_kh, stride_kt, stride_lh, stride_mh, stride_mr,
    qk_scale,
    GROUPS: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    UPCAST: tl.constexpr,
):  # fmt: skip
    span = tl.program_id(0)
    head = tl.program_id(1)
    kv_head = head // GROUPS
    rows = tl.arange(0, BLOCK_M)
    row_ok = rows < n_rows
    dims = tl.arange(0, HEAD_DIM)
    q = _rows(Q + head * stride_qh, rows, stride_qt, dims, row_ok)
    lse = tl.load(LSE + head * stride_lh + rows, mask=row_ok, other=0.0)
    lo = tl.load(span_start + span)
    hi = tl.load(span_end + span)
    total = tl.zeros([BLOCK_M], dtype=tl.float32)
    for start in range(lo, hi, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        col_ok = cols < hi
        k = _rows(K + kv_head * stride_kh, cols, stride_kt, dims, col_ok)
        s = _dot(q, tl.trans(k), UPCAST) * qk_scale
        p = tl.math.exp2(s - lse[:, None])
        total += tl.sum(tl.where(col_ok[None, :], p, 0.0), 1)
    tl.store(MASS + head * stride_mh + rows * stride_mr + span, total, mask=row_ok)


def _blocks(head_dim: int) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps, num_stages): small tiles under the interpreter, where time is per element."""
    if interpreting():
        return 16, 16, 1, 1
    # FlashAttention-2's forward tiles for head dims up to 128 (Q 16 KiB + 3 stages of K/V 96 KiB of shared
    # memory in bf16); untuned here, as no GPU was at hand when these were chosen.
    return (64, 64, 4, 3) if head_dim <= 128 else (32, 32, 4, 2)


def _upcast(x: torch.Tensor) -> bool:
    return interpreting() and x.dtype == torch.bfloat16


def _check(q: torch.Tensor, *kvs: torch.Tensor) -> tuple[int, int]:
    heads, _, dim = q.shape
    if dim < 16 or dim & (dim - 1):
        raise ValueError(f"the Triton block attention needs a power-of-two head dim >= 16, got {dim}")
    for x in kvs:
        if x.dim() != 3 or x.shape[-1] != dim or heads % x.shape[0]:
            raise ValueError(f"key/value shape {tuple(x.shape)} does not fit queries {tuple(q.shape)}")
        if x.dtype != q.dtype or x.device != q.device:
            raise ValueError("queries, keys and values must share dtype and device")
    return heads, dim


def _last_dim_contiguous(x: torch.Tensor) -> torch.Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


def _sm_count(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 8


def prefix_causal_attention(
    q: torch.Tensor,
    prefix_k: torch.Tensor,
    prefix_v: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    lengths: Sequence[int],
    scale: float,
    splits: int | None = None,
    return_lse: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Rows of each packed sequence attend to the whole prefix and causally to their own sequence's keys.

    q (H, T, D); prefix_k/v (Hkv, P, D), P may be 0; k/v (Hkv, T, D); ``lengths`` the sequences' lengths in
    order, summing to T. Returns the output (H, T, D) in q's dtype and, with ``return_lse``, each row's
    log-sum-exp of the scaled scores in base 2 (H, T), float32. ``splits`` forces the number of prefix splits
    (split-K); by default the prefix is split only when the row tiles alone would leave the GPU idle.
    """
    heads, dim = _check(q, prefix_k, prefix_v, k, v)
    total = int(sum(lengths))
    if total != q.shape[1] or k.shape[1] != total or v.shape[1] != total:
        raise ValueError(f"lengths sum to {total} but q/k/v hold {q.shape[1]}/{k.shape[1]}/{v.shape[1]} rows")
    if prefix_k.shape[1] != prefix_v.shape[1]:
        raise ValueError("prefix keys and values differ in length")
    q, k, v, prefix_k, prefix_v = map(_last_dim_contiguous, (q, k, v, prefix_k, prefix_v))
    block_m, block_n, warps, stages = _blocks(dim)
    device = q.device
    tile_seq, tile_row = [], []
    for index, length in enumerate(lengths):
        for row in range(0, length, block_m):
            tile_seq.append(index)
            tile_row.append(row)
    starts = [0]
    for length in lengths[:-1]:
        starts.append(starts[-1] + length)
    # One small host-to-device copy: the tile table and the sequences' offsets.
    table = torch.tensor([*tile_seq, *tile_row, *starts, *lengths], dtype=torch.int32).to(device)
    n_tiles, n_seqs = len(tile_seq), len(lengths)
    tiles = table[:n_tiles], table[n_tiles : 2 * n_tiles]
    seqs = table[2 * n_tiles : 2 * n_tiles + n_seqs], table[2 * n_tiles + n_seqs :]

    prefix_len = prefix_k.shape[1]
    if not prefix_len:
        splits, split_size = 1, block_n
    else:
        if splits is None:
            splits = 1
            programs = len(tile_seq) * heads
            if prefix_len >= 4 * 1024 and programs < 2 * _sm_count(device):
                splits = min(math.ceil(2 * _sm_count(device) / programs), math.ceil(prefix_len / 1024))
        splits = max(1, min(splits, math.ceil(prefix_len / block_n)))
        # Splits are whole key tiles; rounding up the size can leave fewer splits than asked for.
        split_size = math.ceil(math.ceil(prefix_len / splits) / block_n) * block_n
        splits = math.ceil(prefix_len / split_size)
    split = splits > 1
    if split:  # each split's un-merged output and log-sum-exp, float32, merged below
        out = torch.empty(splits, heads, total, dim, dtype=torch.float32, device=device)
        lse = torch.empty(splits, heads, total, dtype=torch.float32, device=device)
        out_strides, lse_strides = out.stride()[:3], lse.stride()[:2]
    else:
        out = torch.empty_like(q)
        lse = torch.empty(heads, total, dtype=torch.float32, device=device) if return_lse else None
        out_strides, lse_strides = (0, *out.stride()[:2]), (0, lse.stride(0) if lse is not None else 0)
    _prefix_causal_kernel[(len(tile_seq), heads, splits)](
        q, k, v, prefix_k, prefix_v, out, lse, *tiles, *seqs, prefix_len, split_size,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        prefix_k.stride(0), prefix_k.stride(1), prefix_v.stride(0), prefix_v.stride(1), *out_strides, *lse_strides,
        scale * LOG2E, GROUPS=heads // k.shape[0], HEAD_DIM=dim, BLOCK_M=block_m, BLOCK_N=block_n,
        num_warps=warps, num_stages=stages, SPLIT=split, UPCAST=_upcast(q),
    )  # fmt: skip
    if not split:
        return out, lse
    # Merge the splits: each holds softmax over its keys; weight by its share of the total exp-sum.
    merged_lse = torch.logsumexp(lse * math.log(2.0), dim=0) * LOG2E
    weights = torch.exp2(lse - merged_lse[None])
    merged = (out * weights[..., None]).sum(dim=0).to(q.dtype)
    return merged, merged_lse if return_lse else None


def block_mass(q: torch.Tensor, k: torch.Tensor, lse: torch.Tensor, spans: torch.Tensor, scale: float) -> torch.Tensor:
    """Attention probability mass of each query row on each [start, end) key span: (H, R, n) float32.

    q (H, R, D) are the rows read (the query block's last ``probe`` rows), k (Hkv, K, D) all the keys they
    attended to, ``lse`` (H, R) their base-2 log-sum-exp from :func:`prefix_causal_attention`, ``spans`` (n, 2).
    """
    heads, dim = _check(q, k)
    q, k = _last_dim_contiguous(q), _last_dim_contiguous(k)
    rows = q.shape[1]
    _, block_n, warps, _ = _blocks(dim)
    block_m = max(16, triton.next_power_of_2(rows))
    spans = spans.to(device=q.device, dtype=torch.int32)
    n = spans.shape[0]
    mass = torch.zeros(heads, rows, n, dtype=torch.float32, device=q.device)
    if n == 0 or rows == 0:
        return mass
    lse = lse.contiguous()
    _block_mass_kernel[(n, heads)](
        q, k, lse, mass, spans[:, 0].contiguous(), spans[:, 1].contiguous(), rows,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), lse.stride(0), mass.stride(0), mass.stride(1),
        scale * LOG2E, GROUPS=heads // k.shape[0], HEAD_DIM=dim, BLOCK_M=block_m, BLOCK_N=block_n, num_warps=warps,
        UPCAST=_upcast(q),
    )  # fmt: skip
    return mass
