"""Sharded search equals unsharded search: per retriever, the top k of every query over N serving shards (merged in
one process) against the unsharded indexes of the same build job, and the fused pipelines' nDCG@10 both ways.

Reported per pipeline: queries whose top-k ids are identical, in order; the mean overlap of the two top-k sets; the
largest score difference over documents in both; nDCG@10 unsharded and sharded; p50 latency per query both ways
(one process, shards searched by threads). Usage, after ``braid index build --config
benchmarks/build_scifact_sharded.toml``:

    python -m benchmarks.sharded_search --dataset scifact --index-dir builds/scifact-sharded --shards 3 \\
        --pipelines bm25 dense splade slim binary multivector-pool2 hybrid --output results/sharded_search.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from braid.common.dataset_resolver import resolve_dataset
from braid.common.metrics import evaluate
from braid.pipelines.pipeline import load_pipeline, open_pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="scifact")
    parser.add_argument("--data-dir", help="datasets folder (default: $BRAID_DATA_DIR, else ./data)")
    parser.add_argument("--index-dir", type=Path, default=Path("builds/scifact-sharded"))
    parser.add_argument("--shards", type=int, default=3)
    parser.add_argument("--split", default="test")
    parser.add_argument("--k", type=int, default=100, help="depth compared (default: 100)")
    parser.add_argument("--pipelines", nargs="+", default=["bm25", "dense", "splade", "slim", "binary", "hybrid"])
    parser.add_argument("--output", type=Path, default=Path("results/sharded_search.json"))
    args = parser.parse_args()

    dataset = resolve_dataset(args.dataset, args.data_dir)
    qrels = dataset.qrels(args.split)
    queries = {qid: text for qid, text in dataset.queries().items() if qid in qrels}
    rows = []
    for name in args.pipelines:
        spec = load_pipeline(name)
        one = open_pipeline(spec, dataset, args.index_dir, build_missing=False)
        sharded = open_pipeline(spec, dataset, args.index_dir, build_missing=False, shards=args.shards)
        runs, latencies = [], []
        for pipeline in (one, sharded):
            pipeline.search(next(iter(queries.values())), args.k)  # first-query costs out of the timing
            run, seconds = {}, []
            for qid, query in queries.items():
                tick = time.perf_counter()
                run[qid] = pipeline.search(query, args.k)
                seconds.append(time.perf_counter() - tick)
            runs.append(run)
            latencies.append(round(statistics.median(seconds) * 1000, 2))
        identical = sum([h.doc_id for h in runs[0][q]] == [h.doc_id for h in runs[1][q]] for q in queries)
        overlap = statistics.mean(
            len({h.doc_id for h in runs[0][q]} & {h.doc_id for h in runs[1][q]}) / max(1, len(runs[0][q]))
            for q in queries
        )
        gap = 0.0
        for qid in queries:
            expected = {hit.doc_id: hit.score for hit in runs[0][qid]}
            gap = max([gap, *(abs(hit.score - expected[hit.doc_id]) for hit in runs[1][qid] if hit.doc_id in expected)])
        ndcg = [
            evaluate({q: {h.doc_id: h.score for h in hits} for q, hits in run.items()}, qrels).aggregate["ndcg@10"]
            for run in runs
        ]
        row = {
            "pipeline": name,
            "queries": len(queries),
            "identical_top_k": identical,
            "mean_overlap": round(overlap, 4),
            "max_score_diff": gap,
            "ndcg@10": round(ndcg[0], 4),
            "ndcg@10_sharded": round(ndcg[1], 4),
            "p50_ms": latencies[0],
            "p50_ms_sharded": latencies[1],
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
        one.close()
        sharded.close()
    print(f"\n{args.dataset} {args.split}, top {args.k}, {args.shards} shards vs unsharded (one process)")
    header = ("pipeline", "identical", "overlap", "max |d score|", "nDCG@10", "sharded", "p50 ms", "sharded")
    print(f"{header[0]:<18}" + "".join(f"{h:>14}" for h in header[1:]))
    for row in rows:
        cells = (
            f"{row['identical_top_k']}/{row['queries']}",
            row["mean_overlap"],
            f"{row['max_score_diff']:.1e}",
            row["ndcg@10"],
            row["ndcg@10_sharded"],
            row["p50_ms"],
            row["p50_ms_sharded"],
        )
        print(f"{row['pipeline']:<18}" + "".join(f"{c:>14}" for c in cells))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"rows": rows, "args": vars(args)}, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
