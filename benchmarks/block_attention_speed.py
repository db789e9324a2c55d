"""Every speed figure of the GPU ranking path in one run: one layer's attention, then whole-model scoring.

Speed does not depend on weights, so the model is randomly initialized with a real model's shape (default
``mistral-7b``: 32 layers, 32 query heads, 8 key/value heads, head dim 128, bf16) and the prompt is random
token ids laid out as BlockRank lays them out: an instruction, ``--docs`` documents of ``--doc-tokens`` tokens
each (lengths jittered by +-``--jitter`` so packing matters), a query block.

1. One layer's attention over the same prompt, three ways: causal SDPA over the flat prompt (what a listwise
   prompt costs without the block structure), torch ``flex_attention`` with the BlockRank block mask (compiled
   on GPU), and braid's Triton kernels (instruction + packed documents + query block, with the query block's
   attention mass on each document, which scoring reads).
2. The whole model: the ordinary dense forward (SDPA, causal, last-token logits only) against braid's
   block-sparse forward on the Triton backend, cold with every layer computed (FIRST logits), cold with early
   exit at two thirds of the depth (attention scoring), and with the document KV cache warm (only the query
   block runs); model FLOPs utilization for each against ``--peak-tflops``.

Medians of ``--repeats`` timed runs after a warm-up, ratios against the baselines measured in the same run.
On CPU, ``--preset tiny --dtype float32`` runs the whole script on a small Llama shape (set TRITON_INTERPRET=1
for the Triton rows: about ten seconds per layer call under the interpreter, or pass ``--backends flex torch
--model-backend torch``); it proves the script, not the speed. Usage (GPU):

    python -m benchmarks.block_attention_speed --docs 20 100 500 --output results/block_attention_speed.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

PRESETS = {
    # Mistral-7B-v0.1's shape.
    "mistral-7b": dict(
        model_type="mistral", vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=32768,
    ),
    # Small enough for CPU: proves the script end to end.
    "tiny": dict(
        model_type="llama", vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192,
    ),
}  # fmt: skip


def speed_ratio(baseline_ms: float, measured_ms: float) -> float:
    """baseline / measured to three significant figures: fixed decimals would print a real, very lopsided
    ratio (a stalled run on a loaded CPU) as 0.0."""
    return float(f"{baseline_ms / measured_ms:.3g}")


def median_ms(function: Callable[[], object], repeats: int, device: str, setup: Callable[[], object] | None = None):
    """Median wall milliseconds of ``function`` (GPU work synchronized), after one warm-up call."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    timings = []
    for attempt in range(repeats + 1):
        if setup is not None:
            setup()
        sync()
        start = time.perf_counter()
        with torch.inference_mode():
            function()
        sync()
        if attempt:
            timings.append((time.perf_counter() - start) * 1e3)
    return statistics.median(timings)


def random_prompt(config: object, docs: int, doc_tokens: int, jitter: int, seed: int):
    from braid.ranker.prompt_layout import BlockPrompt

    generator = torch.Generator().manual_seed(seed)

    def ids(n: int) -> tuple[int, ...]:
        return tuple(torch.randint(3, config.vocab_size, (n,), generator=generator).tolist())

    lengths = torch.randint(doc_tokens - jitter, doc_tokens + jitter + 1, (docs,), generator=generator).tolist()
    labels = tuple(f"D{i}" for i in range(docs))
    return BlockPrompt(ids(64), tuple(ids(n) for n in lengths), ids(40), tuple(range(3, 3 + docs)), labels)


def attention_rows(prompt, config, dtype, device: str, repeats: int, backends: list[str]) -> dict[str, float]:
    """One layer's attention over ``prompt`` (random q/k/v of the model's head layout), in ms."""
    from braid.ranker.attention_backend import get_backend

    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    dim = config.hidden_size // heads
    total = prompt.total_tokens
    scale = dim**-0.5
    generator = torch.Generator(device=device).manual_seed(0)
    q = torch.randn(1, heads, total, dim, device=device, dtype=dtype, generator=generator)
    k = torch.randn(1, kv_heads, total, dim, device=device, dtype=dtype, generator=generator)
    v = torch.randn(1, kv_heads, total, dim, device=device, dtype=dtype, generator=generator)
    n_inst, lengths = len(prompt.instruction), prompt.doc_lengths
    n_ctx = total - len(prompt.query)
    bounds = prompt.doc_bounds()
    row: dict[str, float] = {}

    def sdpa() -> None:
        torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=True)

    row["sdpa_causal_ms"] = median_ms(sdpa, repeats, device)
    if "flex" in backends:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        segments = prompt.segment_ids().to(device)
        last = len(lengths) + 1

        def blockrank(b, h, q_idx, kv_idx):  # flex's mask_mod signature
            same = segments[q_idx] == segments[kv_idx]
            return (kv_idx <= q_idx) & (same | (segments[kv_idx] == 0) | (segments[q_idx] == last))

        mask = create_block_mask(blockrank, None, None, total, total, device=device)
        flex = torch.compile(flex_attention) if device == "cuda" else flex_attention
        row["flex_block_mask_ms"] = median_ms(
            lambda: flex(q, k, v, block_mask=mask, scale=scale, enable_gqa=True), repeats, device
        )
    for name in (b for b in backends if b != "flex"):
        backend = get_backend(name)

        def blocks(backend=backend) -> None:
            backend.instruction(q[0, :, :n_inst], k[0, :, :n_inst], v[0, :, :n_inst], scale)
            docs = slice(n_inst, n_ctx)
            backend.documents(q[0, :, docs], k[0, :, :n_inst], v[0, :, :n_inst], k[0, :, docs], v[0, :, docs],
                              lengths, scale)  # fmt: skip
            backend.query(q[0, :, n_ctx:], k[0], v[0], bounds, scale, 2)

        row[f"{name}_blocks_ms"] = median_ms(blocks, repeats, device)
    base = row["sdpa_causal_ms"]
    for key in [key for key in row if key != "sdpa_causal_ms"]:
        row[key.replace("_ms", "_vs_sdpa")] = speed_ratio(base, row[key])
    if "flex_block_mask_ms" in row:
        for name in (b for b in backends if b != "flex"):
            row[f"{name}_vs_flex"] = speed_ratio(row["flex_block_mask_ms"], row[f"{name}_blocks_ms"])
    return row


def model_flops(config: object, tokens: int, attended_pairs: int, layers: int, lm_head_tokens: int) -> float:
    """Forward FLOPs: 2 x weights per token through ``layers`` layers, plus QK^T and PV over attended pairs."""
    hidden, inter = config.hidden_size, config.intermediate_size
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    dim = hidden // heads
    per_layer = hidden * (heads * dim) * 2 + hidden * (kv_heads * dim) * 2 + 3 * hidden * inter
    attention = 4 * attended_pairs * heads * dim
    return layers * (2 * per_layer * tokens + attention) + 2 * hidden * config.vocab_size * lm_head_tokens


def model_rows(model, prompt, config, device: str, repeats: int, backend: str, exit_layer: int, peak: float):
    from braid.ranker.attention_backend import get_backend
    from braid.ranker.block_forward import BlockForward
    from braid.ranker.doc_cache import DocumentKVCache

    layers = config.num_hidden_layers
    flat = prompt.flat_ids()[None].to(device)
    total = prompt.total_tokens
    allowed_pairs = _block_pairs(prompt)
    cold = BlockForward(model, get_backend(backend), None, "bench")
    cache = DocumentKVCache(1 << 40)
    warm = BlockForward(model, get_backend(backend), cache, "bench")
    row = {"docs": len(prompt.documents), "tokens": total}
    row["dense_ms"] = median_ms(lambda: model(flat, logits_to_keep=1), repeats, device)
    row["block_cold_ms"] = median_ms(lambda: cold(prompt, need_logits=True), repeats, device)
    row["block_early_exit_ms"] = median_ms(lambda: cold(prompt, [exit_layer], 2), repeats, device)
    warm(prompt, need_logits=True)  # fills the cache
    row["block_warm_ms"] = median_ms(lambda: warm(prompt, need_logits=True), repeats, device)
    row["cache_gb"] = round(cache.nbytes / 2**30, 2)
    for name in ("block_cold_ms", "block_early_exit_ms", "block_warm_ms"):
        row[name.replace("_ms", "_speedup")] = speed_ratio(row["dense_ms"], row[name])
    flops = {
        "dense": model_flops(config, total, total * (total + 1) // 2, layers, 1),
        "block_cold": model_flops(config, total, allowed_pairs, layers, 1),
        "block_early_exit": model_flops(config, total, allowed_pairs, exit_layer + 1, 0),
    }
    for name, value in flops.items():
        row[f"{name}_tflop"] = value / 1e12
        row[f"{name}_mfu"] = round(value / (row[f"{name}_ms"] / 1e3) / (peak * 1e12), 3)
    return row


def _block_pairs(prompt) -> int:
    """(query row, key) pairs the block-sparse pattern computes, causal halves included."""
    n_inst, n_query = len(prompt.instruction), len(prompt.query)
    pairs = n_inst * (n_inst + 1) // 2
    pairs += sum(n * n_inst + n * (n + 1) // 2 for n in prompt.doc_lengths)
    context = prompt.total_tokens - n_query
    return pairs + n_query * context + n_query * (n_query + 1) // 2


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="mistral-7b")
    parser.add_argument("--docs", type=int, nargs="+", default=[20, 100, 500])
    parser.add_argument("--doc-tokens", type=int, default=160)
    parser.add_argument("--jitter", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], default="bfloat16")
    parser.add_argument("--backends", nargs="+", default=["flex", "triton", "torch"],
                        help="attention rows: flex (baseline), triton, torch (the exact reference)")  # fmt: skip
    parser.add_argument("--model-backend", default="triton", help="attention backend of the whole-model rows")
    parser.add_argument("--skip-model", action="store_true", help="only the one-layer attention rows")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak (H100 SXM: 989)")
    parser.add_argument("--output", type=Path, default=Path("results/block_attention_speed.json"))
    args = parser.parse_args(argv)
    if any(count < 1 for count in args.docs) or args.jitter >= args.doc_tokens:
        parser.error("--docs must be >= 1 and --jitter smaller than --doc-tokens")
    from transformers import AutoConfig, AutoModelForCausalLM

    dtype = getattr(torch, args.dtype)
    preset = dict(PRESETS[args.preset])
    config = AutoConfig.for_model(preset.pop("model_type"), **preset)
    prompts = {count: random_prompt(config, count, args.doc_tokens, args.jitter, seed=count) for count in args.docs}

    attention = []
    for count, prompt in prompts.items():
        row = {"docs": count, "tokens": prompt.total_tokens}
        row.update(attention_rows(prompt, config, dtype, args.device, args.repeats, args.backends))
        attention.append(row)
        print(json.dumps(row), flush=True)

    models = []
    exit_layer = math.ceil(2 * config.num_hidden_layers / 3) - 1
    if not args.skip_model:
        torch.manual_seed(0)
        with torch.device(args.device):
            model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa").eval()
        model.requires_grad_(False)
        for prompt in prompts.values():
            row = model_rows(model, prompt, config, args.device, args.repeats, args.model_backend, exit_layer,
                             args.peak_tflops)  # fmt: skip
            models.append(row)
            print(json.dumps(row), flush=True)
        del model

    report = {
        "preset": args.preset,
        "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "dtype": args.dtype,
        "doc_tokens": args.doc_tokens,
        "jitter": args.jitter,
        "early_exit_layer": exit_layer,
        "layers": config.num_hidden_layers,
        "repeats": args.repeats,
        "attention": attention,
        "model": models,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print_tables(report)
    return report


def print_tables(report: dict) -> None:
    print(f"\none layer's attention ({report['preset']}, {report['dtype']}, {report['device']}), ms:")
    names = [key for key in report["attention"][0] if key.endswith("_ms")]
    ratios = [key for key in report["attention"][0] if "_vs_" in key]
    print(f"{'docs':>6} {'tokens':>7} " + " ".join(f"{n:>18}" for n in names + ratios))
    for row in report["attention"]:
        values = [f"{row[n]:>18.3f}" for n in names] + [f"{row[n]:>18.3g}" for n in ratios]
        print(f"{row['docs']:>6} {row['tokens']:>7} " + " ".join(values))
    if report["model"]:
        print(f"\nwhole model, ms (early exit after layer {report['early_exit_layer']} of {report['layers']}):")
        header = ["docs", "dense", "cold", "exit", "warm", "cold x", "exit x", "warm x", "MFU d", "MFU c", "MFU e"]
        print(" ".join(f"{name:>9}" for name in header))
        for row in report["model"]:
            values = [row["docs"], row["dense_ms"], row["block_cold_ms"], row["block_early_exit_ms"]]
            values += [row["block_warm_ms"], row["block_cold_speedup"], row["block_early_exit_speedup"]]
            values += [row["block_warm_speedup"], row["dense_mfu"], row["block_cold_mfu"], row["block_early_exit_mfu"]]
            print(" ".join(f"{v:>9.3f}" if isinstance(v, float) else f"{v:>9}" for v in values))


if __name__ == "__main__":
    main()
