"""Readers for the BEIR layout: corpus.jsonl, queries.jsonl and qrels/<split>.tsv.

Every malformed line raises :class:`DataFormatError` naming the file and line, so a broken download or a
hand-edited file is reported where it is broken instead of surfacing later as a wrong metric.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from braid.common.dataset import Document, Qrels
from braid.common.errors import BraidError, DataFormatError


def json_objects(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) of every non-blank line of a JSON-lines file; a line that is not a JSON object, or a
    file that is not UTF-8, is an error naming where."""
    with path.open(encoding="utf-8") as handle:
        try:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as error:
                    raise DataFormatError(path, number, f"invalid JSON ({error.msg} at column {error.colno})") from None
                if not isinstance(value, dict):
                    raise DataFormatError(path, number, f"expected a JSON object, got {type(value).__name__}")
                yield number, value
        except UnicodeDecodeError as error:
            raise BraidError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None


def _string_id(path: Path, number: int, value: dict) -> str:
    raw = value.get("_id")
    if raw is None:
        raise DataFormatError(path, number, 'missing "_id"')
    if not isinstance(raw, str | int) or str(raw).strip() == "":
        raise DataFormatError(path, number, f'"_id" must be a non-empty string, got {raw!r}')
    if any(ch.isspace() for ch in str(raw)):
        # Ids travel through TREC run files and index id lists, where whitespace separates fields.
        raise DataFormatError(path, number, f'"_id" must not contain whitespace, got {raw!r}')
    return str(raw)


def _string_field(path: Path, number: int, value: dict, name: str) -> str:
    raw = value.get(name) or ""
    if not isinstance(raw, str):
        raise DataFormatError(path, number, f'"{name}" must be a string, got {type(raw).__name__}')
    return raw


def read_corpus(path: Path) -> Iterator[Document]:
    """Stream documents from a BEIR corpus.jsonl; duplicate ids are an error."""
    seen: set[str] = set()
    for number, value in json_objects(path):
        doc_id = _string_id(path, number, value)
        if doc_id in seen:
            raise DataFormatError(path, number, f"duplicate document id {doc_id!r}")
        seen.add(doc_id)
        metadata = value.get("metadata")
        if metadata is not None and not isinstance(metadata, dict):
            raise DataFormatError(path, number, f'"metadata" must be a JSON object, got {type(metadata).__name__}')
        yield Document(
            doc_id=doc_id,
            title=_string_field(path, number, value, "title"),
            text=_string_field(path, number, value, "text"),
            metadata=metadata or None,
        )


def read_queries(path: Path) -> dict[str, str]:
    queries: dict[str, str] = {}
    for number, value in json_objects(path):
        qid = _string_id(path, number, value)
        if qid in queries:
            raise DataFormatError(path, number, f"duplicate query id {qid!r}")
        queries[qid] = _string_field(path, number, value, "text")
    return queries


def read_qrels(path: Path) -> Qrels:
    """Read a BEIR qrels TSV (query-id, corpus-id, score; a header line is optional)."""
    qrels: Qrels = {}
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            fields = line.rstrip("\n").split("\t")
            if not line.strip():
                continue
            if number == 1 and fields[0].strip().lower() in {"query-id", "query_id", "qid"}:
                continue
            if len(fields) != 3:
                raise DataFormatError(path, number, f"expected 3 tab-separated fields, got {len(fields)}")
            qid, doc_id, grade = (field.strip() for field in fields)
            try:
                qrels.setdefault(qid, {})[doc_id] = int(grade)
            except ValueError:
                raise DataFormatError(path, number, f"relevance grade must be an integer, got {grade!r}") from None
    return qrels
