"""Long documents as overlapping passages, and hits reported per document as its best passage (MaxP).

Dai and Callan ("Deeper Text Understanding for IR with Contextual Neural Language Modeling", SIGIR 2019) cut a
document into overlapping windows, score every window, and score the document as its best window (MaxP); BM25
and neural encoders both see text of the length they handle well (encoders truncate at 256-512 tokens, so a long
document's end would otherwise never be seen). A passage's id is ``<document id>#<n>`` (n from 0), so the
document is recovered from any hit without a lookup table; passages keep their document's title and metadata.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from braid.common.collection_info import PassageSettings
from braid.common.dataset import Document

SEPARATOR = "#"


def split_document(document: Document, settings: PassageSettings) -> list[Document]:
    """The document's passages, in order: one when it is no longer than a passage."""
    words = document.text.split()
    step = settings.words - settings.overlap
    starts = range(0, max(len(words) - settings.overlap, 1), step)
    return [
        Document(
            f"{document.doc_id}{SEPARATOR}{number}",
            document.title,
            " ".join(words[start : start + settings.words]),
            document.metadata,
        )
        for number, start in enumerate(starts)
    ]


def split_documents(documents: Iterable[Document], settings: PassageSettings) -> Iterator[Document]:
    for document in documents:
        yield from split_document(document, settings)


def document_of(passage_id: str) -> str:
    """The id of the document a passage was cut from."""
    doc_id, separator, number = passage_id.rpartition(SEPARATOR)
    return doc_id if separator and number.isdigit() else passage_id
