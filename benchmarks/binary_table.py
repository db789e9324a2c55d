"""Quality of binary codes against float exact search: one table over several datasets.

Rows: float exact (faiss IndexFlatIP over all-MiniLM-L6-v2), sign of the embedding (1 bit per dimension) and
recurrent binarization (BEBR) at 1, 2 and 4 bits per dimension, each without rescoring and with the top 100
rescored by the float embeddings. Usage:

    python -m benchmarks.binary_table --datasets scifact arguana nfcorpus-orig --output results/binary_table.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from braid.common.dataset_resolver import resolve_dataset
from braid.eval.runner import run_pipeline
from braid.pipelines.pipeline import PipelineSpec, open_pipeline, parse_retriever

CONFIGS = [("float exact", {"kind": "dense"}, 384 * 4)]
CONFIGS += [(f"sign 1 bit, rescore {r}", {"kind": "binary", "method": "sign", "rescore": r}, 48) for r in (0, 100)]
CONFIGS += [
    (f"recurrent {u} bit, rescore {r}", {"kind": "binary", "method": "recurrent", "bits": u, "rescore": r}, 48 * u)
    for u in (1, 2, 4)
    for r in (0, 100)
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["scifact", "arguana", "nfcorpus-orig"])
    parser.add_argument("--data-dir")
    parser.add_argument("--index-dir", default="indexes")
    parser.add_argument("--output", default="results/binary_table.json")
    args = parser.parse_args()
    rows = []
    print(f"{'dataset':<14} {'configuration':<28} {'nDCG@10':>8} {'R@100':>8} {'bytes/doc':>9}")
    for name in args.datasets:
        dataset = resolve_dataset(name, args.data_dir)
        for label, raw, bytes_per_doc in CONFIGS:
            spec = PipelineSpec(name=label, retrievers=(parse_retriever(raw, label),))
            pipeline = open_pipeline(spec, dataset, Path(args.index_dir))
            result = run_pipeline(pipeline, dataset, "test", latency_sample=0)
            row = {**result.to_json(), "configuration": label, "bytes_per_document": bytes_per_doc}
            rows.append(row)
            print(
                f"{name:<14} {label:<28} {row['ndcg@10']:>8.4f} {row['recall@100']:>8.4f} {bytes_per_doc:>9}",
                flush=True,
            )
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
