import numpy as np
import pytest

from braid.retriever.hit import Hit
from braid.retriever.ties import LOOKAHEAD, DocIds, break_ties, rounded


def reference_break_ties(hits: list[Hit]) -> list[Hit]:
    """Anserini's rule written the plain way: sort by (rounded score desc, id asc), lower each repeat by 1e-6."""
    adjusted, previous, run = [], None, 0
    for hit in sorted(hits, key=lambda h: (-round(h.score, 4), h.doc_id)):
        score = round(hit.score, 4)
        run = run + 1 if score == previous else 0
        previous = score
        adjusted.append(Hit(hit.doc_id, score - run * 1e-6))
    return adjusted


def test_ties_are_broken_by_ascending_id_and_made_distinct():
    hits = [Hit("d9", 2.00004), Hit("b", 1.5), Hit("a", 1.50001), Hit("c", 1.5), Hit("z", 3.0)]
    assert break_ties(hits) == [
        Hit("z", 3.0),
        Hit("d9", 2.0),
        Hit("a", 1.5),
        Hit("b", 1.5 - 1e-6),
        Hit("c", 1.5 - 2e-6),
    ]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_array_rounding_equals_pythons_round(dtype):
    rng = np.random.default_rng(0)
    # Half-way points (x.xxxx5) and their float neighbours are where a product-and-rint rounding could differ.
    halves = (np.arange(-20000, 20000) + 0.5) / 1e4
    values = np.concatenate([rng.normal(0, 30, 20000), halves, np.nextafter(halves, 0), np.nextafter(halves, 1)])
    values = values.astype(dtype)
    assert rounded(values).tolist() == [round(float(v), 4) for v in values]


def test_break_ties_equals_the_plain_rule_on_many_ties():
    rng = np.random.default_rng(1)
    ids = [f"d{n}" for n in rng.permutation(3000)]
    scores = rng.integers(0, 40, 3000) / 7 + rng.choice([0, 1e-5, 4e-5], 3000)
    hits = [Hit(doc_id, float(score)) for doc_id, score in zip(ids, scores, strict=True)]
    assert break_ties(hits) == reference_break_ties(hits)


def test_top_k_does_not_depend_on_the_engines_order_of_tied_hits():
    scores = {"a": 3.0, "b": 2.0, "c": 2.0, "d": 2.0, "e": 2.0, "f": 1.0}
    calls = []

    def engine(order: str, ids: DocIds):
        numbers = {doc_id: number for number, doc_id in enumerate(ids.ids.tolist())}

        def search(depth):
            calls.append(depth)
            ranked = sorted(scores, key=lambda doc: (-scores[doc], order.index(doc)))[:depth]
            return np.array([numbers[doc] for doc in ranked]), np.array([scores[d] for d in ranked], np.float32)

        return search

    # Two "indexes" with different internal numbers and opposite orders of the tied documents agree on the top k.
    first_ids, second_ids = DocIds(list("abcdef")), DocIds(list("fcabed"))
    for k in (2, 3):
        first = first_ids.top_k(engine("abcdef", first_ids), k).hits()
        second = second_ids.top_k(engine("afedcb", second_ids), k).hits()
        assert first == second == reference_break_ties([Hit(d, scores[d]) for d in scores])[:k]
    assert calls[0] == 3 and 6 in calls  # the tie at rank 2 ran past the first fetch: fetched deeper
    calls.clear()
    assert first_ids.top_k(engine("abcdef", first_ids), 1).ids == ["a"] and calls == [2]  # one fetch


@pytest.mark.parametrize("k", [1, 5, 40, 99, 150])
def test_reading_on_after_the_last_hit_equals_searching_deeper(k):
    rng = np.random.default_rng(k)
    ids = DocIds([f"d{n:03d}" for n in rng.permutation(200)])
    # Long runs of tied scores (integer impacts) so that the cut at rank k usually falls inside one.
    scores = rng.integers(0, 9, 200).astype(np.float32)
    order = np.lexsort((np.arange(200), -scores))  # the engine's order: score, then internal number
    reads = []

    def search(depth):
        reads.append(("top", depth))
        return order[:depth], scores[order[:depth]]

    def search_after(depth, after):
        reads.append(("after", depth))
        position = int(np.flatnonzero(order == after[0])[0]) + 1
        assert scores[order[position - 1]] == np.float32(after[1])
        return order[position : position + depth], scores[order[position : position + depth]]

    deeper = ids.top_k(search, k)
    searched = list(reads)
    reads.clear()
    assert ids.top_k(search, k, search_after) == deeper
    first = k + 1 + k // LOOKAHEAD
    assert reads[0] == ("top", first) and all(kind == "after" for kind, _ in reads[1:])
    if any(kind == "top" and depth > first for kind, depth in searched):  # the tie ran past the first fetch
        assert len(reads) > 1
