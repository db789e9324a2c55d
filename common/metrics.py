"""Retrieval metrics over graded qrels, computed with ir_measures (trec_eval semantics via pytrec_eval).

nDCG@10 uses the graded judgments with linear gains, as trec_eval does. The binary measures (Recall, MRR,
MAP) count a document as relevant when its grade is at least ``rel_threshold`` (BEIR: 1; TREC DL: 2).
Scores average over every evaluated query: a query that the run does not answer scores 0, unlike plain
trec_eval, which silently averages over the answered queries only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
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


class NdcgJudge:
    """nDCG@k of ranked id lists against one qrels, as trec_eval's ndcg_cut computes it (linear gains, log2(rank + 1)
    discounts, the ideal ranking from the judged grades), averaged like :func:`evaluate` over the evaluated queries.

    The fast path for grid searches, which score thousands of candidate runs of one split: no run dictionaries,
    no trec_eval round trip. ``tests/common/test_metrics.py`` checks it against :func:`evaluate`.
    """

    def __init__(self, qrels: Qrels, k: int = 10) -> None:
        self.k = k
        self.queries = evaluated_queries(qrels)
        self._gains = {qid: {doc: max(grade, 0) for doc, grade in qrels[qid].items()} for qid in self.queries}
        self._discounts = [1.0 / math.log2(rank + 2) for rank in range(k)]
        self._ideal = {
            qid: sum(g * d for g, d in zip(sorted(gains.values(), reverse=True), self._discounts, strict=False))
            for qid, gains in self._gains.items()
        }

    def __call__(self, qid: str, ranked_ids: Sequence[str]) -> float:
        """One query's nDCG@k; ``ranked_ids`` best first, at least k long where the run has that many."""
        gains = self._gains.get(qid)
        if not gains or self._ideal[qid] == 0:
            return 0.0
        dcg = sum(gains.get(doc, 0) * d for doc, d in zip(ranked_ids, self._discounts, strict=False))
        return dcg / self._ideal[qid]

    def mean(self, runs: Mapping[str, Sequence[str]]) -> float:
        """Mean over the evaluated queries; a query missing from ``runs`` scores 0."""
        if not self.queries:
            return 0.0
        return sum(self(qid, runs[qid]) for qid in self.queries if qid in runs) / len(self.queries)
