"""What a reranker is to the pipeline and the service: one typed call, whatever model or batching is behind it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class Reranker(Protocol):
    """Reorders (doc_id, text) candidates for a query: (doc_id, score) pairs, best first.

    ``deadline`` is a ``time.monotonic()`` instant after which the reranker stops early with
    :class:`~braid.common.errors.DeadlineExceeded`. ``fusion_weight``: the reranker's weight when the pipeline fuses
    its scores with the first stage's (z-scores); None: the reranker's order alone.
    """

    fusion_weight: float | None

    def rerank(
        self, query: str, docs: Sequence[tuple[str, str]], deadline: float | None = None
    ) -> list[tuple[str, float]]: ...
