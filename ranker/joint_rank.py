"""JointRank: a long list ranked in one batched call over overlapping blocks, aggregated into one order.

Dedov et al., "JointRank: Rank Large Sets with Single Queries" (2025): sliding windows are sequential (each window
waits for the one behind it, and a relevant document must bubble up window by window); JointRank covers the list
with overlapping blocks of ``window`` documents, a design in which every document sits in ``replicas`` blocks, ranks
all blocks at once, and reads one ranking from the pairwise wins the blocks imply (a document beats every document
ranked below it in a block they share): PageRank over the graph whose edges run from loser to winner (the default),
or each document's share of wins among its comparisons.

In BlockRank's layout the blocks cost less than their sum: a document attends only to the instruction and itself, so
each distinct document is computed once for every block that holds it (one :meth:`BlockForward.run_many` walk) and
only the blocks' query parts repeat.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import numpy as np

from braid.ranker.rerank_spec import AGGREGATIONS


def block_design(count: int, window: int, replicas: int, seed: int = 0) -> list[list[int]]:
    """Blocks of at most ``window`` of the items 0..count-1, each item in ``replicas`` blocks (one per replica).

    The first replica cuts the first-stage order into consecutive blocks; each further one cuts a seeded random
    permutation, so that every item meets other neighbours and the win graph connects the whole list. Blocks of a
    replica differ in size by at most one (no near-empty last block, which would compare almost nothing).
    """
    if count < 1 or window < 2 or replicas < 1:
        raise ValueError(f"need count >= 1, window >= 2, replicas >= 1, got {count}, {window}, {replicas}")
    parts = math.ceil(count / window)
    bounds = [round(part * count / parts) for part in range(parts + 1)]
    rng = random.Random(seed)
    blocks = []
    for replica in range(replicas):
        order = list(range(count))
        if replica:
            rng.shuffle(order)
        blocks += [order[bounds[part] : bounds[part + 1]] for part in range(parts)]
    return blocks


def win_matrix(count: int, rankings: Sequence[Sequence[int]]) -> np.ndarray:
    """(count x count) number of blocks in which item i was ranked above item j; ``rankings`` are best first."""
    wins = np.zeros((count, count), dtype=np.float64)
    for ranking in rankings:
        items = np.asarray(ranking, dtype=np.int64)
        for place, winner in enumerate(items[:-1].tolist()):
            wins[winner, items[place + 1 :]] += 1
    return wins


def pagerank(wins: np.ndarray, damping: float = 0.85, tolerance: float = 1e-12, max_steps: int = 1000) -> np.ndarray:
    """Stationary mass of a walk that moves from each item to the items that beat it (in proportion to wins), and
    with probability 1 - ``damping`` (or when nothing beat the item) to any item."""
    count = len(wins)
    losses = wins.sum(axis=0)  # column j: how often j lost, the walk's out-weight from j
    transition = np.divide(wins, losses, out=np.zeros_like(wins), where=losses > 0)
    unbeaten = losses == 0
    mass = np.full(count, 1.0 / count)
    for _ in range(max_steps):
        spread = (1.0 - damping) / count + damping * mass[unbeaten].sum() / count
        updated = damping * transition @ mass + spread
        if np.abs(updated - mass).sum() < tolerance:
            return updated
        mass = updated
    return mass


def joint_order(count: int, rankings: Sequence[Sequence[int]], aggregation: str = "pagerank") -> list[int]:
    """One order of items 0..count-1 (best first) from the blocks' rankings; ties keep the first-stage order."""
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {', '.join(AGGREGATIONS)}, got {aggregation!r}")
    wins = win_matrix(count, rankings)
    if aggregation == "pagerank":
        scores = pagerank(wins)
    else:
        compared = wins + wins.T
        scores = np.divide(wins.sum(axis=1), compared.sum(axis=1), out=np.zeros(count), where=compared.sum(axis=1) > 0)
    return sorted(range(count), key=lambda item: -scores[item])
