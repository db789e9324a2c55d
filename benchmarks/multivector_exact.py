"""Exact MaxSim over every document, per pool factor: what pooling itself costs, without candidate generation.

For one collection's token index (all-MiniLM-L6-v2 token outputs, built once by ``--kind tokens``), pools every
document's tokens at each pool factor (sentence-transformers' ``HierarchicalTokenPooling``; with
``--no-renormalize`` too, i.e. cluster means left at their norm, as PyLate's reference pooling does) and scores
every query against every document with a brute-force matrix product, then reports nDCG@10 and Recall@100. The
retriever's MaxSim and XTR rows in ``multivector_table`` can then be read against this ceiling. ``--limit`` takes
the first N judged queries (say so when reporting). Usage:

    python -m benchmarks.multivector_exact --dataset arguana --pool-factors 1 2 --limit 300
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from braid.common.dataset_resolver import resolve_dataset
from braid.common.metrics import evaluate
from braid.indexer.manifest import Manifest
from braid.indexer.token_index import TokenStore, encoder_for
from braid.pipelines.pipeline import PipelineSpec, open_pipeline, parse_retriever


def pooled_documents(store: TokenStore, factor: int, renormalize: bool, protected: int) -> list[torch.Tensor]:
    from sentence_transformers.multi_vector_encoder.modules.token_pooling import HierarchicalTokenPooling

    pooling = HierarchicalTokenPooling(float(factor), num_protected_tokens=protected, normalize_embeddings=renormalize)
    documents = []
    for row in tqdm(range(len(store)), desc=f"pool x{factor}", unit="doc", file=sys.stderr):
        tokens = torch.nn.functional.normalize(torch.from_numpy(np.asarray(store.document(row), np.float32)), dim=-1)
        documents.append(pooling.pool([tokens])[0] if factor > 1 else tokens)
    return documents


def exact_scores(queries: list[np.ndarray], documents: list[torch.Tensor], chunk: int = 64) -> torch.Tensor:
    """(queries, documents) MaxSim, exact: every query token against every document token."""
    lengths = torch.tensor([len(q) for q in queries])
    query_matrix = torch.from_numpy(np.concatenate(queries).astype(np.float32))
    owner = torch.repeat_interleave(torch.arange(len(queries)), lengths)
    scores = torch.zeros(len(queries), len(documents))
    for start in tqdm(range(0, len(documents), chunk), desc="exact MaxSim", unit="chunk", file=sys.stderr):
        block = documents[start : start + chunk]
        sizes = torch.tensor([len(d) for d in block])
        similarities = query_matrix @ torch.cat(block).T  # (query tokens, block tokens)
        doc_of = torch.repeat_interleave(torch.arange(len(block)), sizes)
        best = torch.full((len(query_matrix), len(block)), -torch.inf)
        best.scatter_reduce_(1, doc_of.expand(len(query_matrix), -1), similarities, reduce="amax")
        scores[:, start : start + len(block)] = torch.zeros(len(queries), len(block)).index_add_(0, owner, best)
    return scores


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--pool-factors", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--no-renormalize", action="store_true", help="also pool without re-normalizing means")
    parser.add_argument("--limit", type=int, default=0, help="first N judged queries (0: all)")
    parser.add_argument("--index-dir", type=Path, default=Path("indexes"))
    parser.add_argument("--output", type=Path, default=Path("results/multivector_exact.json"))
    args = parser.parse_args(argv)
    dataset = resolve_dataset(args.dataset)
    queries = dataset.judged_queries("test")
    if args.limit:
        queries = dict(itertools.islice(queries.items(), args.limit))
    raw = {"kind": "multivector", "pool_factor": 1}
    spec = PipelineSpec(name="tokens", retrievers=(parse_retriever(raw, "tokens"),))
    pipeline = open_pipeline(spec, dataset, args.index_dir)  # builds the token index if missing
    index = pipeline.index_paths[0]
    manifest = Manifest.read(index)
    params = manifest.params
    store = TokenStore(manifest.dependency(index, "tokens"))
    encoded = encoder_for(params).encode_queries(list(queries.values()))
    qrels = {qid: docs for qid, docs in dataset.known_qrels("test").items() if qid in queries}
    rows = []
    variants = [(factor, True) for factor in args.pool_factors]
    variants += [(factor, False) for factor in args.pool_factors if args.no_renormalize and factor > 1]
    print(f"{'dataset':<14} {'pool':>4} {'renorm':>6} {'vectors':>9} {'nDCG@10':>8} {'R@100':>7}")
    for factor, renormalize in variants:
        documents = pooled_documents(store, factor, renormalize, params["protected_tokens"])
        scores = exact_scores(encoded, documents)
        run = {}
        for i, qid in enumerate(queries):
            top = torch.topk(scores[i], min(101, len(documents))).indices.tolist()
            hits = [store.doc_ids[j] for j in top if store.doc_ids[j] != qid][:100]
            run[qid] = {doc_id: float(100 - rank) for rank, doc_id in enumerate(hits)}
        metrics = evaluate(run, qrels, dataset.default_rel_threshold).aggregate
        vectors = sum(len(d) for d in documents)
        row = {"dataset": dataset.name, "pool_factor": factor, "renormalize": renormalize, "queries": len(queries),
               "vectors": vectors, "ndcg@10": metrics["ndcg@10"], "recall@100": metrics["recall@100"]}  # fmt: skip
        rows.append(row)
        print(f"{dataset.name:<14} {factor:>4} {renormalize!s:>6} {vectors:>9} {row['ndcg@10']:>8.4f} "
              f"{row['recall@100']:>7.4f}", flush=True)  # fmt: skip
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(rows, indent=1) + "\n")
    return rows


if __name__ == "__main__":
    main()
