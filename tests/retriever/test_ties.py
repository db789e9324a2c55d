from retriever.hit import Hit
from retriever.ties import break_ties


def test_ties_are_broken_by_ascending_id_and_made_distinct():
    hits = [Hit("d9", 2.00004), Hit("b", 1.5), Hit("a", 1.50001), Hit("c", 1.5), Hit("z", 3.0)]
    assert break_ties(hits) == [
        Hit("z", 3.0),
        Hit("d9", 2.0),
        Hit("a", 1.5),
        Hit("b", 1.5 - 1e-6),
        Hit("c", 1.5 - 2e-6),
    ]
