"""JointRank against sliding windows on a long list: nDCG@10, walks through the model per query, latency.

The first stage's top ``--depth`` (100) per judged query is reranked twice by the same listwise ranker (FIRST by
default): in sliding windows (``window`` 20, ``stride`` 10, back to front: 9 sequential walks at depth 100) and by
JointRank (overlapping blocks, every document in ``--replicas`` blocks, all in one walk, block orders merged by
PageRank). The document KV cache is emptied before each list, so each is timed cold and neither strategy reuses the
other's documents. Prints nDCG@10 / MRR@10 with paired p-values against the first stage, walks per query and p50
latency; saves JSON and one TREC run per system. ``--limit`` takes the first N judged queries (say so when
reporting). Usage:

    python -m benchmarks.joint_rank --dataset trec-dl-2019-passage-pool --limit 12 --output results/joint_rank
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

from tqdm import tqdm

from braid.common.atomic_file import atomic_write_text
from braid.common.dataset_resolver import resolve_dataset
from braid.common.metrics import evaluate
from braid.common.trec_run import write_run
from braid.eval.significance import compare
from braid.pipelines.pipeline import load_pipeline, open_pipeline
from braid.ranker.rerank_spec import AGGREGATIONS, RerankSpec
from braid.ranker.reranker import BlockRanker


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="trec-dl-2019-passage-pool")
    parser.add_argument("--pipeline", default="bm25", help="first stage")
    parser.add_argument("--split", default="test")
    parser.add_argument("--depth", type=int, default=100, help="documents reranked per query")
    parser.add_argument("--mode", default="first", choices=["first", "attention"], help="listwise scoring")
    parser.add_argument("--window", type=int, default=20)
    parser.add_argument("--stride", type=int, default=10)
    parser.add_argument("--replicas", type=int, default=2, help="JointRank: blocks each document sits in")
    parser.add_argument("--aggregation", default="pagerank", choices=AGGREGATIONS)
    parser.add_argument("--max-doc-tokens", type=int, default=128)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--limit", type=int, default=0, help="only the first N judged queries (0: all)")
    parser.add_argument("--data-dir")
    parser.add_argument("--index-dir", type=Path, default=Path("indexes"))
    parser.add_argument("--output", type=Path, default=Path("results/joint_rank"))
    args = parser.parse_args(argv)

    dataset = resolve_dataset(args.dataset, args.data_dir)
    pipeline = open_pipeline(load_pipeline(args.pipeline), dataset, args.index_dir, build_missing=False)
    queries = dataset.judged_queries(args.split)
    if args.limit:
        queries = dict(itertools.islice(queries.items(), args.limit))
    first_stage = pipeline.batch_search(queries, args.depth + 1)
    candidates = {qid: [hit.doc_id for hit in first_stage[qid] if hit.doc_id != qid][: args.depth] for qid in queries}
    texts = {doc_id: pipeline.document_text(doc_id) or "" for hits in candidates.values() for doc_id in hits}
    pipeline.close()

    base = RerankSpec(
        model=args.model, mode=args.mode, depth=args.depth, window=args.window, stride=args.stride,
        max_doc_tokens=args.max_doc_tokens, replicas=args.replicas, aggregation=args.aggregation,
    )  # fmt: skip
    sliding = BlockRanker(base)
    rankers = {
        "sliding": sliding,
        "jointrank": BlockRanker(dataclasses.replace(base, long_lists="jointrank"), sliding.lm),
    }
    runs: dict[str, dict[str, dict[str, float]]] = {
        "first-stage": {qid: {doc_id: float(len(hits) - rank) for rank, doc_id in enumerate(hits)}
                        for qid, hits in candidates.items()}
    }  # fmt: skip
    timings: dict[str, list[float]] = {name: [] for name in rankers}
    walks: dict[str, list[int]] = {name: [] for name in rankers}
    sliding.rerank("warm up", [("a", "one"), ("b", "two")])  # first-call costs out of the timings
    for name, ranker in rankers.items():
        runs[name] = {}
        for qid, text in tqdm(queries.items(), desc=name, unit="q", file=sys.stderr):
            docs = [(doc_id, texts[doc_id]) for doc_id in candidates[qid]]
            ranker.cache.clear()
            before, tick = ranker.forward.walks, time.perf_counter()
            ranked = ranker.rerank(text, docs)
            timings[name].append((time.perf_counter() - tick) * 1000)
            walks[name].append(ranker.forward.walks - before)
            runs[name][qid] = {doc_id: float(len(ranked) - rank) for rank, (doc_id, _) in enumerate(ranked)}

    qrels = {qid: docs for qid, docs in dataset.known_qrels(args.split).items() if qid in queries}
    evaluations = {name: evaluate(run, qrels, dataset.default_rel_threshold) for name, run in runs.items()}
    report = {"dataset": dataset.name, "first_stage": args.pipeline, "queries": len(queries),
              "ranker": base.to_dict(), "systems": {}}  # fmt: skip
    print(f"{dataset.name}: {len(queries)} queries, {args.pipeline} top {args.depth}, {args.mode} scoring")
    print(f"{'system':<12} {'nDCG@10':>8} {'MRR@10':>8} {'p(nDCG)':>8} {'walks/q':>8} {'p50 ms':>9}")
    args.output.mkdir(parents=True, exist_ok=True)
    for name, evaluation in evaluations.items():
        p_values = compare(evaluations["first-stage"], evaluation) if name != "first-stage" else {}
        row = {"metrics": evaluation.aggregate, "p_vs_first_stage": p_values}
        if name in rankers:
            row.update(walks_per_query=statistics.mean(walks[name]), latency_ms_p50=statistics.median(timings[name]))
        report["systems"][name] = row
        write_run(args.output / f"{name}.trec", runs[name], f"{args.pipeline}+{name}")
        agg = evaluation.aggregate
        p_text = f"{p_values['ndcg@10']:.3g}" if p_values else "-"
        walks_text = f"{row['walks_per_query']:.1f}" if name in rankers else "-"
        latency_text = f"{row['latency_ms_p50']:.0f}" if name in rankers else "-"
        print(f"{name:<12} {agg['ndcg@10']:>8.4f} {agg['mrr@10']:>8.4f} {p_text:>8} {walks_text:>8} {latency_text:>9}")
    atomic_write_text(args.output / "report.json", json.dumps(report, indent=1) + "\n")
    print(f"saved {args.output / 'report.json'}")
    return report


if __name__ == "__main__":
    main()
