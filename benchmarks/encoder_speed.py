"""Encoder throughput on each runtime, side by side on the same documents in one run.

For each encoder (MiniLM dense embeddings, SPLADE-tiny term weights, MiniLM token vectors) and each runtime
(``torch``: eager PyTorch, the baseline; ``onnx``: ONNX Runtime float32; ``onnx-int8``: dynamic int8 weights;
``openvino``: OpenVINO, bfloat16 matrix products where the CPU has them, the default), the
same ``--documents`` documents of the dataset are encoded as an index build encodes them (its batch size and
length limit), and ``--queries`` queries are encoded one at a time as the query path does. SPLADE is first also
run with sentence-transformers' stock pooling on eager PyTorch (``torch-stock``), the baseline of its ratios.
Reported: documents/s and its ratio to the baseline, single-query p50 and its ratio, and, against the baseline's
outputs on the same documents, the mean cosine (dense, tokens) or 1 - the mean relative L1 difference of the term
weights (SPLADE). Retrieval quality per runtime is ``braid eval`` with ``BRAID_ENCODER_RUNTIME`` set (int8 builds
its own index folders). Usage:

    python -m benchmarks.encoder_speed --dataset scifact --documents 1000 --output results/encoder_speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from itertools import islice
from pathlib import Path

import numpy as np

from braid.common.dataset_resolver import resolve_dataset
from braid.indexer.dense_encoder import DenseEncoder
from braid.indexer.onnx_transformer import RUNTIMES
from braid.indexer.splade_encoder import SpladeEncoder
from braid.indexer.token_encoder import TokenEncoder

ENCODERS = {
    "dense": (DenseEncoder, lambda encoder, texts: encoder.encode(texts), lambda encoder, texts: encoder.encode(texts)),
    "splade": (
        SpladeEncoder,
        lambda encoder, texts: encoder.encode_documents(texts, progress=False),
        lambda encoder, texts: encoder.encode_queries(texts),
    ),
    "tokens": (
        TokenEncoder,
        lambda encoder, texts: encoder.encode_documents(texts),
        lambda encoder, texts: encoder.encode_queries(texts),
    ),
}


# Baselines measured before the runtimes, where an encoder's own code also changed: SPLADE with
# sentence-transformers' stock pooling (the tokens x vocabulary logit tensor) on eager PyTorch.
STOCK = {"splade": lambda: SpladeEncoder(pool_early=False)}


def agreement(name: str, outputs, reference) -> float:
    """Cosine to the baseline's vectors (dense, tokens), or 1 - relative L1 distance of the term weights (splade)."""
    if name == "dense":
        return float(np.mean(np.sum(outputs * reference, axis=1)))
    if name == "tokens":
        return float(np.mean([np.mean(np.sum(a * b, axis=1)) for a, b in zip(outputs, reference, strict=True)]))
    distances = []
    for terms, base in zip(outputs, reference, strict=True):
        keys = terms.keys() | base.keys()
        difference = sum(abs(terms.get(key, 0.0) - base.get(key, 0.0)) for key in keys)
        distances.append(difference / max(sum(base.values()), 1e-9))
    return 1.0 - float(np.mean(distances))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="scifact")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--documents", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--encoders", nargs="+", default=list(ENCODERS), choices=list(ENCODERS))
    parser.add_argument("--runtimes", nargs="+", default=list(RUNTIMES), choices=list(RUNTIMES))
    parser.add_argument("--output", default="results/encoder_speed.json")
    args = parser.parse_args()
    if args.runtimes[0] != "torch":
        args.runtimes = ["torch", *[runtime for runtime in args.runtimes if runtime != "torch"]]
    dataset = resolve_dataset(args.dataset, args.data_dir)
    texts = [document.contents for document in islice(dataset.iter_corpus(), args.documents)]
    queries = list(dataset.queries().values())[: args.queries]
    print(f"{dataset.name}: {len(texts)} documents, {len(queries)} queries, threads {os.cpu_count()}", flush=True)

    rows = []
    for name in args.encoders:
        factory, encode_documents, encode_query = ENCODERS[name]
        reference = None
        # Eager PyTorch first: the first row of an encoder is the baseline of its ratios.
        variants = [(runtime, runtime, factory) for runtime in sorted(args.runtimes, key=lambda r: r != "torch")]
        if name in STOCK:
            variants.insert(0, ("torch-stock", "torch", STOCK[name]))
        for label, runtime, make in variants:
            os.environ["BRAID_ENCODER_RUNTIME"] = runtime
            encoder = make()
            encode_documents(encoder, texts[:16])  # warm-up (and the one-time export, not timed)
            start = time.perf_counter()
            outputs = encode_documents(encoder, texts)
            seconds = time.perf_counter() - start
            for query in queries[:5]:
                encode_query(encoder, [query])
            timings = []
            for query in queries:
                begin = time.perf_counter()
                encode_query(encoder, [query])
                timings.append((time.perf_counter() - begin) * 1000)
            reference = outputs if reference is None else reference
            row = {
                "encoder": name,
                "runtime": label if encoder.runtime == runtime else f"{label} (fell back to {encoder.runtime})",
                "docs_per_s": len(texts) / seconds,
                "query_p50_ms": statistics.median(timings),
                "agreement": agreement(name, outputs, reference),
            }
            rows.append(row)
            base = next(r for r in rows if r["encoder"] == name)
            row["docs_ratio"] = row["docs_per_s"] / base["docs_per_s"]
            row["query_speedup"] = base["query_p50_ms"] / row["query_p50_ms"]
            print(
                f"{name:7s} {row['runtime']:12s} {row['docs_per_s']:8.1f} docs/s ({row['docs_ratio']:.2f}x)"
                f"  query p50 {row['query_p50_ms']:6.2f} ms ({row['query_speedup']:.2f}x)"
                f"  agreement {row['agreement']:.4f}",
                flush=True,
            )
            del encoder
    os.environ.pop("BRAID_ENCODER_RUNTIME", None)
    print("agreement: mean cosine to the baseline's vectors (dense, tokens); 1 - relative L1 of term weights (splade)")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    report = {"dataset": dataset.name, "documents": len(texts), "queries": len(queries), "rows": rows}
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"saved {args.output}")


if __name__ == "__main__":
    main()
