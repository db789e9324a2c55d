"""Fusion of ranked lists: reciprocal rank fusion and weighted sums of normalized scores.

Reciprocal rank fusion (Cormack, Clarke and Buettcher, SIGIR 2009) scores a document by
sum_i w_i / (k + rank_i(d)), over the lists that retrieved it; ranks start at 1. It ignores score scales, which
makes it robust, but it also throws away how confident each retriever is.

Weighted sums ("convex combination", Bruch, Gai and Ingber, "An Analysis of Fusion Functions for Hybrid
Retrieval", TOIS 2023) score a document by sum_i w_i * norm_i(s_i(d)), where each list is normalized on its own:
``minmax`` maps the list's scores to [0, 1], ``zscore`` subtracts the list's mean and divides by its standard
deviation, ``none`` keeps raw scores. A document a list did not retrieve takes that list's lowest normalized
value (0 for min-max): it was below the cut-off, so the list's minimum bounds its score from above.

A list can also end before its depth because its retriever ran out of matches: BM25 and SPLADE's impact scores
give every document that shares no term with the query the same score, 0, and do not list them. Such a list is
normalized as the list the retriever was asked for, padded to its depth with that score (:class:`ListShape`), and
the documents it left out take that score's normalized value. Normalizing the short list alone would blow up its
scores: on NFCorpus, where the median BM25 list holds 167 of 1,000 documents and one in ten holds 2 or fewer,
z-scores of 2-document lists (+1 and -1, whatever the scores) let BM25 noise outvote the other retrievers.

Both are written as one matrix product: documents x retrievers of per-list values, times the weights. The
pipeline and ``braid tune`` share it, so tuned weights mean exactly what the pipeline computes.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from braid.common.errors import BraidError
from braid.retriever.hit import Hit, RankedList
from braid.retriever.ties import id_ranks

METHODS = ("rrf", "weighted")
NORMALIZATIONS = ("minmax", "zscore", "none")


@dataclass(frozen=True)
class FusionSpec:
    """How a pipeline fuses its retrievers: ``rrf`` (with ``k``) or ``weighted`` (with ``normalization``)."""

    method: str = "rrf"
    k: float = 60.0
    normalization: str = "minmax"
    weights: Mapping[str, float] | None = None  # None: 1.0 for every retriever

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise BraidError(f"fusion method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.normalization not in NORMALIZATIONS:
            raise BraidError(
                f"fusion normalization must be one of {', '.join(NORMALIZATIONS)}, got {self.normalization!r}"
            )
        if self.k < 0:
            raise BraidError(f"fusion k must be >= 0, got {self.k}")
        for name, weight in (self.weights or {}).items():
            if not np.isfinite(weight) or weight < 0:
                raise BraidError(f"fusion weight of {name!r} must be a finite number >= 0, got {weight}")

    def to_dict(self) -> dict[str, Any]:
        """The setting as plain JSON-ready values (what ``braid tune --json`` and ``braid eval`` report)."""
        setting: dict[str, Any] = {"method": self.method}
        setting.update({"k": self.k} if self.method == "rrf" else {"normalization": self.normalization})
        return {**setting, "weights": dict(self.weights or {})}

    def weight_vector(self, names: Sequence[str]) -> np.ndarray:
        weights = self.weights or {}
        return np.array([float(weights.get(name, 1.0)) for name in names], dtype=np.float64)


def check_weight_total(spec: FusionSpec, names: Sequence[str], where: str) -> None:
    """Refuse weights under which every document scores 0: the fused list would be the collection in id order."""
    if not spec.weight_vector(names).sum() > 0:
        raise BraidError(f"{where}: fusion weights sum to 0; give at least one of {', '.join(names)} a weight > 0")


@dataclass(frozen=True)
class ListShape:
    """One ranked list as the retriever was asked for it: ``depth`` hits, and ``unmatched``, the score it gives every
    document it does not match (0 for BM25 and SPLADE), or None where there is no such score (dense, late
    interaction: every document has a score of its own, and a short list just means a small collection)."""

    depth: int
    unmatched: float | None = None

    def left_out(self, hits: int) -> tuple[int, float]:
        """(count, score) of the unmatched documents a list of ``hits`` left out of its depth: ``depth`` - ``hits``
        of them at ``unmatched`` when the retriever has such a score, else none (nothing is known below the list)."""
        if self.unmatched is None or hits >= self.depth:
            return 0, 0.0
        return self.depth - hits, float(self.unmatched)


@dataclass(frozen=True)
class FusionInputs:
    """One query's fusion matrix: the union of retrieved documents x retrievers."""

    doc_ids: list[str]
    values: np.ndarray  # documents x retrievers: RRF terms or normalized scores
    ranks: np.ndarray  # documents x retrievers: 1-based rank, 0 where the list did not retrieve the document
    scores: np.ndarray  # documents x retrievers: raw score, nan where not retrieved

    @cached_property
    def id_rank(self) -> np.ndarray:
        """Each document's position in id order, for tie-breaking; computed once however many weightings."""
        return id_ranks(self.doc_ids)

    def top(self, weights: np.ndarray, k: int, reuse_id_order: bool = False) -> list[tuple[int, float]]:
        """Top ``k`` (row, fused score) under ``weights``, ties broken as :func:`ranked` does.

        ``reuse_id_order`` sorts every id once and keeps that order for later calls: worth it when the same inputs
        are ranked under many weightings (tuning), not for one query's one fusion.
        """
        return ranked(self.doc_ids, self.values @ weights, k, self.id_rank if reuse_id_order else None)


def _affine(scores: np.ndarray, normalization: str, padding: int, unmatched: float) -> tuple[float, float]:
    """(shift, scale) with normalized = (score - shift) / scale; constant lists map to 1 (min-max) or 0 (z-score)
    rather than dividing by 0. ``padding`` more documents scoring ``unmatched`` enter the statistics."""
    if normalization == "none" or scores.size == 0:
        return 0.0, 1.0
    if normalization == "minmax":
        low, high = float(scores.min()), float(scores.max())
        if padding:
            low, high = min(low, unmatched), max(high, unmatched)
        return (low - 1.0, 1.0) if high == low else (low, high - low)
    if normalization == "zscore":
        count = scores.size + padding
        mean = (float(scores.sum()) + padding * unmatched) / count
        std = float(np.sqrt((np.square(scores - mean).sum() + padding * (unmatched - mean) ** 2) / count))
        return (mean, 1.0) if std == 0 else (mean, std)
    raise BraidError(f"fusion normalization must be one of {', '.join(NORMALIZATIONS)}, got {normalization!r}")


def normalize(scores: np.ndarray, normalization: str) -> np.ndarray:
    """Normalize one list's scores; constant lists map to 1 (min-max) or 0 (z-score) rather than dividing by 0."""
    scores = scores.astype(np.float64)
    shift, scale = _affine(scores, normalization, 0, 0.0)
    return (scores - shift) / scale


def fusion_inputs(
    lists: Sequence[RankedList | Sequence[Hit]], spec: FusionSpec, shapes: Sequence[ListShape] | None = None
) -> FusionInputs:
    """Lay out ranked lists (best first) as the matrix that fusion multiplies by the weights; ``shapes``, one per
    list, say which lists ran out of matches before their depth (none, when not given)."""
    if shapes is not None and len(shapes) != len(lists):
        raise ValueError("one shape per list")
    ranked = [item if isinstance(item, RankedList) else RankedList.of_hits(item) for item in lists]
    # Rows in order of first appearance, from C-level passes over the ids (dict.fromkeys, map): a hybrid query fuses
    # 3 x 1000 hits, and per-hit Python steps were most of the fusion's time, more so under concurrent load.
    doc_ids = list(dict.fromkeys(itertools.chain.from_iterable(item.ids for item in ranked)))
    row_of = dict(zip(doc_ids, range(len(doc_ids)), strict=True))
    docs, width = len(doc_ids), len(ranked)
    ranks = np.zeros((docs, width), dtype=np.int64)
    raw = np.full((docs, width), np.nan, dtype=np.float64)
    values = np.zeros((docs, width), dtype=np.float64)
    for column, item in enumerate(ranked):
        if not len(item):
            continue
        rows = np.fromiter(map(row_of.__getitem__, item.ids), dtype=np.int64, count=len(item))
        scores = np.asarray(item.scores, dtype=np.float64)
        ranks[rows, column] = np.arange(1, len(item) + 1)
        raw[rows, column] = scores
        if spec.method == "rrf":
            values[rows, column] = 1.0 / (spec.k + ranks[rows, column])
        else:
            padding, unmatched = shapes[column].left_out(len(item)) if shapes is not None else (0, 0.0)
            shift, scale = _affine(scores, spec.normalization, padding, unmatched)
            normalized = (scores - shift) / scale
            # A document the list did not retrieve: the unmatched score where the list ran out of matches, else the
            # list's lowest (it was below the cut-off).
            values[:, column] = (unmatched - shift) / scale if padding else normalized.min()
            values[rows, column] = normalized
    return FusionInputs(doc_ids, values, ranks, raw)


def ranked(
    doc_ids: Sequence[str], scores: np.ndarray, k: int, id_rank: np.ndarray | None = None
) -> list[tuple[int, float]]:
    """Top ``k`` (row, score), by descending score then ascending id (``id_rank``: precomputed id order).

    Exactly tied scores (frequent with RRF) are nudged apart by a negligible amount, so every tool that
    re-sorts the run by score alone (trec_eval breaks ties by descending id) keeps this order.
    """
    if len(doc_ids) == 0:
        return []
    if id_rank is None:
        # Only the rows that can make the top k need an id order: those scoring at least the k-th best score (more
        # than k where ties straddle the cut). Sorting all ids (thousands in a hybrid) cost more than the fusion.
        head = np.flatnonzero(scores >= np.partition(scores, -k)[-k]) if k < len(scores) else np.arange(len(scores))
        head_ids = np.asarray([doc_ids[row] for row in head.tolist()], dtype=object)
        order = head[np.lexsort((id_ranks(head_ids), -scores[head]))][:k]
    else:
        order = np.lexsort((id_rank, -scores))[:k]
    result: list[tuple[int, float]] = []
    for row in order.tolist():
        score = float(scores[row])
        if result and score >= result[-1][1]:
            score = float(np.nextafter(result[-1][1], -np.inf))
        result.append((row, score))
    return result


def fused(
    lists: Sequence[RankedList | Sequence[Hit]],
    names: Sequence[str],
    spec: FusionSpec,
    k: int,
    shapes: Sequence[ListShape] | None = None,
) -> tuple[FusionInputs, list[tuple[int, float]]]:
    """Fuse ranked lists: the fusion matrix (for explanations) and its top ``k`` (row, fused score)."""
    if len(lists) != len(names):
        raise ValueError("one name per list")
    inputs = fusion_inputs(lists, spec, shapes)
    return inputs, inputs.top(spec.weight_vector(names), k)


def fuse(
    lists: Sequence[RankedList | Sequence[Hit]],
    names: Sequence[str],
    spec: FusionSpec,
    k: int,
    shapes: Sequence[ListShape] | None = None,
) -> list[Hit]:
    """Fuse ranked lists into the top ``k`` hits."""
    inputs, top = fused(lists, names, spec, k, shapes)
    return [Hit(inputs.doc_ids[row], score) for row, score in top]


def fuse_with_first_stage(rerank: Sequence[float], first_stage: Sequence[float], weight: float) -> np.ndarray:
    """``weight`` x the reranker's z-scores + (1 - ``weight``) x the first stage's, over the reranked head: the
    weighted z-score fusion above, applied to two score lists of the same documents (the pipeline's rerank stage
    and ``braid train ranker --head``'s choice of the weight both use it)."""
    llm = normalize(np.asarray(rerank, dtype=np.float64), "zscore")
    first = normalize(np.asarray(first_stage, dtype=np.float64), "zscore")
    return weight * llm + (1.0 - weight) * first
