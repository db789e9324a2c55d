"""How far the block-sparse forward is from the model's own dense forward with the explicit block mask.

For tiny random Llama, Qwen2 and Mistral decoders and for the embedded SmolLM2 (float32): the largest absolute
difference over every token's logits, over the last token's logits, and over the attention mass that the query
block's last tokens put on each document at two layers (what attention scoring reads); then the same prompt
with the document cache warm, and with early exit, against the cold full forward. The tests assert < 1e-4;
this prints the numbers. Usage:

    python -m benchmarks.ranker_exactness
"""

from __future__ import annotations

import torch

from braid.ranker.attention_backend import TorchBlockBackend, block_mass
from braid.ranker.block_forward import BlockForward
from braid.ranker.doc_cache import DocumentKVCache
from braid.ranker.llm_source import load_llm
from braid.ranker.prompt_layout import BlockPrompt, PromptTemplate, build_prompt


def tiny_model(family: str) -> torch.nn.Module:
    """A randomly initialised decoder of ``family`` with grouped-query attention, small enough to run in ms."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(
        family, vocab_size=96, hidden_size=64, intermediate_size=112, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512,
    )  # fmt: skip
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval()


def random_prompt(lengths: list[int], seed: int = 0) -> BlockPrompt:
    """Random token ids: a 7-token instruction, documents of ``lengths``, a 5-token query."""
    generator = torch.Generator().manual_seed(seed)

    def ids(n: int) -> tuple[int, ...]:
        return tuple(torch.randint(1, 96, (n,), generator=generator).tolist())

    return BlockPrompt(ids(7), tuple(ids(n) for n in lengths), ids(5), tuple(range(1, len(lengths) + 1)),
                       tuple("ABCDEFGH"[: len(lengths)]))  # fmt: skip


def dense_reference(model: torch.nn.Module, prompt: BlockPrompt) -> object:
    """The model's ordinary forward over the flat prompt with the explicit mask and the block position ids
    (eager attention: the only implementation that returns attention probabilities)."""
    allowed = prompt.allowed_mask()
    mask = torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)
    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")
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


def differences(model: torch.nn.Module, prompt: BlockPrompt, layers: list[int], probe: int) -> dict[str, float]:
    dense = dense_reference(model, prompt)
    with torch.no_grad():
        cold = BlockForward(model, TorchBlockBackend(), None, "m")(prompt, layers, probe, True, return_hidden=True)
        cache = DocumentKVCache(1 << 30)
        cached = BlockForward(model, TorchBlockBackend(), cache, "m")
        cached(prompt, layers, probe, need_logits=True)
        warm = cached(prompt, layers, probe, need_logits=True)
        early = cached(prompt, layers, probe)
        logits = model.lm_head(cold.hidden)
    mass = max(
        (cold.doc_attention[layer] - block_mass(dense.attentions[layer][0, :, -probe:].float(), prompt.doc_bounds()))
        .abs()
        .max()
        .item()
        for layer in layers
    )
    return {
        "logits_all_tokens": (logits - dense.logits[0]).abs().max().item(),
        "logits_last_token": (cold.last_logits - dense.logits[0, -1]).abs().max().item(),
        "attention_mass": mass,
        "warm_vs_cold_logits": (warm.last_logits - cold.last_logits).abs().max().item(),
        "warm_vs_cold_mass": max((warm.doc_attention[x] - cold.doc_attention[x]).abs().max().item() for x in layers),
        "early_exit_vs_full_mass": max(
            (early.doc_attention[x] - warm.doc_attention[x]).abs().max().item() for x in layers
        ),
        "early_exit_layers_run": early.layers_run,
        "warm_cached_docs": warm.cached_docs,
    }


def main() -> None:
    rows = {family: differences(tiny_model(family), random_prompt([6, 1, 9, 4]), [1, 2], 3) for family in
            ("llama", "qwen2", "mistral")}  # fmt: skip
    lm = load_llm("smollm2")
    template = PromptTemplate.for_tokenizer(lm.tokenizer)
    docs = ["Aspirin reduces the risk of heart attack.", "The cat sat on the mat for a while.", "", "Heart disease."]
    prompt = build_prompt(lm.tokenizer, template, "does aspirin prevent heart attacks", docs, list("ABCD"), [1] * 4, 32)
    rows["smollm2"] = differences(lm.model, prompt, [10, 15], 4)
    names = list(next(iter(rows.values())))
    print(f"{'model':<9}" + "".join(f"{name:>25}" for name in names))
    for model, row in rows.items():
        print(f"{model:<9}" + "".join(f"{row[name]:>25.3g}" for name in names))


if __name__ == "__main__":
    main()
