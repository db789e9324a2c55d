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

from braid.retriever.hit import Hit, RankedList

#: ``search(depth)`` of an engine: its top ``depth`` as (internal document numbers, scores), best first.
ArraySearch = Callable[[int], tuple[np.ndarray, np.ndarray]]
#: ``search_after(n, (number, score))``: the ``n`` hits that follow that hit in the engine's order (Lucene's
#: ``searchAfter``), to read on past a tie without searching from the top again.
AfterSearch = Callable[[int, tuple[int, float]], tuple[np.ndarray, np.ndarray]]

#: Hits read past a tie at the cut in the first continuation; each further one reads twice as many.
CONTINUATION = 64
#: The first search reads k / LOOKAHEAD more hits than k + 1, so that most ties at the cut end inside it: at a hybrid's
#: depth 1000, BM25 on scifact saw a tie cross rank 1001 in 48% of 300 queries (3 more hits on average, 8 at the 90th
#: percentile), each costing a second search; reading 1,063 hits first, 1 of the 300 needed one (same lists).
LOOKAHEAD = 16


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

    def top_k(self, search: ArraySearch, k: int, search_after: AfterSearch | None = None) -> RankedList:
        """The top ``k`` by score, ties broken by ascending id, whatever order the engine returns tied hits in."""
        numbers, scores = self.fetch(search, k, search_after)
        order, adjusted = tie_order(scores, self.id_rank[numbers])
        return RankedList(self.ids[numbers[order[:k]]].tolist(), adjusted[:k])

    def top_k_raw(
        self, search: ArraySearch, k: int, search_after: AfterSearch | None = None
    ) -> tuple[list[str], np.ndarray]:
        """Ids and raw scores of every hit that can be in the top ``k`` (those tied with rank ``k`` included), in
        the engine's order: one shard's share of a sharded top ``k``, whose ties the merge breaks."""
        numbers, scores = self.fetch(search, k, search_after)
        return self.ids[numbers].tolist(), scores

    def fetch(
        self, search: ArraySearch, k: int, search_after: AfterSearch | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The hits that can be in the top ``k``: the first ``k`` and every hit tied with rank ``k``.

        A search engine cuts a tie that spans rank ``k`` by its internal doc numbers, which depend on how the index
        was built (indexing threads, segment merges): two builds of the same documents could return different
        documents at the cut. One hit beyond ``k`` (and ``k`` / :data:`LOOKAHEAD` more) is fetched to see whether the
        score at rank ``k`` continues; while it does to the end of what was fetched, the engine reads on after the
        last hit (``search_after``, in steps from :data:`CONTINUATION` hits, doubling), or without one searches
        again twice as deep, until the tie ends.
        """
        total = len(self.ids)
        depth = min(total, k + 1 + k // LOOKAHEAD)
        while True:
            numbers, scores = search(depth)
            if len(numbers) <= k:
                return numbers, scores
            score = rounded(scores)
            cut = score[k - 1]
            if depth < total and score[-1] >= cut:
                if search_after is None:
                    depth = min(total, depth * 2)
                    continue
                numbers, scores, score = _read_past_tie(search_after, numbers, scores, score, cut)
            # Only hits tied with rank k or above it can end up in the top k (scores come best first).
            keep = score >= cut
            return numbers[keep], scores[keep]


def _read_past_tie(
    search_after: AfterSearch, numbers: np.ndarray, scores: np.ndarray, score: np.ndarray, cut: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``numbers``/``scores`` (``score``: rounded) continued until a hit scores below ``cut`` or the hits run out."""
    parts = [(numbers, scores, score)]
    step = CONTINUATION
    while True:
        last_numbers, last_scores, _ = parts[-1]
        more_numbers, more_scores = search_after(step, (int(last_numbers[-1]), float(last_scores[-1])))
        if len(more_numbers) == 0:
            break
        more = rounded(more_scores)
        parts.append((more_numbers, more_scores, more))
        if len(more_numbers) < step or more[-1] < cut:
            break
        step *= 2
    return tuple(np.concatenate(columns) for columns in zip(*parts, strict=True))  # type: ignore[return-value]
