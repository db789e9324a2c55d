from braid.retriever.hit import Hit
from braid.retriever.ties import break_ties


def test_ties_are_broken_by_ascending_id_and_made_distinct():
    hits = [Hit("d9", 2.00004), Hit("b", 1.5), Hit("a", 1.50001), Hit("c", 1.5), Hit("z", 3.0)]
    assert break_ties(hits) == [
        Hit("z", 3.0),
        Hit("d9", 2.0),
        Hit("a", 1.5),
        Hit("b", 1.5 - 1e-6),
        Hit("c", 1.5 - 2e-6),
    ]


def test_top_k_does_not_depend_on_the_engines_order_of_tied_hits():
    from braid.retriever.ties import top_k

    scores = {"a": 3.0, "b": 2.0, "c": 2.0, "d": 2.0, "e": 2.0, "f": 1.0}
    calls = []

    def engine(order):
        def search(depth):
            calls.append(depth)
            ranked = sorted(scores, key=lambda doc: (-scores[doc], order.index(doc)))
            return [Hit(doc, scores[doc]) for doc in ranked[:depth]]

        return search

    # Two "indexes" with opposite internal orders of the tied documents give the same top 2 and top 3.
    for k in (2, 3):
        first = top_k(engine(list("abcdef")), k, 6)
        second = top_k(engine(list("afedcb")), k, 6)
        assert [h.doc_id for h in first] == [h.doc_id for h in second] == list("abc")[:k]
    assert calls[0] == 3 and 6 in calls  # the tie at rank 2 ran past the first fetch: fetched deeper
    calls.clear()
    assert [h.doc_id for h in top_k(engine(list("abcdef")), 1, 6)] == ["a"] and calls == [2]  # no tie: one fetch
