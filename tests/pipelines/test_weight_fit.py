"""Fusion weights fitted by logistic regression: the fit itself, its weights, and its cross-validated choice."""

from __future__ import annotations

import numpy as np
import pytest

from braid.common.dataset_resolver import open_dataset_dir
from braid.common.errors import BraidError
from braid.pipelines.tuning import SplitLists, grid_values
from braid.pipelines.weight_fit import as_weights, candidate_rows, fit_fusion, fit_logistic, fit_pooled
from braid.retriever.fusion import ListShape
from braid.retriever.hit import Hit


def test_fit_logistic_recovers_the_coefficients_that_generated_the_labels():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(40_000, 3))
    truth = np.array([2.0, 0.0, -1.0])
    labels = (rng.random(40_000) < 1 / (1 + np.exp(-(features @ truth - 1.0)))).astype(np.float64)
    # A wrong gradient stops L-BFGS away from the optimum; a penalty this small barely moves it from the truth.
    assert fit_logistic(features, labels, 1e-6) == pytest.approx(truth, abs=0.08)
    # A strong penalty shrinks every coefficient toward 0.
    assert np.abs(fit_logistic(features, labels, 10.0)).max() < 0.2
    with pytest.raises(BraidError, match="relevant and non-relevant"):
        fit_logistic(features, np.ones(40_000), 1e-3)


def test_fit_pooled_weighs_each_split_the_same_however_many_candidates_it_has():
    rng = np.random.default_rng(2)

    def split(rows: int, slope: float) -> tuple[np.ndarray, np.ndarray]:
        x = rng.normal(size=(rows, 1))
        return x, (rng.random(rows) < 1 / (1 + np.exp(-slope * x[:, 0]))).astype(np.float64)

    # The feature predicts relevance on one split and its opposite, as strongly, on a ten times larger one.
    small, large = split(4_000, 2.0), split(40_000, -2.0)
    assert abs(fit_pooled([small, large], 1e-6)[0]) < 0.15
    rows_pooled = fit_logistic(np.vstack([small[0], large[0]]), np.concatenate([small[1], large[1]]), 1e-6)
    assert rows_pooled[0] < -1.0


def test_as_weights_drops_negative_coefficients_and_sums_to_one():
    assert as_weights(np.array([3.0, -1.0, 1.0]), ["a", "b", "c"]) == {"a": 0.75, "b": 0.0, "c": 0.25}
    with pytest.raises(BraidError, match="predicts relevance"):
        as_weights(np.array([-1.0, 0.0]), ["a", "b"])


def synthetic_split(tiny_beir, queries: int = 30) -> SplitLists:
    """Each query has one relevant document among 20: ``good`` ranks it near the top, ``noise`` anywhere."""
    rng = np.random.default_rng(1)
    good, noise, qrels = {}, {}, {}
    for q in range(queries):
        qid, docs = f"q{q}", [f"q{q}-d{i}" for i in range(20)]
        qrels[qid] = {docs[0]: 1}
        good_order = [docs[i] for i in np.argsort(rng.normal(size=20) + 3.0 * (np.arange(20) == 0))[::-1]]
        good[qid] = [Hit(doc, 20.0 - r) for r, doc in enumerate(good_order)]
        noise[qid] = [Hit(docs[i], float(20 - r)) for r, i in enumerate(rng.permutation(20))]
    queries_text = {qid: "text" for qid in qrels}
    dataset = open_dataset_dir(tiny_beir)
    return SplitLists(dataset, "train", queries_text, qrels, [good, noise], [ListShape(20), ListShape(20)])


def test_fit_fusion_weights_the_informative_retriever_and_values_trials_by_held_out_queries(tiny_beir):
    data = synthetic_split(tiny_beir)
    rows = candidate_rows(data, "zscore")
    assert all(features.shape == (20, 2) and labels.sum() == 1 for features, labels in rows.values())
    ranked = fit_fusion([data], ["good", "noise"], "ndcg@10", ("minmax", "zscore"), (1e-3, 1.0), folds=3)
    assert len(ranked) == 4
    values = [trial.value for trial, _ in ranked]
    assert values == sorted(values, reverse=True) and all(0.0 <= v <= 1.0 for v in values)
    best, penalty = ranked[0]
    assert penalty in (1e-3, 1.0)
    assert best.fusion.weights["good"] > best.fusion.weights["noise"]
    # The fused ranking puts the relevant document at the top for most queries (good alone would, noise would not).
    in_sample = grid_values(data, [best.fusion], [tuple(best.fusion.weight_vector(["good", "noise"]))], "ndcg@10")
    assert in_sample[0, 0] > 0.5 and best.value > 0.5
    with pytest.raises(BraidError, match="at least 40 queries"):
        fit_fusion([data], ["good", "noise"], "ndcg@10", ("zscore",), (1e-3,), folds=40)
    with pytest.raises(BraidError, match="penalties must be finite numbers > 0"):
        fit_fusion([data], ["good", "noise"], "ndcg@10", ("zscore",), (0.0,), folds=3)


def test_candidate_rows_leave_out_the_querys_own_id_unless_asked(tiny_beir):
    data = synthetic_split(tiny_beir, queries=3)
    data.lists[0]["q0"].append(Hit("q0", -5.0))
    assert candidate_rows(data, "zscore")["q0"][0].shape[0] == 20
    assert candidate_rows(data, "zscore", keep_self_hits=True)["q0"][0].shape[0] == 21
