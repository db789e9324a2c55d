"""Retrieval metrics over graded qrels, computed with ir_measures (trec_eval semantics via pytrec_eval).

nDCG@10 uses the graded judgments with linear gains, as trec_eval does. The binary measures (Recall, MRR,
MAP) count a document as relevant when its grade is at least ``rel_threshold`` (BEIR: 1; TREC DL: 2).
Scores average over every evaluated query: a query that the run does not answer scores 0, unlike plain
trec_eval, which silently averages over the answered queries only.
"""

from __future__ import annotations

from dataclasses import dataclass

import ir_measures

from braid.common.dataset import Qrels
from braid.common.trec_run import Run

METRIC_KEYS = ("ndcg@10", "recall@100", "recall@1000", "mrr@10", "map")


def _measures(rel_threshold: int) -> dict[str, object]:
    t = int(rel_threshold)
    return {
        "ndcg@10": ir_measures.nDCG @ 10,
        "recall@100": ir_measures.R(rel=t) @ 100,
        "recall@1000": ir_measures.R(rel=t) @ 1000,
        "mrr@10": ir_measures.RR(rel=t) @ 10,
        "map": ir_measures.AP(rel=t),
    }


@dataclass
class Evaluation:
    """Aggregate and per-query scores of one run."""

    aggregate: dict[str, float]
    per_query: dict[str, dict[str, float]]
    num_queries: int
    rel_threshold: int


def evaluated_queries(qrels: Qrels) -> list[str]:
    """Queries with at least one positively graded judgment: the ones every metric is defined for."""
    return sorted(qid for qid, docs in qrels.items() if any(grade > 0 for grade in docs.values()))


def evaluate(run: Run, qrels: Qrels, rel_threshold: int = 1) -> Evaluation:
    if rel_threshold < 1:
        raise ValueError(f"rel_threshold must be >= 1, got {rel_threshold}")
    queries = evaluated_queries(qrels)
    wanted = set(queries)
    judged = {qid: docs for qid, docs in qrels.items() if qid in wanted}
    answered = {qid: scores for qid, scores in run.items() if qid in wanted and scores}
    measures = _measures(rel_threshold)
    by_measure = {measure: key for key, measure in measures.items()}
    per_query = {key: dict.fromkeys(queries, 0.0) for key in measures}
    if answered:
        for metric in ir_measures.iter_calc(list(measures.values()), judged, answered):
            per_query[by_measure[metric.measure]][metric.query_id] = float(metric.value)
    aggregate = {key: (sum(values.values()) / len(values) if values else 0.0) for key, values in per_query.items()}
    return Evaluation(aggregate=aggregate, per_query=per_query, num_queries=len(queries), rel_threshold=rel_threshold)
