"""Time of one BlockRank prompt against a dense full-attention forward over the same text, in the same run.

For each document count: the block-sparse forward cold (no cache), cold with early exit at the scoring layer
(attention mode), warm (every document's keys and values already cached: only the query block runs), and the
model's ordinary forward over the same tokens with causal attention and ordinary positions (SDPA), which is
what a listwise prompt costs without the block structure. Documents are real passages (scifact), cut to
``--doc-tokens``. Median of ``--repeats`` runs after one warm-up; ratios are against the dense forward. Usage:

    python -m benchmarks.ranker_speed --docs 20 100 --doc-tokens 64 --output results/ranker_speed.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from braid.common.dataset_resolver import resolve_dataset
from braid.ranker.attention_backend import get_backend
from braid.ranker.block_forward import BlockForward
from braid.ranker.doc_cache import DocumentKVCache
from braid.ranker.identifiers import IdentifierScheme
from braid.ranker.llm_source import load_llm
from braid.ranker.prompt_layout import PromptTemplate, build_prompt


def median_s(function: Callable[[], object], repeats: int, setup: Callable[[], object] | None = None) -> float:
    if setup:
        setup()
    function()  # warm-up
    timings = []
    for _ in range(repeats):
        if setup:
            setup()
        start = time.perf_counter()
        function()
        timings.append(time.perf_counter() - start)
    return statistics.median(timings)


def time_prompt(
    model: torch.nn.Module, prompt: object, backend: object, key: str, layer: int, repeats: int, device: str
) -> dict:
    """Median seconds of the dense forward and of the block-sparse forward cold, early-exit and warm."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    cache = DocumentKVCache(8 << 30)
    cold = BlockForward(model, backend, None, key)
    warm = BlockForward(model, backend, cache, key)
    flat = prompt.flat_ids()[None].to(device)

    def timed(function: Callable[[], object]) -> float:
        def call() -> None:
            with torch.inference_mode():
                function()
            sync()

        return median_s(call, repeats)

    row = {"docs": len(prompt.documents), "tokens": prompt.total_tokens}
    row["dense_s"] = timed(lambda: model(flat))
    row["block_cold_s"] = timed(lambda: cold(prompt, need_logits=True))
    row["block_cold_early_exit_s"] = timed(lambda: cold(prompt, [layer], 8))
    row["block_warm_s"] = timed(lambda: warm(prompt, need_logits=True))
    row["cache_mb"] = round(cache.nbytes / 2**20, 1)
    for name in ("block_cold_s", "block_cold_early_exit_s", "block_warm_s"):
        row[name.replace("_s", "_speedup")] = round(row["dense_s"] / row[name], 2)
    return row


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--dataset", default="scifact")
    parser.add_argument("--docs", type=int, nargs="+", default=[20, 100])
    parser.add_argument("--doc-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--output", type=Path, default=Path("results/ranker_speed.json"))
    args = parser.parse_args(argv)

    lm = load_llm(args.model, args.dtype, args.device)
    tokenizer, model = lm.tokenizer, lm.model
    layer = model.config.num_hidden_layers // 2
    corpus = resolve_dataset(args.dataset).iter_corpus()
    texts = [doc.contents for doc in itertools.islice(corpus, max(args.docs))]
    scheme = IdentifierScheme.for_tokenizer(tokenizer)
    template = PromptTemplate.for_tokenizer(tokenizer)
    rows = []
    for count in args.docs:
        ids = scheme.take(count)
        prompt = build_prompt(
            tokenizer,
            template,
            "does aspirin prevent heart attacks",
            texts[:count],
            ids.labels,
            ids.token_ids,
            args.doc_tokens,
        )
        row = time_prompt(model, prompt, get_backend(args.backend), lm.key, layer, args.repeats, args.device)
        row["doc_tokens"] = args.doc_tokens
        rows.append(row)
        print(json.dumps(row), flush=True)
    report = {
        "model": args.model,
        "device": args.device,
        "dtype": args.dtype,
        "threads": torch.get_num_threads(),
        "early_exit_layer": layer,
        "rows": rows,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2))
    header = ["docs", "tokens", "dense s", "cold s", "exit s", "warm s", "cold x", "exit x", "warm x"]
    print(" ".join(f"{name:>8}" for name in header))
    for r in rows:
        values = [r["docs"], r["tokens"], r["dense_s"], r["block_cold_s"], r["block_cold_early_exit_s"]]
        values += [r["block_warm_s"], r["block_cold_speedup"], r["block_cold_early_exit_speedup"]]
        values += [r["block_warm_speedup"]]
        print(" ".join(f"{v:>8.3f}" if isinstance(v, float) else f"{v:>8}" for v in values))
    return report


if __name__ == "__main__":
    main()
