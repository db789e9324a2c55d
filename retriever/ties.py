"""Deterministic tie-breaking, as Anserini does it, so that runs reproduce Pyserini's published figures.

Anserini rounds scores to 4 decimals, orders equal scores by ascending document id, and lowers each further
tied score by 1e-6 so the order survives any tool that re-sorts by score. Without it, tied documents (frequent
with duplicated texts, and with the integer scores of impact indexes) are ordered by Lucene's internal doc
number, and trec_eval then re-breaks them by descending id: nDCG@10 on NFCorpus moves by 0.001.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from braid.retriever.hit import Hit


def break_ties(hits: list[Hit]) -> list[Hit]:
    # Plain tuples of (negated rounded score, id) sort into the order wanted without a key function, which cost
    # more than the search itself at a depth of 1000.
    rounded = [(-round(hit.score, 4), hit.doc_id) for hit in hits]
    rounded.sort()
    adjusted: list[Hit] = []
    previous, run = None, 0
    for negated, doc_id in rounded:
        score = -negated
        run = run + 1 if score == previous else 0
        previous = score
        adjusted.append(Hit(doc_id, score - run * 1e-6))
    return adjusted


def top_k(search: Callable[[int], Sequence[Hit]], k: int, total: int) -> list[Hit]:
    """The top ``k`` by score, ties broken by ascending id, whatever order the engine returns tied hits in.

    A search engine cuts a tie that spans rank ``k`` by its internal doc numbers, which depend on how the index was
    built (indexing threads, segment merges): two builds of the same documents could return different documents at
    the cut. One hit beyond ``k`` is fetched to see whether the score at rank ``k`` continues; while it does to the
    end of what was fetched, the fetch deepens (doubling) until the tie ends; then ties are broken by id and ``k``
    kept. ``search(n)`` returns the engine's top ``n``.
    """
    depth = min(total, k + 1)
    while True:
        hits = search(depth)
        if len(hits) <= k:
            return break_ties(list(hits))
        cut = round(hits[k - 1].score, 4)
        if depth >= total or round(hits[-1].score, 4) < cut:
            # Only hits tied with rank k or above it can end up in the top k (scores come best first).
            return break_ties([hit for hit in hits if round(hit.score, 4) >= cut])[:k]
        depth = min(total, depth * 2)
