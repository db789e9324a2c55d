"""What every retriever is to the layers above it: typed protocols that pipelines, tools and services program
against, so that none of them needs to know a concrete retriever class or probe one for a method."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import numpy as np

from braid.retriever.hit import Hit


class Retriever(Protocol):
    """Ranked hits over one index: best first, ties broken by document id, at most ``k``.

    Retriever classes subclass this protocol explicitly to inherit :meth:`document_text`; a class that keeps no
    text simply does not override it.
    """

    def search(self, query: str, k: int = 10) -> list[Hit]: ...

    def batch_search(self, queries: Mapping[str, str], k: int = 1000) -> dict[str, list[Hit]]: ...

    def document_text(self, doc_id: str) -> str | None:
        """The document's text as the index stored it, or None where the index keeps no text."""
        return None


@runtime_checkable
class Scorer(Retriever, Protocol):
    """A retriever that can also score given documents exactly: what a cascade stage rescoring a head needs."""

    def score(self, query: str, doc_ids: list[str]) -> np.ndarray:
        """Scores of ``doc_ids`` for ``query``, in the given order."""
        ...
