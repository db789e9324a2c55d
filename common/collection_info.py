"""``collection.json``: what a collection folder built from a user's documents records about itself.

A collection is a BEIR-layout folder (``corpus.jsonl``, queries and qrels optional) under the data directory, so
every command that takes ``--dataset`` takes it by name; this file says where its documents came from and how
they were cut into passages, which search needs to report hits per document.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from braid.common.errors import BraidError

COLLECTION_FILE = "collection.json"


@dataclass(frozen=True)
class PassageSettings:
    """Overlapping windows of ``words`` words, each starting ``words - overlap`` words after the previous one."""

    words: int
    overlap: int

    def __post_init__(self) -> None:
        if self.words < 1:
            raise BraidError(f"passage length must be at least 1 word, got {self.words}")
        if not 0 <= self.overlap < self.words:
            raise BraidError(f"passage overlap must be between 0 and {self.words - 1} words, got {self.overlap}")


@dataclass(frozen=True)
class CollectionInfo:
    name: str
    source: str
    format: str
    documents: int
    passages: PassageSettings | None = None
    units: int = 0  # what the indexes hold: passages when cut, else the documents
    created_at: str = ""
    fields: dict[str, str] = field(default_factory=dict)  # typed metadata fields (common.metadata_schema)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def read_collection_info(root: Path) -> CollectionInfo | None:
    """The folder's collection.json, or None for a folder that is a plain dataset."""
    path = Path(root) / COLLECTION_FILE
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        passages = raw.pop("passages", None)
        return CollectionInfo(**raw, passages=PassageSettings(**passages) if passages else None)
    except (json.JSONDecodeError, TypeError) as error:
        raise BraidError(f"{path} is not a braid collection file ({error})") from None
