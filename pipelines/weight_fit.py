"""Fusion weights fitted by logistic regression, with the regularization chosen by cross-validation over queries.

A weighted fusion scores a document by sum_i w_i * norm_i(s_i(d)) (:mod:`braid.retriever.fusion`). The grid search
(:mod:`braid.pipelines.tuning`) picks the w that maximizes the tuning split's metric directly; with four or more
retrievers the simplex grid is large and the metric's surface flat and jagged at its top (on scifact/train the ten
best of 10,626 hybrid-max settings lie within 0.001 nDCG@10 of each other), so the winner is partly noise. Here the
same normalized values are the features of a pointwise logistic model of relevance, fitted on every candidate of
every tuning query (Vogt and Cottrell, "Fusion via a linear combination of scores", Information Retrieval 1999,
learn the combination from relevance judgments; Bruch et al., TOIS 2023, the convex combination itself). Its
log-loss is smooth in w, so the fit does not chase single queries; an L2 penalty lambda (on the mean loss, so one
value means the same on 300 or 3,000 queries) is chosen with the normalization by k-fold cross-validation over
queries, scored with the tuning metric itself. Tuned on several collections at once, each collection's candidates
weigh the same in the loss, as each weighs the same in the grid search's mean. Negative coefficients are set to 0
(a retriever whose score does not predict relevance is dropped, as the grid could) and the rest scaled to sum to 1:
the result is an ordinary ``weighted`` fusion that the pipeline runs unchanged. The intercept only shifts every
score and is not kept.
"""

from __future__ import annotations

import sys
from dataclasses import replace

import numpy as np
from scipy.optimize import minimize
from tqdm import tqdm

from braid.common.dataset import Dataset
from braid.common.errors import BraidError
from braid.pipelines.pipeline import Pipeline
from braid.pipelines.spec import TunedFusion
from braid.pipelines.tuning import WEIGHTED_NORMALIZATIONS, SplitLists, Trial, check_tuning, grid_values, split_lists
from braid.retriever.fusion import FusionSpec, fusion_inputs

PENALTIES = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
FOLDS = 5


def check_fit(penalties: tuple[float, ...], folds: int) -> None:
    """Validate a fit request before anything runs."""
    if folds < 2:
        raise BraidError(f"cross-validation needs at least 2 folds, got {folds}")
    if not penalties:
        raise BraidError("give at least one logistic penalty")
    for penalty in penalties:
        if not np.isfinite(penalty) or penalty <= 0:
            raise BraidError(f"logistic penalties must be finite numbers > 0, got {penalty}")


def candidate_rows(
    data: SplitLists, normalization: str, keep_self_hits: bool = False
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per query: (features, labels) of every document any retriever returned; features are the normalized values
    the pipeline's weighted fusion multiplies, labels the qrels' relevance at the collection's threshold."""
    spec = FusionSpec("weighted", normalization=normalization)
    threshold = data.dataset.default_rel_threshold
    rows = {}
    for qid in data.queries:
        inputs = fusion_inputs([per_query.get(qid, []) for per_query in data.lists], spec, data.shapes)
        judged = data.qrels.get(qid, {})
        labels = np.array([judged.get(doc, 0) >= threshold for doc in inputs.doc_ids], dtype=np.float64)
        keep = np.ones(len(labels), dtype=bool)
        if not keep_self_hits:
            keep = np.array([doc != qid for doc in inputs.doc_ids], dtype=bool)  # evaluation drops these too
        rows[qid] = (inputs.values[keep], labels[keep])
    return rows


def fit_logistic(
    features: np.ndarray, labels: np.ndarray, penalty: float, row_weights: np.ndarray | None = None
) -> np.ndarray:
    """Coefficients (no intercept) of the L2-penalized logistic regression: minimize the mean log-loss (weighted by
    ``row_weights`` when given) plus ``penalty`` / 2 * |w|^2, the intercept unpenalized."""
    if features.size == 0 or labels.min(initial=1.0) == labels.max(initial=0.0):
        raise BraidError("fitting fusion weights needs judged relevant and non-relevant candidates in the lists")
    signs = 2.0 * labels - 1.0
    width = features.shape[1]
    share = np.full(len(labels), 1.0 / len(labels)) if row_weights is None else row_weights / row_weights.sum()

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        margins = signs * (features @ theta[:width] + theta[width])
        value = share @ np.logaddexp(0.0, -margins) + 0.5 * penalty * float(theta[:width] @ theta[:width])
        # d/dm log(1 + e^-m) = -1 / (1 + e^m), computed without overflow.
        slope = -signs * np.exp(-np.logaddexp(0.0, margins)) * share
        gradient = np.append(features.T @ slope + penalty * theta[:width], slope.sum())
        return float(value), gradient

    result = minimize(loss, np.zeros(width + 1), jac=True, method="L-BFGS-B", options={"maxiter": 1000})
    return result.x[:width]


def as_weights(coefficients: np.ndarray, names: list[str]) -> dict[str, float]:
    """Non-negative weights summing to 1 (4 decimals) from logistic coefficients."""
    kept = np.clip(coefficients, 0.0, None)
    if kept.sum() <= 0:
        raise BraidError("no retriever's normalized score predicts relevance on the tuning split; cannot fit weights")
    return {name: round(float(w), 4) for name, w in zip(names, kept / kept.sum(), strict=True)}


def subset(data: SplitLists, qids: list[str]) -> SplitLists:
    """The split restricted to ``qids`` (a cross-validation fold)."""
    chosen = set(qids)
    return replace(
        data,
        queries={q: text for q, text in data.queries.items() if q in chosen},
        qrels={q: judged for q, judged in data.qrels.items() if q in chosen},
    )


def stacked(rows: dict[str, tuple[np.ndarray, np.ndarray]], qids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    return np.vstack([rows[q][0] for q in qids]), np.concatenate([rows[q][1] for q in qids])


def deal(cached: list[SplitLists], folds: int, seed: int = 0) -> list[list[list[str]]]:
    """Per split, its queries in a seeded random order dealt into ``folds`` folds; fold f of a cross-validation
    holds out every split's fold f."""
    rng = np.random.default_rng(seed)
    return [[list(part) for part in np.array_split(rng.permutation(sorted(d.queries)), folds)] for d in cached]


def held_out_shares(
    cached: list[SplitLists],
    dealt: list[list[list[str]]],
    fold: int,
    fusion: FusionSpec,
    names: list[str],
    metric: str,
    keep_self_hits: bool = False,
) -> np.ndarray:
    """Per split: ``metric`` of ``fusion`` on the split's held-out fold, times the fold's share of the split's
    queries (summed over folds: the split's cross-validated value)."""
    weights = tuple(fusion.weight_vector(names))
    shares = np.zeros(len(cached))
    for i, data in enumerate(cached):
        held_out = subset(data, dealt[i][fold])
        shares[i] = grid_values(held_out, [fusion], [weights], metric, keep_self_hits)[0, 0]
        shares[i] *= len(held_out.queries) / len(data.queries)
    return shares


def fit_pooled(parts: list[tuple[np.ndarray, np.ndarray]], penalty: float) -> np.ndarray:
    """One fit over several splits' (features, labels), each split weighing the same in the loss (as each weighs the
    same in the tuning mean), however many candidates it has."""
    row_weights = np.concatenate([np.full(len(y), 1.0 / len(y)) for _, y in parts])
    return fit_logistic(np.vstack([x for x, _ in parts]), np.concatenate([y for _, y in parts]), penalty, row_weights)


def fit_fusion(
    cached: list[SplitLists],
    names: list[str],
    metric: str,
    normalizations: tuple[str, ...],
    penalties: tuple[float, ...] = PENALTIES,
    folds: int = FOLDS,
    seed: int = 0,
    keep_self_hits: bool = False,
) -> list[tuple[Trial, float]]:
    """One (trial, penalty) per normalization and penalty: the weights fitted on all tuning queries, valued by
    their ``folds``-fold cross-validated ``metric`` (the mean over splits of the mean over folds); best first."""
    check_fit(penalties, folds)
    for data in cached:
        if len(data.queries) < folds:
            raise BraidError(
                f"{folds}-fold cross-validation needs at least {folds} queries per tuning split; {data.label} has"
                f" {len(data.queries)}: lower --folds"
            )
    dealt = deal(cached, folds, seed)
    progress = tqdm(total=len(normalizations) * len(penalties) * (folds + 1), desc="fit", unit="fit", file=sys.stderr)
    trials = []
    for normalization in normalizations:
        rows = [candidate_rows(data, normalization, keep_self_hits) for data in cached]
        setting = FusionSpec("weighted", normalization=normalization)
        for penalty in penalties:
            scores = np.zeros(len(cached))
            for fold in range(folds):
                train = [
                    stacked(r, [q for f, part in enumerate(d) if f != fold for q in part])
                    for r, d in zip(rows, dealt, strict=True)
                ]
                coefficients = fit_pooled(train, penalty)
                fitted = replace(setting, weights=as_weights(coefficients, names))
                scores += held_out_shares(cached, dealt, fold, fitted, names, metric, keep_self_hits)
                progress.update()
            everything = [stacked(r, list(data.queries)) for r, data in zip(rows, cached, strict=True)]
            coefficients = fit_pooled(everything, penalty)
            progress.update()
            fusion = replace(setting, weights=as_weights(coefficients, names))
            trials.append((Trial(fusion, float(scores.mean())), penalty))
    progress.close()
    trials.sort(key=lambda item: -item[0].value)  # stable: the earlier (stronger penalty) wins ties
    return trials


def fit_tuned(
    targets: list[tuple[Pipeline, Dataset, str]],
    metric: str = "ndcg@10",
    normalizations: tuple[str, ...] = WEIGHTED_NORMALIZATIONS,
    penalties: tuple[float, ...] = PENALTIES,
    folds: int = FOLDS,
    keep_self_hits: bool = False,
) -> tuple[TunedFusion, list[Trial]]:
    """``braid tune --fit logistic``: the cross-validated best fitted fusion over one or more (pipeline, dataset,
    split) targets, with its provenance, and every trial (valued by cross-validation), best first."""
    pipeline = targets[0][0]
    check_tuning(pipeline.spec, [split for *_, split in targets], metric, None, ("weighted",), normalizations)
    cached = [split_lists(target, dataset, split) for target, dataset, split in targets]
    ranked = fit_fusion(cached, pipeline.retriever_names, metric, normalizations, penalties, folds, 0, keep_self_hits)
    best, penalty = ranked[0]
    weights = tuple(best.fusion.weight_vector(pipeline.retriever_names))
    in_sample = [grid_values(data, [best.fusion], [weights], metric, keep_self_hits)[0, 0] for data in cached]
    tuned = {
        "datasets": [data.label for data in cached],
        "metric": metric,
        "value": round(float(np.mean(in_sample)), 6),
        "queries": sum(len(data.queries) for data in cached),
        "fit": "logistic",
        "penalty": penalty,
        "cross_validated": round(best.value, 6),
        "folds": folds,
    }
    return TunedFusion(best.fusion, tuned), [trial for trial, _ in ranked]
