"""Paired t-test between runs, against a t statistic computed by hand."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from braid.common.metrics import Evaluation
from braid.eval.significance import compare, paired_p_value


def test_paired_t_test_matches_the_hand_computed_statistic():
    baseline, system = [0.1, 0.2, 0.3, 0.4], [0.2, 0.25, 0.5, 0.45]
    # differences 0.1, 0.05, 0.2, 0.05: mean 0.1, sample sd sqrt(0.005), t = 0.1 / (sqrt(0.005) / 2) on 3 df
    t = 0.1 / (math.sqrt(0.005) / 2)
    assert paired_p_value(baseline, system) == pytest.approx(2 * stats.t.sf(t, 3), rel=1e-9)
    assert paired_p_value(baseline, baseline) == 1.0
    assert paired_p_value([0.1, 0.2], [0.3, 0.4]) == 0.0  # the same gain on every query


def test_compare_reports_each_tested_metric():
    per_query = {m: {"q1": 0.1, "q2": 0.5, "q3": 0.2} for m in ("ndcg@10", "recall@100", "mrr@10")}
    better = {m: {"q1": 0.3, "q2": 0.6, "q3": 0.6} for m in per_query}
    result = compare(Evaluation({}, per_query, 3, 1), Evaluation({}, better, 3, 1))
    assert set(result) == {"ndcg@10", "recall@100", "mrr@10"} and all(0 < p < 1 for p in result.values())
    with pytest.raises(ValueError, match="different queries"):
        compare(Evaluation({}, per_query, 3, 1), Evaluation({}, {m: {"q1": 0.0} for m in per_query}, 1, 1))
