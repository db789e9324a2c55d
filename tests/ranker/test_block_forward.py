"""The block-sparse forward equals the model's own dense forward with the explicit block mask; the KV cache and
early exit change nothing."""

from __future__ import annotations

import pytest
import torch

from ranker.attention_backend import TorchBlockBackend, block_mass
from ranker.block_forward import BlockForward
from ranker.doc_cache import DocumentKVCache
from ranker.prompt_layout import BlockPrompt, PromptTemplate, build_prompt
from tests.ranker.conftest import tiny_model

TOL = 1e-4


def random_prompt(vocab: int, lengths: list[int], seed: int = 0) -> BlockPrompt:
    generator = torch.Generator().manual_seed(seed)

    def ids(n: int) -> tuple[int, ...]:
        return tuple(torch.randint(1, vocab, (n,), generator=generator).tolist())

    return BlockPrompt(
        instruction=ids(7),
        documents=tuple(ids(n) for n in lengths),
        query=ids(5),
        label_token_ids=tuple(range(1, len(lengths) + 1)),
        labels=tuple("ABCDEFGH"[: len(lengths)]),
    )


def dense_reference(model: torch.nn.Module, prompt: BlockPrompt):
    """The model's ordinary forward over the flat prompt, with the explicit mask and the block position ids."""
    allowed = prompt.allowed_mask()
    mask = torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)
    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")  # the only implementation that returns attention probabilities
    try:
        with torch.no_grad():
            return model(
                input_ids=prompt.flat_ids()[None],
                position_ids=prompt.position_ids()[None],
                attention_mask=mask[None, None],
                output_attentions=True,
            )
    finally:
        model.set_attn_implementation(previous)


def doc_bounds(prompt: BlockPrompt) -> torch.Tensor:
    start = len(prompt.instruction)
    bounds = []
    for length in prompt.doc_lengths:
        bounds.append((start, start + length))
        start += length
    return torch.tensor(bounds)


def check_exact(model: torch.nn.Module, prompt: BlockPrompt, layers: list[int], probe: int) -> None:
    dense = dense_reference(model, prompt)
    forward = BlockForward(model, TorchBlockBackend(), None, "m")
    with torch.no_grad():
        result = forward(prompt, layers, probe, need_logits=True, return_hidden=True)
        logits = model.lm_head(result.hidden)
    assert (logits - dense.logits[0]).abs().max().item() < TOL
    assert (result.last_logits - dense.logits[0, -1]).abs().max().item() < TOL
    for layer in layers:
        expected = block_mass(dense.attentions[layer][0, :, -probe:].float(), doc_bounds(prompt))
        assert (result.doc_attention[layer] - expected).abs().max().item() < TOL


def test_mask_is_the_blockrank_pattern():
    prompt = random_prompt(50, [2, 3])
    allowed = prompt.allowed_mask()
    # instruction 0..6, doc A 7..8, doc B 9..11, query 12..16
    assert allowed[8, :9].all() and not allowed[9, 7:9].any() and allowed[11, :7].all() and allowed[11, 9:12].all()
    assert not allowed[7, 8] and allowed[16].all() and not allowed[12, 13:].any()
    assert prompt.position_ids().tolist() == [*range(7), 7, 8, 7, 8, 9, *range(10, 15)]


@pytest.mark.parametrize("family", ["llama", "qwen2", "mistral"])
def test_tiny_random_models_match_the_dense_masked_forward(family):
    model = tiny_model(family)
    check_exact(model, random_prompt(96, [6, 1, 9, 4]), layers=[1, 2], probe=3)


def test_smollm2_matches_the_dense_masked_forward(smollm2):
    tokenizer = smollm2.tokenizer
    template = PromptTemplate.for_tokenizer(tokenizer)
    docs = ["Aspirin reduces the risk of heart attack.", "The cat sat on the mat for a while.", "", "Heart disease."]
    prompt = build_prompt(tokenizer, template, "does aspirin prevent heart attacks", docs, list("ABCD"), [1] * 4, 32)
    check_exact(smollm2.model, prompt, layers=[10, 15], probe=4)


def test_warm_cache_and_early_exit_give_the_cold_full_scores():
    model = tiny_model("llama")
    cache = DocumentKVCache(1 << 24)
    forward = BlockForward(model, TorchBlockBackend(), cache, "m")
    with torch.no_grad():
        cold = forward(random_prompt(96, [5, 8, 3]), [1], 2, need_logits=True)
        assert cold.cached_docs == 0 and len(cache) == 4  # three documents and the instruction
        # The same documents in another order, with one new one: cached blocks are reused wherever they sit.
        shuffled = random_prompt(96, [5, 8, 3])
        shuffled = BlockPrompt(
            shuffled.instruction,
            (shuffled.documents[2], (4, 4, 4), shuffled.documents[0], shuffled.documents[1]),
            shuffled.query,
            (1, 2, 3, 4),
            tuple("ABCD"),
        )
        uncached = BlockForward(model, TorchBlockBackend(), None, "m")(shuffled, [1], 2, need_logits=True)
        warm = forward(shuffled, [1], 2, need_logits=True)
        early = forward(shuffled, [1], 2)
    assert warm.cached_docs == 3 and early.layers_run == 2
    # Equal up to float32 rounding: a cached block was computed in a batch of another shape.
    assert (warm.last_logits - uncached.last_logits).abs().max() < 1e-5
    assert (warm.doc_attention[1] - uncached.doc_attention[1]).abs().max() < 1e-6
    assert torch.equal(early.doc_attention[1], warm.doc_attention[1])
    assert early.last_logits is None


def test_cache_respects_its_byte_budget():
    model = tiny_model("llama")
    cache = DocumentKVCache(20_000)
    with torch.no_grad():
        BlockForward(model, TorchBlockBackend(), cache, "m")(random_prompt(96, [9, 9, 9, 9]), [3], 1)
    assert 0 < cache.nbytes <= 20_000 and len(cache) < 5
