"""The Triton block-sparse kernels equal the exact PyTorch attention (CPU: under TRITON_INTERPRET=1)."""

from __future__ import annotations

import pytest
import torch

from braid.common.errors import BraidError
from braid.kernels.block_attention import block_mass, prefix_causal_attention
from braid.kernels.triton_backend import TritonBlockBackend
from braid.ranker.attention_backend import TorchBlockBackend, get_backend, repeat_heads

TOLERANCE = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}


def reference(q, prefix_k, prefix_v, k, v, lengths, scale):
    """Each sequence on its own, with the explicit mask: all prefix keys, own keys causally."""
    heads, outputs, probabilities, start = q.shape[0], [], [], 0
    n_prefix = prefix_k.shape[1]
    for length in lengths:
        rows = slice(start, start + length)
        keys = repeat_heads(torch.cat([prefix_k, k[:, rows]], 1), heads).float()
        values = repeat_heads(torch.cat([prefix_v, v[:, rows]], 1), heads).float()
        allowed = torch.ones(length, n_prefix + length, dtype=torch.bool, device=q.device)
        allowed[:, n_prefix:] = torch.ones(length, length, dtype=torch.bool, device=q.device).tril()
        scores = (q[:, rows].float() @ keys.transpose(1, 2) * scale).masked_fill(~allowed, float("-inf"))
        probs = scores.softmax(-1)
        outputs.append(probs @ values)
        probabilities.append(probs)
        start += length
    return torch.cat(outputs, 1), probabilities


def random_blocks(lengths, n_prefix, heads=4, kv_heads=2, dim=16, dtype=torch.float32, device="cpu", seed=0):
    generator = torch.Generator().manual_seed(seed)
    total = sum(lengths)

    def draw(*shape):
        return torch.randn(*shape, generator=generator).to(device=device, dtype=dtype)

    return (draw(heads, total, dim), draw(kv_heads, n_prefix, dim), draw(kv_heads, n_prefix, dim),
            draw(kv_heads, total, dim), draw(kv_heads, total, dim))  # fmt: skip


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_packed_documents_of_different_lengths_match_the_masked_reference(dtype, device):
    lengths = [5, 37, 1, 16, 20]  # a single-token document, one across several tiles, one exactly a tile
    blocks = random_blocks(lengths, n_prefix=9, dtype=dtype, device=device)
    out, _ = prefix_causal_attention(*blocks, lengths, 0.25)
    expected, _ = reference(*blocks, lengths, 0.25)
    assert out.dtype == dtype and out.shape == blocks[0].shape
    assert (out.float() - expected).abs().max().item() < TOLERANCE[dtype]


@pytest.mark.parametrize("splits", [1, 3, 8])
def test_split_prefix_merges_to_the_same_output_and_log_sum_exp(splits, device):
    lengths = [7]  # a query block: few rows, a long prefix
    blocks = random_blocks(lengths, n_prefix=150, heads=8, kv_heads=2, dim=32, device=device, seed=1)
    out, lse = prefix_causal_attention(*blocks, lengths, 0.2, splits=splits, return_lse=True)
    expected, _ = reference(*blocks, lengths, 0.2)
    assert (out - expected).abs().max().item() < 1e-5
    q, prefix_k, _, k, _ = blocks
    scores = q @ repeat_heads(torch.cat([prefix_k, k], 1), 8).transpose(1, 2) * 0.2
    scores[:, :, 150:] = scores[:, :, 150:].masked_fill(~torch.ones(7, 7, dtype=torch.bool, device=device).tril(), -1e9)
    assert torch.allclose(lse, torch.logsumexp(scores, -1) / torch.log(torch.tensor(2.0)), atol=1e-4)


def test_empty_prefix_is_plain_causal_attention(device):
    blocks = random_blocks([19], n_prefix=0, device=device)
    out, _ = prefix_causal_attention(*blocks, [19], 0.3)
    assert (out - reference(*blocks, [19], 0.3)[0]).abs().max().item() < 1e-5


def test_block_mass_sums_probabilities_over_each_document(device):
    lengths = [6]
    blocks = random_blocks(lengths, n_prefix=40, device=device, seed=2)
    q, prefix_k, _, k, _ = blocks
    _, lse = prefix_causal_attention(*blocks, lengths, 0.25, return_lse=True)
    spans = torch.tensor([[0, 7], [7, 30], [30, 31], [31, 40]])
    mass = block_mass(q[:, 3:], torch.cat([prefix_k, k], 1), lse[:, 3:], spans, 0.25)
    probs = reference(*blocks, lengths, 0.25)[1][0][:, 3:]
    expected = torch.stack([probs[..., a:b].sum(-1) for a, b in spans.tolist()], -1)
    assert mass.shape == (4, 3, 4) and (mass - expected).abs().max().item() < 1e-6


def test_triton_backend_equals_the_torch_backend_call_by_call(device):
    triton_backend, torch_backend = get_backend("triton"), TorchBlockBackend()
    assert isinstance(triton_backend, TritonBlockBackend)
    lengths = [3, 11, 18]
    q, inst_k, inst_v, k, v = random_blocks(lengths, n_prefix=6, device=device, seed=3)
    got = triton_backend.documents(q, inst_k, inst_v, k, v, lengths, 0.25)
    assert (got - torch_backend.documents(q, inst_k, inst_v, k, v, lengths, 0.25)).abs().max().item() < 1e-5
    q_i = q[:, :6]
    got = triton_backend.instruction(q_i, inst_k, inst_v, 0.25)
    assert (got - torch_backend.instruction(q_i, inst_k, inst_v, 0.25)).abs().max().item() < 1e-5
    # The query block: 5 rows over instruction + the three documents + itself; mass of its last 2 rows.
    keys, values = torch.cat([inst_k, k, k[:, :5]], 1), torch.cat([inst_v, v, v[:, :5]], 1)
    bounds = torch.tensor([[6, 9], [9, 20], [20, 38]])
    out, mass = triton_backend.query(q[:, :5], keys, values, bounds, 0.25, 2)
    ref_out, ref_mass = torch_backend.query(q[:, :5], keys, values, bounds, 0.25, 2)
    assert (out - ref_out).abs().max().item() < 1e-5 and (mass - ref_mass).abs().max().item() < 1e-6


def test_bad_shapes_and_devices_are_refused(monkeypatch):
    q, prefix_k, prefix_v, k, v = random_blocks([4], n_prefix=2, dim=16)
    with pytest.raises(ValueError, match="lengths sum to 5"):
        prefix_causal_attention(q, prefix_k, prefix_v, k, v, [5], 1.0)
    odd = torch.randn(2, 4, 24)
    with pytest.raises(ValueError, match="power-of-two head dim"):
        prefix_causal_attention(odd, odd[:, :0], odd[:, :0], odd, odd, [4], 1.0)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(BraidError, match="runs on a CUDA GPU"):
        TritonBlockBackend().instruction(q, k, v, 1.0)
    with pytest.raises(BraidError, match="the ranker runs on cpu: use backend = 'torch'"):
        TritonBlockBackend().check_device("cpu")


def test_block_forward_on_the_triton_backend_gives_the_torch_scores(device):
    from benchmarks.ranker_exactness import random_prompt, tiny_model
    from braid.ranker.block_forward import BlockForward
    from braid.ranker.doc_cache import DocumentKVCache

    model = tiny_model("llama").to(device)
    prompt = random_prompt([6, 1, 19, 4])
    with torch.inference_mode():
        expected = BlockForward(model, TorchBlockBackend(), None, "m")(prompt, [1, 2], 3, need_logits=True)
        forward = BlockForward(model, get_backend("triton"), DocumentKVCache(1 << 24), "m")
        cold = forward(prompt, [1, 2], 3, need_logits=True)
        warm = forward(prompt, [1, 2], 3, need_logits=True)
    assert warm.cached_docs == 4
    for got in (cold, warm):
        assert (got.last_logits - expected.last_logits).abs().max().item() < 1e-4
        for layer in (1, 2):
            assert (got.doc_attention[layer] - expected.doc_attention[layer]).abs().max().item() < 1e-5
