"""The block-sparse forward equals the model's own dense forward with the explicit block mask; the KV cache and
early exit change nothing."""

from __future__ import annotations

import pytest
import torch

from benchmarks.ranker_exactness import differences, random_prompt, tiny_model
from braid.ranker.attention_backend import TorchBlockBackend
from braid.ranker.block_forward import BlockForward
from braid.ranker.doc_cache import DocumentKVCache
from braid.ranker.prompt_layout import BlockPrompt, PromptTemplate, build_prompt

TOL = 1e-4


def check_exact(model: torch.nn.Module, prompt: BlockPrompt, layers: list[int], probe: int) -> None:
    found = differences(model, prompt, layers, probe)
    for name in ("logits_all_tokens", "logits_last_token", "attention_mass", "warm_vs_cold_logits"):
        assert found[name] < TOL, (name, found[name])
    assert found["warm_vs_cold_mass"] < 1e-6 and found["early_exit_vs_full_mass"] == 0.0
    assert found["warm_cached_docs"] == len(prompt.documents) and found["early_exit_layers_run"] == max(layers) + 1


def test_mask_is_the_blockrank_pattern():
    prompt = random_prompt([2, 3])
    allowed = prompt.allowed_mask()
    # instruction 0..6, doc A 7..8, doc B 9..11, query 12..16
    assert allowed[8, :9].all() and not allowed[9, 7:9].any() and allowed[11, :7].all() and allowed[11, 9:12].all()
    assert not allowed[7, 8] and allowed[16].all() and not allowed[12, 13:].any()
    assert prompt.position_ids().tolist() == [*range(7), 7, 8, 7, 8, 9, *range(10, 15)]


@pytest.mark.parametrize("family", ["llama", "qwen2", "mistral"])
def test_tiny_random_models_match_the_dense_masked_forward(family):
    model = tiny_model(family)
    check_exact(model, random_prompt([6, 1, 9, 4]), layers=[1, 2], probe=3)


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
        cold = forward(random_prompt([5, 8, 3]), [1], 2, need_logits=True)
        assert cold.cached_docs == 0 and len(cache) == 4  # three documents and the instruction
        # The same documents in another order, with one new one: cached blocks are reused wherever they sit.
        shuffled = random_prompt([5, 8, 3])
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
        BlockForward(model, TorchBlockBackend(), cache, "m")(random_prompt([9, 9, 9, 9]), [3], 1)
    assert 0 < cache.nbytes <= 20_000 and len(cache) < 5


def test_prompts_batched_in_one_forward_equal_their_own_forwards():
    model = tiny_model("llama")
    first = random_prompt([5, 8, 3], seed=1)
    other = random_prompt([4, 6], seed=2)
    # Same instruction (one template), one document shared with the first prompt, a different query.
    second = BlockPrompt(
        first.instruction, (other.documents[0], first.documents[1], other.documents[1]), other.query, (1, 2, 3),
        tuple("ABC"),
    )  # fmt: skip
    with torch.no_grad():
        alone = [
            BlockForward(model, TorchBlockBackend(), None, "m")(p, [1, 2], 2, need_logits=True) for p in (first, second)
        ]
        for cache in (None, DocumentKVCache(1 << 24)):
            forward = BlockForward(model, TorchBlockBackend(), cache, "m")
            together = forward.run_many([first, second], [1, 2], 2, need_logits=True)
            for batched, single in zip(together, alone, strict=True):
                assert torch.allclose(batched.last_logits, single.last_logits, atol=1e-5)
                for layer in (1, 2):
                    assert torch.allclose(batched.doc_attention[layer], single.doc_attention[layer], atol=1e-6)
        # The shared document was computed once and cached once: 3 + 3 - 1 documents and the instruction.
        assert len(cache) == 6
        with pytest.raises(ValueError, match="share their instruction"):
            forward.run_many([first, random_prompt([2], seed=3)], [1], 1)
