"""Ranking a list longer than one prompt: RankGPT's sliding window (Sun et al., "Is ChatGPT Good at Search?",
2023), back to front, so that relevant documents from the tail bubble up to the head.

Any window ranker fits: FIRST and attention scoring reorder each window by their scores, the generation
baseline by its generated permutation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence


def sliding_rerank(
    count: int, window: int, stride: int, rank_window: Callable[[Sequence[int]], list[int]]
) -> list[int]:
    """The final order of items 0..count-1 (their first-stage order), ``rank_window`` reordering each window.

    ``rank_window(items)`` gets item indices in the current order and returns them best first. One window
    covers the list when ``count <= window``.
    """
    order = list(range(count))
    if count <= window:
        return list(rank_window(order)) if count else []
    end = count
    while True:
        start = max(0, end - window)
        order[start:end] = rank_window(order[start:end])
        if start == 0:
            return order
        end -= stride
