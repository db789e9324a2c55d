"""The in-memory view of a test collection: documents, queries and graded relevance judgments."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from braid.common.collection_info import PassageSettings
from braid.common.errors import BraidError

Qrels = dict[str, dict[str, int]]


@dataclass(frozen=True, slots=True)
class Document:
    """One document of a collection; ``contents`` is what lexical indexes see (title, then text). ``metadata``: the
    record's other fields (a user's own documents; None for benchmark collections)."""

    doc_id: str
    title: str
    text: str
    metadata: dict[str, Any] | None = None

    @property
    def contents(self) -> str:
        return f"{self.title} {self.text}".strip() if self.title else self.text


@dataclass
class Dataset:
    """A collection on disk in one of the supported layouts, read lazily.

    ``corpus_reader`` streams documents so that index builds never need the whole corpus in memory;
    queries and qrels are small and are parsed on first use.
    """

    name: str
    root: Path
    layout: str
    corpus_files: tuple[Path, ...]
    corpus_reader: Callable[[], Iterator[Document]]
    queries_reader: Callable[[], dict[str, str]]
    qrels_readers: dict[str, Callable[[], Qrels]]
    default_rel_threshold: int = 1
    # A collection of passages cut from longer documents (:mod:`braid.common.passages`): hits are reported per
    # document, each scoring as its best passage.
    passages: PassageSettings | None = None
    # Typed metadata fields a search may filter on (declared at creation: :mod:`braid.common.metadata_schema`).
    fields: dict[str, str] = field(default_factory=dict)
    _queries: dict[str, str] | None = field(default=None, repr=False)
    _qrels: dict[str, Qrels] = field(default_factory=dict, repr=False)
    _checksum: str | None = field(default=None, repr=False)

    def iter_corpus(self) -> Iterator[Document]:
        return self.corpus_reader()

    def corpus(self) -> dict[str, Document]:
        return {doc.doc_id: doc for doc in self.iter_corpus()}

    @property
    def splits(self) -> list[str]:
        return sorted(self.qrels_readers)

    def queries(self) -> dict[str, str]:
        if self._queries is None:
            self._queries = self.queries_reader()
        return self._queries

    def qrels(self, split: str) -> Qrels:
        if not self.qrels_readers:
            raise BraidError(
                f"{self.name!r} holds documents only: evaluation needs queries and relevance judgments beside them "
                "(queries.jsonl and qrels/<split>.tsv in its folder, BEIR layout)"
            )
        if split not in self.qrels_readers:
            allowed = ", ".join(self.splits) or "none"
            raise BraidError(f"dataset {self.name!r} has no {split!r} split (available: {allowed})")
        if split not in self._qrels:
            self._qrels[split] = self.qrels_readers[split]()
        return self._qrels[split]

    def split_queries(self, split: str) -> dict[str, str]:
        """The queries judged in ``split``, in the order of the queries file."""
        judged = self.qrels(split)
        return {qid: text for qid, text in self.queries().items() if qid in judged}

    def known_qrels(self, split: str) -> Qrels:
        """The split's qrels for queries that exist: a judged query with no text cannot be run or scored."""
        queries = self.queries()
        return {qid: docs for qid, docs in self.qrels(split).items() if qid in queries}

    def judged_queries(self, split: str) -> dict[str, str]:
        """The split's judged queries, refusing a split with none or with an empty query text (what runs score)."""
        queries = self.split_queries(split)
        empty = [qid for qid, text in queries.items() if not text.strip()]
        if empty:
            raise BraidError(f"{self.name}: {len(empty)} query(ies) with empty text, e.g. id {empty[0]!r}")
        if not queries:
            raise BraidError(f"{self.name}: no queries of the {split!r} split are in the queries file")
        return queries

    def corpus_checksum(self) -> str:
        """sha256 over the corpus files' bytes: what index manifests record to detect a changed corpus."""
        if self._checksum is None:
            digest = hashlib.sha256()
            for path in self.corpus_files:
                with path.open("rb") as handle:
                    for block in iter(lambda h=handle: h.read(1 << 20), b""):
                        digest.update(block)
            self._checksum = digest.hexdigest()
        return self._checksum
