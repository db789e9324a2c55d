from __future__ import annotations

import math

import pytest

from braid.common.metrics import evaluate

QRELS = {"q1": {"a": 2, "b": 1, "c": 0}, "q2": {"x": 1}, "q3": {"y": 1}, "q4": {"n": 0}}
RUN = {"q1": {"c": 3.0, "b": 2.0, "a": 1.0}, "q2": {"z": 2.0, "x": 1.0}, "q4": {"n": 1.0}}


def test_hand_computed_ndcg_recall_mrr():
    result = evaluate(RUN, QRELS, rel_threshold=1)
    # q4 has no positive judgment: no metric is defined for it, so it is not evaluated.
    assert result.num_queries == 3
    ndcg_q1 = (1 / math.log2(3) + 2 / math.log2(4)) / (2 + 1 / math.log2(3))
    ndcg_q2 = 1 / math.log2(3)
    assert result.per_query["ndcg@10"]["q1"] == pytest.approx(ndcg_q1, abs=1e-6)
    assert result.aggregate["ndcg@10"] == pytest.approx((ndcg_q1 + ndcg_q2 + 0) / 3, abs=1e-6)
    # q3 is judged but unanswered: it scores 0 rather than being dropped from the mean.
    assert result.per_query["recall@100"] == {"q1": 1.0, "q2": 1.0, "q3": 0.0}
    assert result.aggregate["mrr@10"] == pytest.approx((1 / 2 + 1 / 2 + 0) / 3)


def test_relevance_threshold_applies_to_binary_measures_only():
    strict = evaluate(RUN, QRELS, rel_threshold=2)
    # Only "a" (grade 2, rank 3) counts for q1; q2 and q3 have nothing at grade >= 2.
    assert strict.aggregate["mrr@10"] == pytest.approx((1 / 3) / 3)
    assert strict.per_query["recall@100"]["q1"] == 1.0
    assert strict.aggregate["ndcg@10"] == pytest.approx(evaluate(RUN, QRELS, 1).aggregate["ndcg@10"])


def test_mrr_is_cut_at_ten():
    run = {"q2": {f"n{i}": 100.0 - i for i in range(10)} | {"x": 1.0}}
    assert evaluate(run, {"q2": {"x": 1}}).aggregate["mrr@10"] == 0.0
    assert evaluate(run, {"q2": {"x": 1}}).aggregate["recall@100"] == 1.0


def test_invalid_threshold():
    with pytest.raises(ValueError):
        evaluate(RUN, QRELS, rel_threshold=0)


def test_ndcg_judge_matches_trec_eval_on_graded_qrels_and_partial_runs():
    import random

    from braid.common.metrics import NdcgJudge

    rng = random.Random(3)
    docs = [f"d{i}" for i in range(40)]
    qrels = {f"q{q}": {doc: rng.choice([0, 0, 1, 2, 3]) for doc in rng.sample(docs, 12)} for q in range(30)}
    qrels["q-unjudged"] = {"d1": 0}  # no positive grade: not an evaluated query for either
    runs = {qid: rng.sample(docs, rng.choice([0, 3, 10, 25])) for qid in list(qrels)[:-3]}  # some queries unanswered
    scored = {qid: {doc: float(len(ids) - rank) for rank, doc in enumerate(ids)} for qid, ids in runs.items()}
    judge = NdcgJudge(qrels, 10)
    assert judge.mean(runs) == pytest.approx(evaluate(scored, qrels).aggregate["ndcg@10"], abs=1e-12)
    assert judge("q0", []) == 0.0
