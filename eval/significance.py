"""Paired significance tests between runs evaluated on the same queries.

A two-sided paired Student's t-test over per-query scores, the test TREC and BEIR papers most often report
(Smucker, Allan and Carterette, "A Comparison of Statistical Significance Tests for Information Retrieval
Evaluation", CIKM 2007, find it agrees with randomization tests on IR metrics). Queries a run did not answer
score 0, so both sides always cover the same queries.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from scipy import stats

from braid.common.metrics import Evaluation

TESTED_METRICS = ("ndcg@10", "recall@100", "mrr@10")
ALPHA = 0.05


def paired_p_value(baseline: Sequence[float], system: Sequence[float]) -> float:
    """Two-sided paired t-test; identical score lists (no variance in the differences) give p = 1."""
    if len(baseline) != len(system):
        raise ValueError("paired test needs the same queries on both sides")
    differences = [b - a for a, b in zip(baseline, system, strict=True)]
    if len(differences) < 2 or all(abs(d - differences[0]) < 1e-12 for d in differences):
        return 1.0 if all(abs(d) < 1e-12 for d in differences) else 0.0
    p_value = float(stats.ttest_rel(system, baseline).pvalue)
    return 1.0 if math.isnan(p_value) else p_value


def compare(baseline: Evaluation, system: Evaluation) -> dict[str, float]:
    """p-values of ``system`` against ``baseline`` for each tested metric."""
    p_values = {}
    for metric in TESTED_METRICS:
        queries = sorted(baseline.per_query[metric])
        if sorted(system.per_query[metric]) != queries:
            raise ValueError("runs were evaluated on different queries")
        p_value = paired_p_value(
            [baseline.per_query[metric][q] for q in queries], [system.per_query[metric][q] for q in queries]
        )
        p_values[metric] = float(f"{p_value:.3g}")  # three significant digits: tiny p-values stay visible
    return p_values
