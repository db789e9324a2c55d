"""Zero-shot quality of the in-context ranker: FIRST and attention scoring from the same forward, beside the
first stage alone.

One block-sparse forward per query over the first stage's top ``--depth`` gives both scores (the identifier
logits of the first answer token, and the query block's attention mass at the middle layer), so the two modes
are compared on exactly the same prompts at the cost of one. The tail below the reranked head keeps its
first-stage order. Prints nDCG@10 / MRR@10 with paired t-test p-values against the first stage, and saves
JSON plus one TREC run per system. ``--limit`` evaluates the first N judged queries (say so when reporting).

    python -m benchmarks.ranker_quality --dataset trec-dl-2019-passage-pool --output results/rank_dl19
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from braid.common.dataset_resolver import resolve_dataset
from braid.common.metrics import evaluate
from braid.common.trec_run import write_run
from braid.eval.significance import compare
from braid.pipelines.pipeline import load_pipeline, open_pipeline
from braid.ranker.rerank_spec import RerankSpec
from braid.ranker.reranker import BlockRanker


def reorder(head: list[str], scores: list[float], tail: list[str]) -> dict[str, float]:
    ranked = sorted(zip(head, scores, strict=True), key=lambda item: -item[1])
    run = {doc_id: float(len(head) + len(tail) - rank) for rank, (doc_id, _) in enumerate(ranked)}
    run.update({doc_id: float(len(tail) - rank) for rank, doc_id in enumerate(tail)})
    return run


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--pipeline", default="bm25", help="first stage")
    parser.add_argument("--split", default="test")
    parser.add_argument("--depth", type=int, default=20, help="documents reranked per query")
    parser.add_argument("--max-doc-tokens", type=int, default=160)
    parser.add_argument(
        "--model",
        action="append",
        help="ranker LM (repeatable: compared on the same prompts; "
        "default smollm2); a `braid train ranker` output folder works",
    )
    parser.add_argument("--layer", type=int, default=None, help="attention scoring layer (default: the middle)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--backend", default="torch", choices=["torch", "triton"])
    parser.add_argument("--limit", type=int, default=0, help="only the first N judged queries (0: all)")
    parser.add_argument("--rel-threshold", type=int, default=None)
    parser.add_argument("--index-dir", type=Path, default=Path("indexes"))
    parser.add_argument("--output", type=Path, default=Path("results/ranker_quality"))
    args = parser.parse_args(argv)

    dataset = resolve_dataset(args.dataset)
    pipeline = open_pipeline(load_pipeline(args.pipeline), dataset, args.index_dir)
    queries = dataset.judged_queries(args.split)
    if args.limit:
        queries = dict(itertools.islice(queries.items(), args.limit))
    models = args.model or ["smollm2"]
    labels = [model if len(models) == 1 else Path(model).name or model for model in models]
    corpus = {doc.doc_id: doc.contents for doc in dataset.iter_corpus()}
    first_stage = pipeline.batch_search(queries, 100 + 1)
    candidates = {qid: [hit.doc_id for hit in first_stage[qid] if hit.doc_id != qid][:100] for qid in queries}
    runs: dict[str, dict[str, dict[str, float]]] = {
        "first-stage": {qid: {doc_id: float(len(hits) - rank) for rank, doc_id in enumerate(hits)}
                        for qid, hits in candidates.items()}
    }  # fmt: skip
    layers = {}
    for model, label in zip(models, labels, strict=True):
        spec = RerankSpec(model=model, window=args.depth, stride=max(1, args.depth // 2), device=args.device,
                          max_doc_tokens=args.max_doc_tokens, dtype=args.dtype, backend=args.backend,
                          layers=() if args.layer is None else (args.layer,))  # fmt: skip
        ranker = BlockRanker(spec)
        layer = layers[label] = ranker.layers[0]
        first_runs, attention_runs = {}, {}
        for qid, text in tqdm(queries.items(), desc=f"rerank {label}", unit="q", file=sys.stderr):
            head, tail = candidates[qid][: args.depth], candidates[qid][args.depth :]
            prompt = ranker.prompt([corpus[doc_id] for doc_id in head], text)
            with torch.inference_mode():
                result = ranker.forward(prompt, [layer], ranker.spec.probe_tokens, need_logits=True)
            first = result.last_logits[list(prompt.label_token_ids)].tolist()
            attention = result.doc_attention[layer].float().mean(dim=(0, 1)).tolist()
            first_runs[qid] = reorder(head, first, tail)
            attention_runs[qid] = reorder(head, attention, tail)
        prefix = "" if len(models) == 1 else f"{label}/"
        runs[f"{prefix}first"], runs[f"{prefix}attention"] = first_runs, attention_runs
        del ranker
    qrels = dataset.known_qrels(args.split)
    qrels = {qid: docs for qid, docs in qrels.items() if qid in queries}
    threshold = dataset.default_rel_threshold if args.rel_threshold is None else args.rel_threshold
    evaluations = {name: evaluate(run, qrels, threshold) for name, run in runs.items()}
    args.output.mkdir(parents=True, exist_ok=True)
    report = {
        "dataset": dataset.name,
        "first_stage": args.pipeline,
        "queries": len(queries),
        "depth": args.depth,
        "max_doc_tokens": args.max_doc_tokens,
        "models": dict(zip(labels, models, strict=True)),
        "attention_layers": layers,
        "rel_threshold": threshold,
        "systems": {},
    }
    print(f"{dataset.name}: {len(queries)} queries, {args.pipeline} top {args.depth} reranked by {', '.join(models)}")
    width = max(14, *(len(name) for name in runs))
    print(f"{'system':<{width}} {'nDCG@10':>8} {'MRR@10':>8} {'p(nDCG)':>8}")
    for name, evaluation in evaluations.items():
        p_values = compare(evaluations["first-stage"], evaluation) if name != "first-stage" else {}
        report["systems"][name] = {"metrics": evaluation.aggregate, "p_vs_first_stage": p_values}
        write_run(args.output / f"{name.replace('/', '--')}.trec", runs[name], f"{args.pipeline}+{name}")
        agg = evaluation.aggregate
        p_text = f"{p_values.get('ndcg@10', float('nan')):.3g}" if p_values else "-"
        print(f"{name:<{width}} {agg['ndcg@10']:>8.4f} {agg['mrr@10']:>8.4f} {p_text:>8}")
    (args.output / "report.json").write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
