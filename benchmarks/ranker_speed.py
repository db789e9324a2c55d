"""Time of one BlockRank prompt against a dense full-attention forward over the same text, in the same run.

For each document count: the block-sparse forward cold (no cache), cold with early exit at the scoring layer
(attention mode), warm (every document's keys and values already cached: only the query block runs), and the
model's ordinary forward over the same tokens with causal attention and ordinary positions (SDPA), which is
what a listwise prompt costs without the block structure. Beside them, the rerank stage a shipped pipeline runs
(``--stage``, default ``bm25-first``: query likelihood, one prompt per document, all in one walk) over the same
documents through :class:`~braid.ranker.reranker.BlockRanker`, cold (its document cache emptied first) and warm.
Documents are real passages (scifact), cut to ``--doc-tokens``. Median of ``--repeats`` runs after one warm-up;
speedups are against the dense forward.

Several ``--dtype`` values load the model once per dtype and interleave their runs (every measurement of every
dtype once per round), so that a shared machine's drift falls on all of them alike; the report then carries each
measurement's ratio of the first dtype's time over every other's (``float32`` over ``bfloat16``: the speedup of
bfloat16 on a CPU that computes it natively), and each round's own ratio (the two ran back to back), low to high.
Usage:

    python -m benchmarks.ranker_speed --docs 20 100 --doc-tokens 64 --output results/ranker_speed.json
    python -m benchmarks.ranker_speed --docs 20 --doc-tokens 128 --dtype float32 bfloat16 --repeats 7
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from braid.common.dataset_resolver import resolve_dataset
from braid.pipelines.spec import load_pipeline
from braid.ranker.attention_backend import get_backend
from braid.ranker.block_forward import BlockForward
from braid.ranker.doc_cache import DocumentKVCache
from braid.ranker.identifiers import IdentifierScheme
from braid.ranker.llm_source import DTYPES, LoadedLM, load_llm
from braid.ranker.prompt_layout import PromptTemplate, build_prompt
from braid.ranker.reranker import BlockRanker

MEASURES = ("dense_s", "block_cold_s", "block_cold_early_exit_s", "block_warm_s", "stage_cold_s", "stage_warm_s")
QUERY = "does aspirin prevent heart attacks"


def prompt_runs(
    lm: LoadedLM, prompt: object, backend: object, layer: int, device: str, stage: BlockRanker, docs: list
) -> tuple[dict, DocumentKVCache]:
    """One callable per measurement (each runs once, synchronized), and the document cache the warm one reads.

    ``stage`` reranks ``docs`` ((id, text) pairs) as a pipeline's rerank stage does."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    cache = DocumentKVCache(8 << 30)
    cold = BlockForward(lm.model, backend, None, lm.key)
    warm = BlockForward(lm.model, backend, cache, lm.key)
    flat = prompt.flat_ids()[None].to(device)

    def run(function: Callable[[], object]) -> Callable[[], None]:
        def call() -> None:
            with torch.inference_mode():
                function()
            sync()

        return call

    runs = {
        "dense_s": run(lambda: lm.model(flat)),
        "block_cold_s": run(lambda: cold(prompt, need_logits=True)),
        "block_cold_early_exit_s": run(lambda: cold(prompt, [layer], 8)),
        "block_warm_s": run(lambda: warm(prompt, need_logits=True)),  # its warm-up run fills the cache
        "stage_cold_s": run(lambda: (stage.cache.clear(), stage.rerank(QUERY, docs))),
        "stage_warm_s": run(lambda: stage.rerank(QUERY, docs)),  # runs after stage_cold, which fills the cache
    }
    return runs, cache


def interleaved_times(
    runs: dict[str, dict[str, Callable[[], None]]], repeats: int
) -> dict[str, dict[str, list[float]]]:
    """Seconds of each run of ``runs[dtype][measure]``: one warm-up each, then ``repeats`` rounds in which every
    measurement of every dtype runs once, the dtypes one after the other, their order reversed every other round
    (so that neither always runs first, right after the other's allocations)."""
    for per_dtype in runs.values():
        for call in per_dtype.values():
            call()
    timings: dict[str, dict[str, list[float]]] = {dtype: {m: [] for m in MEASURES} for dtype in runs}
    for round_ in range(repeats):
        order = list(runs) if round_ % 2 == 0 else list(reversed(runs))
        for measure in MEASURES:
            for dtype in order:
                start = time.perf_counter()
                runs[dtype][measure]()
                timings[dtype][measure].append(time.perf_counter() - start)
    return timings


def round_ratios(timings: dict[str, dict[str, list[float]]], dtypes: list[str], docs: int) -> dict[str, list[float]]:
    """Per measurement, the first dtype's time over each other's within each round (the two ran back to back), low
    to high: how far a shared machine's drift moves the ratio the report quotes (a ratio of medians)."""
    base, ratios = dtypes[0], {}
    for other in dtypes[1:]:
        for name in MEASURES:
            pairs = zip(timings[base][name], timings[other][name], strict=True)
            ratios[ratio_key(name, base, other, docs)] = sorted(round(a / b, 3) for a, b in pairs)
    return ratios


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--dataset", default="scifact")
    parser.add_argument("--docs", type=int, nargs="+", default=[20, 100])
    parser.add_argument("--doc-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", nargs="+", default=["float32"], choices=list(DTYPES), help="interleaved if several")
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--stage", default="bm25-first", help="the pipeline whose rerank stage is timed")
    parser.add_argument("--output", type=Path, default=Path("results/ranker_speed.json"))
    args = parser.parse_args(argv)
    if len(set(args.dtype)) != len(args.dtype):
        parser.error(f"--dtype lists a dtype twice: {' '.join(args.dtype)}")
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")

    stage_spec = load_pipeline(args.stage).rerank
    if stage_spec is None:
        parser.error(f"--stage {args.stage} has no rerank stage")
    lms = {dtype: load_llm(args.model, dtype, args.device) for dtype in args.dtype}
    first = lms[args.dtype[0]]
    tokenizer = first.tokenizer
    layer = first.model.config.num_hidden_layers // 2
    corpus = resolve_dataset(args.dataset).iter_corpus()
    docs = [(doc.doc_id, doc.contents) for doc in itertools.islice(corpus, max(args.docs))]
    texts = [text for _, text in docs]
    scheme = IdentifierScheme.for_tokenizer(tokenizer)
    template = PromptTemplate.for_tokenizer(tokenizer)
    backend = get_backend(args.backend)
    rows, per_round = [], {}
    for count in args.docs:
        ids = scheme.take(count)
        prompt = build_prompt(
            tokenizer,
            template,
            QUERY,
            texts[:count],
            ids.labels,
            ids.token_ids,
            args.doc_tokens,
        )
        runs, caches = {}, {}
        for dtype, lm in lms.items():
            # The stage as its pipeline runs it (its score head included), on this run's model, device, backend and
            # document cut.
            spec = replace(
                stage_spec, model=args.model, head=stage_spec.head or stage_spec.model, dtype=dtype,
                device=args.device, backend=args.backend, max_doc_tokens=args.doc_tokens,
                cache_mb=max(stage_spec.cache_mb, 1024),  # warm needs a cache
            )  # fmt: skip
            stage = BlockRanker(spec, lm)
            runs[dtype], caches[dtype] = prompt_runs(lm, prompt, backend, layer, args.device, stage, docs[:count])
        timings = interleaved_times(runs, args.repeats)
        medians = {dtype: {m: statistics.median(t) for m, t in per.items()} for dtype, per in timings.items()}
        per_round.update(round_ratios(timings, args.dtype, count))
        for dtype in args.dtype:
            row = {"dtype": dtype, "docs": len(prompt.documents), "tokens": prompt.total_tokens, **medians[dtype]}
            row["cache_mb"] = round(caches[dtype].nbytes / 2**20, 1)
            for name in MEASURES[1:4]:
                row[name.replace("_s", "_speedup")] = round(row["dense_s"] / row[name], 2)
            row["doc_tokens"] = args.doc_tokens
            rows.append(row)
            print(json.dumps(row), flush=True)
    report = {
        "model": args.model,
        "device": args.device,
        "dtype": args.dtype[0] if len(args.dtype) == 1 else args.dtype,
        "threads": torch.get_num_threads(),
        "early_exit_layer": layer,
        "repeats": args.repeats,
        "rows": rows,
        "ratios": dtype_ratios(rows, args.dtype),
        "round_ratios": per_round,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2))
    header = ["dtype", "docs", "tokens", "dense s", "cold s", "exit s", "warm s", "cold x", "exit x", "warm x"]
    header += ["stage cold s", "stage warm s"]
    widths = [max(8, len(name)) for name in header]
    print(" ".join(f"{name:>{width}}" for name, width in zip(header, widths, strict=True)))
    for r in rows:
        values = [r["dtype"], r["docs"], r["tokens"], r["dense_s"], r["block_cold_s"], r["block_cold_early_exit_s"]]
        values += [r["block_warm_s"], r["block_cold_speedup"], r["block_cold_early_exit_speedup"]]
        values += [r["block_warm_speedup"], r["stage_cold_s"], r["stage_warm_s"]]
        cells = [f"{v:>{w}.3f}" if isinstance(v, float) else f"{v:>{w}}" for v, w in zip(values, widths, strict=True)]
        print(" ".join(cells))
    for name, value in report["ratios"].items():
        rounds = per_round.get(name)
        print(f"{name}: {value}" + (f" (rounds {rounds[0]} .. {rounds[-1]})" if rounds else ""))
    return report


def dtype_ratios(rows: list[dict], dtypes: list[str]) -> dict[str, float]:
    """Per document count and measurement, the first dtype's median time over each other dtype's (> 1: faster)."""
    base, ratios = dtypes[0], {}
    by_key = {(row["dtype"], row["docs"]): row for row in rows}
    for docs in dict.fromkeys(row["docs"] for row in rows):
        for other in dtypes[1:]:
            for name in MEASURES:
                ratio = by_key[base, docs][name] / by_key[other, docs][name]
                ratios[ratio_key(name, base, other, docs)] = round(ratio, 3)
    return ratios


def ratio_key(measure: str, base: str, other: str, docs: int) -> str:
    """The report's name for ``measure``'s ``base`` / ``other`` ratio at ``docs`` documents."""
    return f"{measure[:-2]}_{base}_over_{other}_{docs}docs"


if __name__ == "__main__":
    main()
