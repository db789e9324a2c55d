"""Deterministic tie-breaking, as Anserini does it, so that runs reproduce Pyserini's published figures.

Anserini rounds scores to 4 decimals, orders equal scores by ascending document id, and lowers each further
tied score by 1e-6 so the order survives any tool that re-sorts by score. Without it, tied documents (frequent
with duplicated texts, and with the integer scores of impact indexes) are ordered by Lucene's internal doc
number, and trec_eval then re-breaks them by descending id: nDCG@10 on NFCorpus moves by 0.001.

It runs on arrays: a fused hybrid query breaks the ties of thousands of hits, and per-hit Python (``round`` on
each score, a tuple sort) cost several times the Lucene search it followed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from braid.retriever.hit import Hit

#: ``search(depth)`` of an engine: its top ``depth`` as (internal document numbers, scores), best first.
ArraySearch = Callable[[int], tuple[np.ndarray, np.ndarray]]


def id_ranks(doc_ids: Sequence[str]) -> np.ndarray:
    """Each id's position in ascending id order (Python's string order)."""
    return np.argsort(np.argsort(np.asarray(doc_ids, dtype=object), kind="stable"), kind="stable")


def rounded(scores: np.ndarray) -> np.ndarray:
    """``round(score, 4)`` of each score, as float64, exactly as Python's ``round`` gives it.

    numpy rounds by rint(x * 1e4) / 1e4. For a float32 score x * 1e4 is exact in float64 (24 + 14 significant bits),
    so rint sees the true value and the division returns the double nearest the 4-decimal result, which is what
    Python's correctly rounded ``round`` returns too. A float64 score could sit within an ulp of a half-way point,
    where the product's rounding would decide; those go through Python's ``round``.
    """
    if scores.dtype == np.float32:
        return np.round(scores.astype(np.float64), 4)
    return np.array([round(score, 4) for score in np.asarray(scores, dtype=np.float64).tolist()], dtype=np.float64)


def tie_order(scores: np.ndarray, id_rank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The order that breaks ties (by descending rounded score, then ascending id) and the scores in that order,
    each tied score after the first lowered by 1e-6 per place. ``id_rank``: each entry's place in id order."""
    score = rounded(scores)
    order = np.lexsort((id_rank, -score))
    score = score[order]
    if score.size == 0:
        return order, score
    starts = np.flatnonzero(np.r_[True, score[1:] != score[:-1]])
    run = np.arange(score.size) - np.repeat(starts, np.diff(np.r_[starts, score.size]))
    return order, score - run * 1e-6


def break_ties(hits: list[Hit]) -> list[Hit]:
    ids = [hit.doc_id for hit in hits]
    order, scores = tie_order(np.array([hit.score for hit in hits], dtype=np.float64), id_ranks(ids))
    return [Hit(ids[row], score) for row, score in zip(order.tolist(), scores.tolist(), strict=True)]


class DocIds:
    """A collection's document ids by internal document number, and their id order: what turns an engine's
    (numbers, scores) into tie-broken hits without per-hit Python."""

    def __init__(self, ids: Sequence[str]) -> None:
        self.ids = np.asarray(ids, dtype=object)
        self.id_rank = id_ranks(ids)  # sorted once per opened index, not per query

    def __len__(self) -> int:
        return len(self.ids)

    def top_k(self, search: ArraySearch, k: int) -> list[Hit]:
        """The top ``k`` by score, ties broken by ascending id, whatever order the engine returns tied hits in."""
        numbers, scores = self.fetch(search, k)
        order, adjusted = tie_order(scores, self.id_rank[numbers])
        order, adjusted = order[:k], adjusted[:k]
        ids = self.ids[numbers[order]].tolist()
        return [Hit(doc_id, score) for doc_id, score in zip(ids, adjusted.tolist(), strict=True)]

    def top_k_raw(self, search: ArraySearch, k: int) -> tuple[list[str], np.ndarray]:
        """Ids and raw scores of every hit that can be in the top ``k`` (those tied with rank ``k`` included), in
        the engine's order: one shard's share of a sharded top ``k``, whose ties the merge breaks."""
        numbers, scores = self.fetch(search, k)
        return self.ids[numbers].tolist(), scores

    def fetch(self, search: ArraySearch, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The hits that can be in the top ``k``: the first ``k`` and every hit tied with rank ``k``.

        A search engine cuts a tie that spans rank ``k`` by its internal doc numbers, which depend on how the index
        was built (indexing threads, segment merges): two builds of the same documents could return different
        documents at the cut. One hit beyond ``k`` is fetched to see whether the score at rank ``k`` continues; while
        it does to the end of what was fetched, the fetch deepens (doubling) until the tie ends.
        """
        total = len(self.ids)
        depth = min(total, k + 1)
        while True:
            numbers, scores = search(depth)
            if len(numbers) <= k:
                return numbers, scores
            score = rounded(scores)
            cut = score[k - 1]
            if depth < total and score[-1] >= cut:
                depth = min(total, depth * 2)
                continue
            # Only hits tied with rank k or above it can end up in the top k (scores come best first).
            keep = score >= cut
            return numbers[keep], scores[keep]
