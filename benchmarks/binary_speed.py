"""Speed and memory of binary search against faiss IndexFlatIP, measured in the same run.

One million random unit vectors of width 384 (speed does not depend on the values) are searched exactly with
IndexFlatIP (float32), and with braid's binary path: a recurrent binarizer (1 bit per dimension, trained on a
50k sample) codes them, faiss IndexBinaryFlat gives 1,000 candidates, symmetric popcount scoring orders them,
optionally the top 100 are rescored from float16 rows. Reported: single-query latency (median), batched
queries/s, and index bytes; ratios are against IndexFlatIP. Usage:

    python -m benchmarks.binary_speed --vectors 1000000 --output results/binary_speed.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import faiss
import numpy as np

from braid.indexer.binary_codes import RecurrentCoder, symmetric_scores
from braid.indexer.recurrent_binarizer import train_binarizer


def unit_vectors(rng: np.random.Generator, count: int, dim: int) -> np.ndarray:
    vectors = rng.standard_normal((count, dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def median_ms(function, queries: np.ndarray) -> float:
    function(queries[0])  # warm-up
    timings = []
    for query in queries:
        start = time.perf_counter()
        function(query)
        timings.append((time.perf_counter() - start) * 1000)
    return statistics.median(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--single", type=int, default=100, help="queries timed one at a time")
    parser.add_argument("--batch", type=int, default=1000, help="queries in the batched measurement")
    parser.add_argument("--output", default="results/binary_speed.json")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    corpus = unit_vectors(rng, args.vectors, args.dim)
    queries = unit_vectors(rng, max(args.single, args.batch), args.dim)
    print(f"faiss threads: {faiss.omp_get_max_threads()}, vectors: {args.vectors} x {args.dim}", flush=True)

    flat = faiss.IndexFlatIP(args.dim)
    flat.add(corpus)
    float_single = median_ms(lambda q: flat.search(q[None], 100), queries[: args.single])
    start = time.perf_counter()
    flat.search(queries[: args.batch], 100)
    float_qps = args.batch / (time.perf_counter() - start)
    float_bytes = flat.ntotal * args.dim * 4

    coder = RecurrentCoder(train_binarizer(corpus[:50_000], args.dim, bits=1, epochs=3, seed=0, progress=False))
    codes, _ = coder.encode(corpus)
    rows16 = corpus.astype(np.float16)
    del corpus
    binary = faiss.IndexBinaryFlat(args.dim)
    binary.add(np.ascontiguousarray(codes.reshape(len(codes), -1)))
    binary_bytes = binary.ntotal * binary.code_size

    def binary_search(query: np.ndarray, rescore: int = 0) -> np.ndarray:
        query_codes, _ = coder.encode(query[None])
        _, rows = binary.search(query_codes.reshape(1, -1), 1000)
        scores = symmetric_scores(query_codes[0], codes[rows[0]], coder.scales, coder.width)
        ranked = rows[0][np.argsort(-scores, kind="stable")][:100]
        if rescore:
            head = ranked[:rescore]
            ranked = head[np.argsort(-(rows16[head].astype(np.float32) @ query))]
        return ranked

    results = {"vectors": args.vectors, "dim": args.dim, "faiss_threads": faiss.omp_get_max_threads()}
    results["float"] = {"single_ms": float_single, "batched_qps": float_qps, "index_bytes": float_bytes}
    for rescore in (0, 100):
        single = median_ms(lambda q, r=rescore: binary_search(q, r), queries[: args.single])
        start = time.perf_counter()
        batch_codes, _ = coder.encode(queries[: args.batch])
        _, candidate_rows = binary.search(np.ascontiguousarray(batch_codes.reshape(args.batch, -1)), 1000)
        for query_codes, rows, query in zip(batch_codes, candidate_rows, queries[: args.batch], strict=True):
            scores = symmetric_scores(query_codes, codes[rows], coder.scales, coder.width)
            ranked = rows[np.argsort(-scores, kind="stable")][:100]
            if rescore:
                ranked[:rescore] = ranked[:rescore][np.argsort(-(rows16[ranked[:rescore]].astype(np.float32) @ query))]
        qps = args.batch / (time.perf_counter() - start)
        results[f"binary_rescore_{rescore}"] = {
            "single_ms": single,
            "batched_qps": qps,
            "index_bytes": binary_bytes + (rows16.nbytes if rescore else 0),
            "single_speedup_vs_float": float_single / single,
            "batched_speedup_vs_float": qps / float_qps,
        }
    results["code_size_ratio_vs_float32"] = float_bytes / binary_bytes
    print(json.dumps(results, indent=1))
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
