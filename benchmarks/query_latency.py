"""Query latency of pipelines against BM25, measured in one run: what the fast-query-path targets are read from.

For each pipeline, on the same split's queries and in this one process (so the ratios share the machine's state):
single-query latency p50/p99 at k = 100 over ``--queries`` queries (after ``--warmup`` untimed ones), each stage's
p50 (``retriever.NAME``, ``fusion``, ``cascade.NAME``, ``rerank``), batch queries/s over every judged query of the
split at depth 1000 (what ``braid eval`` reports), and nDCG@10; for a reranking pipeline, also the rerank stage
cold (document KV cache emptied) and warm per query over ``--rerank-queries`` queries. Then, for every pipeline but
the baseline, the ratios the targets are stated in: p50 / baseline p50, own p99 / own p50, batch queries/s /
baseline's. Usage:

    python -m benchmarks.query_latency --dataset scifact --pipelines bm25 dense splade hybrid \\
        --output results/query_latency.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from benchmarks.rerank_cache import cold_and_warm, summary
from braid.common.atomic_file import atomic_write_text
from braid.common.dataset_resolver import resolve_dataset
from braid.eval.runner import RunResult, run_pipeline
from braid.pipelines.pipeline import load_pipeline, open_pipeline


def measure(name: str, args: argparse.Namespace, dataset) -> tuple[RunResult, dict | None]:
    """The pipeline's run (quality, latency, stages) and, for a reranking pipeline, its rerank cache cold/warm."""
    pipeline = open_pipeline(load_pipeline(name), dataset, Path(args.index_dir), build_missing=not args.no_build)
    try:
        texts = list(dataset.judged_queries(args.split).values())
        for text in texts[: args.warmup]:
            pipeline.search_timed(text, min(100, pipeline.doc_count))  # models, JIT paths and caches warm
        result = run_pipeline(pipeline, dataset, args.split, latency_sample=args.queries)
        cache = None
        if pipeline.reranker is not None and args.rerank_queries:
            pairs = cold_and_warm(pipeline, texts[: args.rerank_queries])
            cache = {**summary(pairs), "pairs": pairs}
        return result, cache
    finally:
        pipeline.close()


def ratios(row: dict, baseline: dict) -> dict[str, float]:
    return {
        "p50_vs_baseline_p50": round(row["latency_ms_p50"] / baseline["latency_ms_p50"], 2),
        "p99_vs_own_p50": round(row["latency_ms_p99"] / row["latency_ms_p50"], 2),
        "batch_qps_vs_baseline": round(row["queries_per_s"] / baseline["queries_per_s"], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="scifact")
    parser.add_argument("--split", default="test")
    parser.add_argument("--pipelines", nargs="+", default=["bm25", "dense", "splade", "hybrid"])
    parser.add_argument("--baseline", default="bm25", help="pipeline the ratios are taken against (default: bm25)")
    parser.add_argument("--queries", type=int, default=100, help="queries timed one by one (default: 100)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument(
        "--rerank-queries",
        type=int,
        default=8,
        help="queries whose rerank stage is timed with the document cache cold, then warm (reranking pipelines)",
    )
    parser.add_argument("--data-dir")
    parser.add_argument("--index-dir", default="indexes")
    parser.add_argument("--no-build", action="store_true", help="fail instead of building a missing index")
    parser.add_argument("--output", default="results/query_latency.json")
    args = parser.parse_args()
    names = list(dict.fromkeys([args.baseline, *args.pipelines]))
    dataset = resolve_dataset(args.dataset, args.data_dir)
    rows = {}
    for name in names:
        result, cache = measure(name, args, dataset)
        rows[name] = {**result.to_json(), "stage_p50_ms": {s: v["p50"] for s, v in result.stage_latency_ms.items()}}
        if cache is not None:
            rows[name]["rerank_cache"] = cache
    baseline = rows[args.baseline]
    print(f"{'pipeline':<12} {'nDCG@10':>8} {'p50 ms':>8} {'p99 ms':>8} {'batch q/s':>10}  stage p50 ms")
    for name, row in rows.items():
        stages = ", ".join(f"{stage} {ms:.1f}" for stage, ms in row["stage_p50_ms"].items())
        print(
            f"{name:<12} {row['ndcg@10']:>8.4f} {row['latency_ms_p50']:>8.1f} {row['latency_ms_p99']:>8.1f} "
            f"{row['queries_per_s']:>10.1f}  {stages}"
        )
    print(f"\nratios against {args.baseline} (same run): p50 / {args.baseline} p50, p99 / own p50, batch q/s share")
    for name, row in rows.items():
        if name != args.baseline:
            row["ratios"] = ratios(row, baseline)
            r = row["ratios"]
            print(
                f"{name:<12} {r['p50_vs_baseline_p50']:>6.2f}x  {r['p99_vs_own_p50']:>6.2f}x  "
                f"{r['batch_qps_vs_baseline']:>6.2f}"
            )
    cached = {name: row["rerank_cache"] for name, row in rows.items() if "rerank_cache" in row}
    if cached:
        print("\nrerank stage with the document KV cache, per query (p50 over the same queries)")
        print(f"{'pipeline':<16} {'cold ms':>9} {'warm ms':>9} {'cold/warm':>10}")
        for name, row in cached.items():
            print(f"{name:<16} {row['cold_p50_ms']:>9.1f} {row['warm_p50_ms']:>9.1f} {row['cold_over_warm']:>9.2f}x")
    report = {
        "dataset": dataset.name,
        "split": args.split,
        "baseline": args.baseline,
        "timed_queries": args.queries,
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "pipelines": rows,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(args.output), json.dumps(report, indent=1) + "\n")
    print(f"saved {args.output}")


if __name__ == "__main__":
    main()
