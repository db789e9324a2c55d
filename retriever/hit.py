"""One ranked result, and a ranked list held as arrays."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Hit:
    doc_id: str
    score: float


@dataclass(frozen=True, eq=False)
class RankedList:
    """A retriever's top hits as two parallel sequences, best first, ties broken: ids and float64 scores.

    What fusion reads. A hybrid query fuses three lists of 1,000 hits; one :class:`Hit` object per document, and the
    per-hit loops that read them back, cost more than the Lucene and faiss searches under concurrent load.
    """

    ids: list[str]
    scores: np.ndarray

    @classmethod
    def of_hits(cls, hits: Sequence[Hit]) -> RankedList:
        return cls([hit.doc_id for hit in hits], np.array([hit.score for hit in hits], dtype=np.float64))

    def __len__(self) -> int:
        return len(self.ids)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RankedList):
            return NotImplemented
        return self.ids == other.ids and np.array_equal(self.scores, other.scores)

    __hash__ = None  # type: ignore[assignment]  # equal lists hold equal arrays, which do not hash

    def hits(self) -> list[Hit]:
        return list(map(Hit, self.ids, self.scores.tolist()))
