"""A user's own documents, read from what they have: JSONL, CSV/TSV with named columns, or a folder of files.

Pyserini's ``JsonCollection`` reads ``{"id", "contents"}`` lines; braid reads that and BEIR's ``{"_id", "title",
"text"}`` alike, and keeps every other field of a record as the document's metadata (what filters select on).
CSV and TSV files need a header row naming the columns; the id and text columns are found by name. A folder is
walked for ``.txt``, ``.md`` and ``.html`` files, each one document whose id is its path relative to the folder
(``/``-separated; whitespace, which run files cannot carry, written ``%20``); a Markdown file's first ``# heading``
and an HTML file's ``<title>`` become the title, and HTML is reduced to its visible text.

Anything malformed stops the read with a :class:`~braid.common.errors.DataFormatError` naming the file and line
(or the file): a missing id or text column, a duplicate id, a value that is not text, a file that is not UTF-8.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from braid.common.beir_format import json_objects
from braid.common.dataset import Document
from braid.common.errors import BraidError, DataFormatError

FORMATS = ("jsonl", "csv", "tsv", "folder")
FILE_SUFFIXES = (".txt", ".md", ".markdown", ".html", ".htm")
ID_FIELDS = ("id", "_id", "docid", "doc_id")
TEXT_FIELDS = ("text", "contents", "body", "content")
TITLE_FIELDS = ("title",)
_SUFFIX_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "tsv"}


def detect_format(source: Path) -> str:
    """The format of ``source`` from what it is: a folder, or a file's suffix."""
    if source.is_dir():
        return "folder"
    if not source.is_file():
        raise BraidError(f"document source {source} does not exist")
    found = _SUFFIX_FORMATS.get(source.suffix.lower())
    if found is None:
        raise BraidError(
            f"cannot tell the format of {source} from its suffix {source.suffix!r}: name it .jsonl, .csv or .tsv, "
            f"or pass --format (allowed: {', '.join(FORMATS)})"
        )
    return found


def read_documents(source: Path, fmt: str | None = None) -> Iterator[Document]:
    """Stream the documents of ``source`` (format detected when ``fmt`` is None); duplicate ids are an error."""
    source = Path(source)
    fmt = fmt or detect_format(source)
    if fmt not in FORMATS:
        raise BraidError(f"unknown document format {fmt!r} (allowed: {', '.join(FORMATS)})")
    if fmt == "folder":
        if not source.is_dir():
            raise BraidError(f"--format folder needs a folder, and {source} is not one")
        documents = _read_folder(source)
    else:
        if not source.is_file():
            raise BraidError(f"document file {source} does not exist")
        documents = _read_jsonl(source) if fmt == "jsonl" else _read_table(source, "," if fmt == "csv" else "\t")
    seen: dict[str, str] = {}
    for where, document in documents:
        if document.doc_id in seen:
            raise BraidError(f"{where}: duplicate document id {document.doc_id!r} (first at {seen[document.doc_id]})")
        seen[document.doc_id] = where
        yield document


def check_id(raw: Any, path: Path | str, line: int) -> str:
    """A document id as runs and indexes can carry it: a non-empty string or integer without whitespace."""
    if isinstance(raw, bool) or not isinstance(raw, str | int) or str(raw).strip() == "":
        raise DataFormatError(path, line, f"the document id must be a non-empty string, got {raw!r}")
    if any(ch.isspace() for ch in str(raw)):
        raise DataFormatError(path, line, f"the document id must not contain whitespace, got {raw!r}")
    return str(raw)


def _first(record: dict, names: tuple[str, ...]) -> str | None:
    return next((name for name in names if name in record), None)


def _metadata_value(value: Any, path: Path, line: int, name: str) -> Any:
    scalar = (str, int, float, bool)
    if value is None or isinstance(value, scalar):
        return value
    if isinstance(value, list) and all(isinstance(item, scalar) for item in value):
        return value
    raise DataFormatError(path, line, f"field {name!r} must be a string, number, boolean or a list of them")


def _read_jsonl(path: Path) -> Iterator[tuple[str, Document]]:
    for number, record in json_objects(path):
        yield f"{path}:{number}", _record_document(record, path, number)


def _record_document(record: dict, path: Path, number: int) -> Document:
    id_field = _first(record, ID_FIELDS)
    if id_field is None:
        raise DataFormatError(path, number, f"no document id: give one of the fields {', '.join(ID_FIELDS)}")
    text_field = _first(record, TEXT_FIELDS)
    if text_field is None:
        raise DataFormatError(path, number, f"no text: give one of the fields {', '.join(TEXT_FIELDS)}")
    title_field = _first(record, TITLE_FIELDS)
    values = {}
    for role, name in (("text", text_field), ("title", title_field)):
        value = record.get(name) if name else ""
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise DataFormatError(path, number, f"{role} field {name!r} must be a string, got {type(value).__name__}")
        values[role] = value
    if not (values["title"] + values["text"]).strip():
        raise DataFormatError(path, number, "the document has neither title nor text")
    reserved = {id_field, text_field, title_field}
    metadata = {
        name: _metadata_value(value, path, number, name) for name, value in record.items() if name not in reserved
    }
    return Document(check_id(record[id_field], path, number), values["title"], values["text"], metadata or None)


def _read_table(path: Path, delimiter: str) -> Iterator[tuple[str, Document]]:
    kind = "CSV" if delimiter == "," else "TSV"
    with path.open(encoding="utf-8", newline="") as handle:
        try:
            reader = csv.DictReader(handle, delimiter=delimiter, strict=True)
            columns = reader.fieldnames or []
            if not columns:
                raise BraidError(f"{path}: an empty {kind} file; its first row must name the columns")
            missing = [
                f"one of {', '.join(names)}"
                for names in (ID_FIELDS, TEXT_FIELDS)
                if _first(dict.fromkeys(columns), names) is None
            ]
            if missing:
                raise DataFormatError(
                    path, 1, f"the header ({', '.join(columns)}) names no {' and no '.join(missing)} column"
                )
            for row in reader:
                number = reader.line_num
                if None in row:
                    raise DataFormatError(path, number, f"more fields than the header's {len(columns)} columns")
                if any(value is None for value in row.values()):
                    raise DataFormatError(path, number, f"fewer fields than the header's {len(columns)} columns")
                yield f"{path}:{number}", _record_document(row, path, number)
        except csv.Error as error:
            raise DataFormatError(path, reader.line_num, f"malformed {kind} ({error})") from None
        except UnicodeDecodeError as error:
            raise BraidError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None


class _HtmlText(HTMLParser):
    """The visible text of an HTML page and its ``<title>`` (script and style contents dropped)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.title: list[str] = []
        self.text: list[str] = []
        self._stack: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in ("title", "script", "style"):
            self._stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if self._stack and self._stack[-1] == tag:
            self._stack.pop()

    def handle_data(self, data: str) -> None:
        if not self._stack:
            self.text.append(data)
        elif self._stack[-1] == "title":
            self.title.append(data)


def _squeeze(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _read_folder(root: Path) -> Iterator[tuple[str, Document]]:
    files = sorted(path for path in root.rglob("*") if path.is_file() and path.suffix.lower() in FILE_SUFFIXES)
    if not files:
        raise BraidError(f"{root} holds no {', '.join(FILE_SUFFIXES)} files")
    for path in files:
        relative = path.relative_to(root).as_posix()
        if any(part.startswith(".") for part in path.relative_to(root).parts):
            continue  # hidden files and folders (.git, editor swap files) are not documents
        try:
            raw = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as error:
            raise BraidError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
        title, text = _file_parts(path, raw)
        if not (title + text).strip():
            raise BraidError(f"{path}: an empty document (no text); remove it or give it some")
        doc_id = re.sub(r"\s", "%20", relative)
        yield str(path), Document(doc_id, title, text, {"path": relative})


def _file_parts(path: Path, raw: str) -> tuple[str, str]:
    suffix = path.suffix.lower()
    if suffix in (".html", ".htm"):
        parser = _HtmlText()
        parser.feed(raw)
        parser.close()
        return _squeeze(" ".join(parser.title)), _squeeze(" ".join(parser.text))
    if suffix in (".md", ".markdown"):
        heading = re.search(r"^#\s+(.+)$", raw, flags=re.MULTILINE)
        if heading:
            return heading.group(1).strip(), _squeeze(raw[: heading.start()] + raw[heading.end() :])
    return "", _squeeze(raw)
