"""A user's documents from JSONL, CSV/TSV and folders of files: fields kept, malformed input named by line or file."""

from __future__ import annotations

import json

import pytest

from braid.common.document_source import detect_format, read_documents
from braid.common.errors import BraidError, DataFormatError


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_jsonl_keeps_every_other_field_as_metadata(tmp_path):
    source = write_jsonl(
        tmp_path / "docs.jsonl",
        [
            {"id": "a", "title": "T", "text": "alpha", "lang": "en", "year": 2020, "tags": ["x", "y"]},
            {"_id": 7, "contents": "pyserini style"},
        ],
    )
    first, second = read_documents(source)
    assert (first.doc_id, first.title, first.text) == ("a", "T", "alpha")
    assert first.metadata == {"lang": "en", "year": 2020, "tags": ["x", "y"]}
    assert (second.doc_id, second.text, second.metadata) == ("7", "pyserini style", None)


@pytest.mark.parametrize(
    ("rows", "problem"),
    [
        ([{"id": "a", "text": "x"}, {"text": "no id"}], ":2: no document id"),
        ([{"id": "a", "text": "x"}, {"id": "a", "text": "y"}], "duplicate document id 'a'"),
        ([{"id": "a b", "text": "x"}], ":1: the document id must not contain whitespace"),
        ([{"id": "a", "text": 5}], ":1: text field 'text' must be a string"),
        ([{"id": "a"}], ":1: no text"),
        ([{"id": "a", "text": " ", "title": ""}], ":1: the document has neither title nor text"),
        ([{"id": "a", "text": "x", "meta": {"nested": 1}}], "field 'meta' must be a string"),
    ],
)
def test_malformed_jsonl_names_the_line(tmp_path, rows, problem):
    source = write_jsonl(tmp_path / "docs.jsonl", rows)
    with pytest.raises(BraidError, match=problem.replace("(", r"\(")):
        list(read_documents(source))


def test_invalid_json_names_the_line(tmp_path):
    source = tmp_path / "docs.jsonl"
    source.write_text('{"id": "a", "text": "x"}\n{"id": "b", "text": \n', encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"docs.jsonl:2: invalid JSON"):
        list(read_documents(source))


def test_csv_and_tsv_read_named_columns(tmp_path):
    csv_file = tmp_path / "docs.csv"
    csv_file.write_text('id,title,text,source\n1,One,"first, with a comma",web\n2,,second,mail\n', encoding="utf-8")
    documents = list(read_documents(csv_file))
    assert [(d.doc_id, d.title, d.text, d.metadata) for d in documents] == [
        ("1", "One", "first, with a comma", {"source": "web"}),
        ("2", "", "second", {"source": "mail"}),
    ]
    tsv_file = tmp_path / "docs.tsv"
    tsv_file.write_text("docid\tbody\nx\thello world\n", encoding="utf-8")
    assert [(d.doc_id, d.text) for d in read_documents(tsv_file)] == [("x", "hello world")]


def test_csv_errors_name_the_header_or_row(tmp_path):
    no_text = tmp_path / "a.csv"
    no_text.write_text("id,summary\n1,x\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"a.csv:1: the header \(id, summary\) names no one of text"):
        list(read_documents(no_text))
    ragged = tmp_path / "b.csv"
    ragged.write_text("id,text\n1,x\n2,y,extra\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"b.csv:3: more fields than the header's 2 columns"):
        list(read_documents(ragged))


def test_a_folder_of_files_is_one_document_per_file_named_by_its_path(tmp_path):
    (tmp_path / "notes" / "sub").mkdir(parents=True)
    (tmp_path / "notes" / "plain.txt").write_text("just  text\n", encoding="utf-8")
    (tmp_path / "notes" / "sub" / "my page.md").write_text("intro\n# Heading\nbody text\n", encoding="utf-8")
    (tmp_path / "notes" / "sub" / "p.html").write_text(
        "<html><head><title>Page</title><style>b{}</style></head><body><p>Visible &amp; kept</p>"
        "<script>hidden()</script></body></html>",
        encoding="utf-8",
    )
    (tmp_path / "notes" / ".hidden.txt").write_text("skipped", encoding="utf-8")
    (tmp_path / "notes" / "image.png").write_bytes(b"\x89PNG")
    documents = {d.doc_id: d for d in read_documents(tmp_path / "notes")}
    assert sorted(documents) == ["plain.txt", "sub/my%20page.md", "sub/p.html"]
    assert documents["plain.txt"].text == "just text"
    assert (documents["sub/my%20page.md"].title, documents["sub/my%20page.md"].text) == ("Heading", "intro body text")
    assert (documents["sub/p.html"].title, documents["sub/p.html"].text) == ("Page", "Visible & kept")
    assert documents["sub/p.html"].metadata == {"path": "sub/p.html"}


def test_a_file_that_is_not_utf8_or_a_format_braid_cannot_tell_is_named(tmp_path):
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "bad.txt").write_bytes(b"caf\xe9")
    with pytest.raises(BraidError, match=r"bad.txt: not UTF-8"):
        list(read_documents(tmp_path / "f"))
    odd = tmp_path / "docs.xml"
    odd.write_text("<x/>", encoding="utf-8")
    with pytest.raises(BraidError, match=r"cannot tell the format .* \(allowed: jsonl, csv, tsv, folder\)"):
        detect_format(odd)
