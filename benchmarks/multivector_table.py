"""Pooled multi-vector retrieval: one table over datasets, pool factors 1-4, MaxSim and XTR scoring.

Each row: vectors (pooled tokens) stored, bytes on disk of the index, nDCG@10, Recall@100 (runs of depth 100)
and single-query p50 latency, for all-MiniLM-L6-v2 token embeddings. Token embeddings are encoded once per
dataset and shared by the four pool factors. Usage:

    python -m benchmarks.multivector_table --datasets scifact arguana nfcorpus-orig \\
        --output results/multivector_table.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from braid.common.dataset_resolver import resolve_dataset
from braid.eval.runner import run_pipeline
from braid.indexer.manifest import Manifest
from braid.indexer.multivector_index import POOL_FACTORS, MultiVectorStore
from braid.pipelines.pipeline import PipelineSpec, open_pipeline, parse_retriever


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["scifact", "arguana", "nfcorpus-orig"])
    parser.add_argument("--pool-factors", nargs="+", type=int, default=list(POOL_FACTORS))
    parser.add_argument("--modes", nargs="+", default=["maxsim", "xtr"])
    parser.add_argument("--latency-sample", type=int, default=50)
    parser.add_argument(
        "--search",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="search parameters for every row, e.g. nprobe=16 candidates=2048 token_k=4000 prefilter=1024 (integers)",
    )
    parser.add_argument("--data-dir")
    parser.add_argument("--index-dir", default="indexes")
    parser.add_argument("--output", default="results/multivector_table.json")
    args = parser.parse_args()
    search = {}
    for item in args.search:
        key, _, value = item.partition("=")
        if key not in ("nprobe", "candidates", "token_k", "prefilter") or not value.isdigit():
            parser.error(f"--search takes nprobe=N, candidates=N, token_k=N or prefilter=N, got {item!r}")
        search[key] = int(value)
    rows = []
    header = (
        f"{'dataset':<14} {'pool':>4} {'mode':<7} {'vectors':>9} {'MB':>7} {'nDCG@10':>8} {'R@100':>7} {'p50 ms':>7}"
    )
    print(header)
    for name in args.datasets:
        dataset = resolve_dataset(name, args.data_dir)
        for factor in args.pool_factors:
            for mode in args.modes:
                label = f"multivector pool {factor} {mode}"
                raw = {"kind": "multivector", "pool_factor": factor, "mode": mode, **search}
                spec = PipelineSpec(name=label, retrievers=(parse_retriever(raw, label),))
                pipeline = open_pipeline(spec, dataset, Path(args.index_dir))
                result = run_pipeline(pipeline, dataset, "test", depth=100, latency_sample=args.latency_sample)
                path = pipeline.index_paths[0]
                vectors = len(MultiVectorStore(path).matrix)
                row = {
                    **result.to_json(),
                    "pool_factor": factor,
                    "mode": mode,
                    "search": search,
                    "vectors": vectors,
                    "bytes_on_disk": Manifest.read(path).index_bytes,
                }
                rows.append(row)
                print(
                    f"{name:<14} {factor:>4} {mode:<7} {vectors:>9} {row['bytes_on_disk'] / 1e6:>7.1f} "
                    f"{row['ndcg@10']:>8.4f} {row['recall@100']:>7.4f} {row['latency_ms_p50']:>7.2f}",
                    flush=True,
                )
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
