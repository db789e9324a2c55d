"""Reranking with the document KV cache cold and warm, per query: in process and over HTTP, in one run.

In process, for each of ``--queries`` queries: the ranker's document cache is emptied, the query is searched
(cold: every reranked document runs through the layers), then searched again (warm: the documents' keys and values
come from the cache and only the query blocks run). The rerank stage's milliseconds are read from the pipeline's
own stage timings. Over HTTP, a ``braid serve`` process on loopback gets each query twice in a row (``POST
/v1/search``); the first answer is cold except for documents an earlier query already reranked (counted and
reported), the second warm. Reported: p50 cold and warm, their ratio, and every query's pair. Usage:

    python -m benchmarks.rerank_cache --dataset scifact --pipeline bm25-first --queries 10 \\
        --output results/rerank_cache.json
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import time
from pathlib import Path

import httpx

from benchmarks.service_process import start_server, stop_server
from braid.common.atomic_file import atomic_write_text
from braid.common.dataset_resolver import resolve_dataset
from braid.pipelines.pipeline import Pipeline, load_pipeline, open_pipeline


def summary(pairs: list[dict]) -> dict:
    cold = statistics.median(pair["cold_ms"] for pair in pairs)
    warm = statistics.median(pair["warm_ms"] for pair in pairs)
    return {"cold_p50_ms": round(cold, 1), "warm_p50_ms": round(warm, 1), "cold_over_warm": round(cold / warm, 2)}


def cold_and_warm(pipeline: Pipeline, queries: list[str]) -> list[dict]:
    """Per query, the rerank stage's milliseconds with the document cache emptied (cold) and right after (warm)."""
    ranker = pipeline.reranker
    if ranker is None:
        raise SystemExit(f"pipeline {pipeline.name!r} does not rerank")
    pipeline.search_timed(queries[0], 10)  # model load and first-call costs out of the timings
    pairs = []
    for query in queries:
        ranker.cache.clear()
        _, cold = pipeline.search_timed(query, 10)
        _, warm = pipeline.search_timed(query, 10)
        pairs.append({"query": query, "cold_ms": round(cold["rerank"], 1), "warm_ms": round(warm["rerank"], 1)})
    return pairs


def in_process(args: argparse.Namespace, dataset, queries: list[str]) -> list[dict]:
    pipeline = open_pipeline(load_pipeline(args.pipeline), dataset, Path(args.index_dir), build_missing=False)
    try:
        return cold_and_warm(pipeline, queries)
    finally:
        pipeline.close()


def over_http(args: argparse.Namespace, queries: list[str]) -> list[dict]:
    serve = ["--dataset", args.dataset, "--index-dir", args.index_dir, "--pipelines", args.pipeline,
             *(["--data-dir", args.data_dir] if args.data_dir else [])]  # fmt: skip
    log = args.output.with_suffix(".server.log")
    process, addresses = start_server(serve, secrets.token_hex(16), log)
    pairs = []
    seen: set[str] = set()
    try:
        url = f"{addresses['http']}/v1/search"
        depth = load_pipeline(args.pipeline).rerank.depth
        with httpx.Client(timeout=600) as client:

            def ask(query: str) -> tuple[float, dict]:
                tick = time.perf_counter()
                response = client.post(url, json={"query": query, "k": depth, "pipeline": args.pipeline})
                response.raise_for_status()
                return (time.perf_counter() - tick) * 1000, response.json()

            ask("warm up the model")
            for query in queries:
                cold_ms, answer = ask(query)
                warm_ms, _ = ask(query)
                ids = [hit["doc_id"] for hit in answer["hits"]]
                pairs.append({"query": query, "cold_ms": round(cold_ms, 1), "warm_ms": round(warm_ms, 1),
                              "docs_seen_before": len(seen.intersection(ids))})  # fmt: skip
                seen.update(ids)
    finally:
        stop_server(process)
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="scifact")
    parser.add_argument("--split", default="test")
    parser.add_argument("--pipeline", default="bm25-first")
    parser.add_argument("--queries", type=int, default=10)
    parser.add_argument("--data-dir")
    parser.add_argument("--index-dir", default="indexes")
    parser.add_argument("--no-http", action="store_true", help="in process only")
    parser.add_argument("--output", type=Path, default=Path("results/rerank_cache.json"))
    args = parser.parse_args()
    dataset = resolve_dataset(args.dataset, args.data_dir)
    queries = list(dataset.judged_queries(args.split).values())[: args.queries]
    report = {"dataset": dataset.name, "pipeline": args.pipeline, "queries": len(queries)}
    report["in_process"] = {"pairs": in_process(args, dataset, queries)}
    report["in_process"].update(summary(report["in_process"]["pairs"]))
    if not args.no_http:
        report["http"] = {"pairs": over_http(args, queries)}
        report["http"].update(summary(report["http"]["pairs"]))
    print(f"{'where':<11} {'cold p50 ms':>12} {'warm p50 ms':>12} {'cold/warm':>10}")
    for where in ("in_process", "http"):
        if where in report:
            row = report[where]
            print(f"{where:<11} {row['cold_p50_ms']:>12.1f} {row['warm_p50_ms']:>12.1f} {row['cold_over_warm']:>9.2f}x")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.output, json.dumps(report, indent=1) + "\n")
    print(f"saved {args.output}")


if __name__ == "__main__":
    main()
