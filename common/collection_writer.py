"""Write a collection folder from a user's documents: all of it, or nothing at its name.

The documents are read (:mod:`braid.common.document_source`), cut into passages when asked
(:mod:`braid.common.passages`) and written as a BEIR ``corpus.jsonl`` (other fields under ``"metadata"``, as BEIR
keeps them) with its ``collection.json``, in a hidden staging folder beside the final one. The caller builds the
indexes from the staged folder under the collection's final name (index folders are named by collection name and
corpus checksum, so they are found again after the move) and then publishes it: one rename. A malformed source,
a failed build or a killed process leaves no collection behind, only the staging folder, which the next write of
that name removes.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from tqdm import tqdm

from braid.common.collection_info import COLLECTION_FILE, CollectionInfo, PassageSettings
from braid.common.document_source import detect_format, read_documents
from braid.common.errors import BraidError
from braid.common.metadata_schema import check_document
from braid.common.passages import split_document

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name or ""):
        raise BraidError(
            f"invalid collection name {name!r}: use letters, digits, '.', '_' and '-', starting with a letter or digit"
        )
    return name


@dataclass(frozen=True)
class StagedCollection:
    path: Path  # the staging folder, complete
    final: Path
    info: CollectionInfo

    def publish(self, replace: bool = False) -> Path:
        """Move the staged collection to its name; ``replace`` swaps out a collection already there."""
        if self.final.exists():
            if not replace:
                raise BraidError(f"collection {self.final} already exists; pass --force to replace it")
            retired = self.final.with_name(f".{self.final.name}.old-{os.getpid()}")
            os.replace(self.final, retired)
            os.replace(self.path, self.final)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(self.path, self.final)
        return self.final

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def stage_collection(
    name: str,
    source: Path,
    data_root: Path,
    fmt: str | None = None,
    passages: PassageSettings | None = None,
    fields: dict[str, str] | None = None,
) -> StagedCollection:
    """Read ``source`` and write the collection beside ``data_root / name`` (not yet at its name); ``fields``: the
    typed metadata fields searches may filter on, every document's values checked against them."""
    fields = dict(fields or {})
    final = Path(data_root) / check_name(name)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.with_name(f".{final.name}.staging")
    shutil.rmtree(staging, ignore_errors=True)  # an earlier attempt that never published
    staging.mkdir()
    try:
        documents = units = 0
        resolved = Path(source).resolve()
        with (
            (staging / "corpus.jsonl").open("w", encoding="utf-8") as corpus,
            tqdm(desc=f"read {resolved.name}", unit="doc", file=sys.stderr) as bar,
        ):
            for document in read_documents(resolved, fmt):
                metadata = check_document(fields, document.metadata, f"{source}: document {document.doc_id!r}")
                document = replace(document, metadata=metadata)
                pieces = split_document(document, passages) if passages else [document]
                for piece in pieces:
                    row = {"_id": piece.doc_id, "title": piece.title, "text": piece.text}
                    if piece.metadata:
                        row["metadata"] = piece.metadata
                    corpus.write(json.dumps(row, ensure_ascii=False) + "\n")
                documents += 1
                units += len(pieces)
                bar.update(1)
            corpus.flush()
            os.fsync(corpus.fileno())
        if documents == 0:
            raise BraidError(f"{source} holds no documents")
        info = CollectionInfo(
            name=name,
            source=str(resolved),
            format=fmt or detect_format(resolved),
            documents=documents,
            passages=passages,
            units=units,
            created_at=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            fields=fields,
        )
        (staging / COLLECTION_FILE).write_text(json.dumps(info.to_json(), indent=2) + "\n", encoding="utf-8")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return StagedCollection(staging, final, info)
