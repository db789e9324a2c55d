"""Typed metadata fields and the filters over them: semantics per type, and every bad filter named."""

from __future__ import annotations

import pytest

from braid.common.errors import BraidError
from braid.common.metadata_schema import check_document, parse_fields, parse_filter

FIELDS = {"lang": "keyword", "year": "integer", "score": "float", "day": "date", "open": "boolean"}
DOCS = {
    "a": {"lang": "en", "year": 2020, "score": 0.5, "day": "2024-01-31", "open": True},
    "b": {"lang": ["de", "en"], "year": 2023, "score": 2.0, "day": "2024-03-01T10:00:00", "open": False},
    "c": {"lang": "fr", "year": 2010},
    "d": None,
}


def matching(spec) -> list[str]:
    check = parse_filter(spec, FIELDS)
    return [doc_id for doc_id, metadata in DOCS.items() if check(metadata)]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"field": "lang", "eq": "en"}, ["a", "b"]),  # a list matches if any element does
        ({"field": "lang", "in": ["fr", "de"]}, ["b", "c"]),
        ({"field": "year", "gte": 2020, "lt": 2023}, ["a"]),
        ({"field": "year", "eq": 2023.0}, ["b"]),  # a whole double (gRPC's Struct) is the integer
        ({"field": "score", "gt": 0.5}, ["b"]),
        ({"field": "day", "gte": "2024-02-01"}, ["b"]),
        ({"field": "open", "eq": False}, ["b"]),
        ({"not": {"field": "lang", "eq": "en"}}, ["c", "d"]),  # a document without the field matches no condition
        ({"or": [{"field": "year", "lt": 2015}, {"field": "open", "eq": True}]}, ["a", "c"]),
        ({"and": [{"field": "lang", "eq": "en"}, {"field": "year", "gt": 2021}]}, ["b"]),
    ],
)
def test_filters_select_by_type(spec, expected):
    assert matching(spec) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"field": "colour", "eq": "red"}, "unknown field 'colour' (declared fields: lang (keyword), year"),
        ({"field": "year", "eq": "2020"}, "'2020' is not of its type, integer"),
        ({"field": "year", "eq": 2020.5}, "2020.5 is not of its type, integer"),
        ({"field": "lang", "gt": "a"}, "operator(s) gt (allowed: eq, in)"),
        ({"field": "year", "between": [1, 2]}, "operator(s) between (allowed: eq, in, gt, gte, lt, lte)"),
        ({"field": "year"}, "operator(s) missing"),
        ({"field": "year", "eq": 1, "gt": 0}, "eq and in stand alone"),
        ({"field": "lang", "in": []}, "'in' takes a list of 1 to 1000 values"),
        ({"field": "day", "lt": "yesterday"}, "'yesterday' is not of its type, date"),
        ({"and": []}, "'and' takes a non-empty list"),
        ({"not": {"field": "lang", "eq": "en"}, "field": "x"}, "'not' takes one filter"),
        ({"lang": "en"}, "a condition names its field"),
        ("lang = en", "expected an object"),
    ],
)
def test_bad_filters_are_named(spec, message):
    with pytest.raises(BraidError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_filter(spec, FIELDS)


def test_field_declarations_and_document_checks():
    assert parse_fields(["lang:keyword", "year:integer"]) == {"lang": "keyword", "year": "integer"}
    with pytest.raises(BraidError, match="declared twice"):
        parse_fields(["lang:keyword", "lang:integer"])
    with pytest.raises(BraidError, match=r"unknown type 'text' \(allowed: keyword, integer, float, date, boolean\)"):
        parse_fields(["lang:text"])
    with pytest.raises(BraidError, match="NAME:TYPE"):
        parse_fields(["lang"])
    check_document(FIELDS, DOCS["b"], "b")
    with pytest.raises(BraidError, match=r"doc 7: field 'year' is declared integer, but holds '2020'"):
        check_document(FIELDS, {"year": "2020"}, "doc 7")
    assert check_document(FIELDS, {"year": 2020.0, "score": 1}, "x") == {"year": 2020, "score": 1.0}
    with pytest.raises(BraidError, match="field 'day' is declared date"):
        check_document(FIELDS, {"day": "soon"}, "x")
