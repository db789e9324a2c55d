"""Typed metadata fields of a collection, declared when it is created, and the filters a search takes over them.

As in Qdrant's payload indexes and Elasticsearch's mappings, a field has one type, fixed at creation: ``keyword``
(strings, compared exactly), ``integer``, ``float``, ``date`` (ISO 8601, ``YYYY-MM-DD`` or a datetime) and
``boolean``. A document's value is one value of the field's type or a list of them (a document with tags); a
document without the field matches no condition on it.

A filter is JSON, the same over the CLI, gRPC and HTTP::

    {"field": "lang", "eq": "en"}                      equality (a list value matches if any element does)
    {"field": "lang", "in": ["en", "de"]}              set membership
    {"field": "year", "gte": 2020, "lt": 2024}          ranges: gt, gte, lt, lte (numbers and dates)
    {"and": [F, ...]}, {"or": [F, ...]}, {"not": F}    combinations

:func:`parse_filter` checks a filter against the schema (an unknown field, an operator its type has no meaning for,
a value of the wrong type: an error naming it) and compiles it to a predicate over a document's metadata.
"""

from __future__ import annotations

import datetime
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from braid.common.errors import BraidError

FIELD_TYPES = ("keyword", "integer", "float", "date", "boolean")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
RANGE_OPERATORS = ("gt", "gte", "lt", "lte")
#: Nesting and size limits: a filter is a request parameter, and a hostile one must not cost unbounded work.
MAX_FILTER_DEPTH = 8
MAX_FILTER_VALUES = 1000

Predicate = Callable[[Mapping[str, Any] | None], bool]


def parse_fields(specs: Sequence[str]) -> dict[str, str]:
    """``NAME:TYPE`` declarations (``--field lang:keyword``) as a schema; a field declared twice is an error."""
    fields: dict[str, str] = {}
    for spec in specs:
        name, sep, kind = spec.partition(":")
        if not sep or not _NAME.fullmatch(name):
            raise BraidError(f"--field expects NAME:TYPE with a name of letters, digits, '_', '.', '-', got {spec!r}")
        if kind not in FIELD_TYPES:
            raise BraidError(f"field {name!r}: unknown type {kind!r} (allowed: {', '.join(FIELD_TYPES)})")
        if name in fields:
            raise BraidError(f"field {name!r} is declared twice ({fields[name]} and {kind})")
        fields[name] = kind
    return fields


def _date(value: Any) -> datetime.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)


def coerce(kind: str, value: Any) -> Any:
    """The value as its field's type compares it, or None when it is not of that type."""
    if kind == "keyword":
        return value if isinstance(value, str) else None
    if kind == "boolean":
        return value if isinstance(value, bool) else None
    if kind == "date":
        return _date(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    if kind == "integer":
        # JSON numbers through gRPC's Struct arrive as doubles: 2020.0 is the integer 2020.
        return int(value) if float(value).is_integer() else None
    return float(value)


def check_document(fields: Mapping[str, str], metadata: Mapping[str, Any] | None, where: str) -> dict[str, Any] | None:
    """The document's metadata with its declared fields' values in their types (a whole double, as gRPC's Struct
    carries every number, is an integer), or an error naming the document and field when a value is of another."""
    if not metadata:
        return None
    normalized = dict(metadata)
    for name, kind in fields.items():
        value = metadata.get(name)
        if value is None:
            continue
        converted = []
        for item in value if isinstance(value, list) else [value]:
            typed = coerce(kind, item)
            if typed is None:
                raise BraidError(f"{where}: field {name!r} is declared {kind}, but holds {item!r}")
            converted.append(typed if kind in ("integer", "float") else item)
        normalized[name] = converted if isinstance(value, list) else converted[0]
    return normalized


def _values(metadata: Mapping[str, Any] | None, name: str, kind: str) -> list[Any]:
    value = (metadata or {}).get(name)
    if value is None:
        return []
    found = [coerce(kind, item) for item in (value if isinstance(value, list) else [value])]
    return [item for item in found if item is not None]


def parse_filter(spec: Any, fields: Mapping[str, str], depth: int = 0) -> Predicate:
    """Compile a filter (module docstring) into a predicate over a document's metadata."""
    if depth > MAX_FILTER_DEPTH:
        raise BraidError(f"filter: nested more than {MAX_FILTER_DEPTH} levels deep")
    if not isinstance(spec, Mapping) or not spec:
        raise BraidError(f'filter: expected an object such as {{"field": ..., "eq": ...}}, got {spec!r}')
    if "and" in spec or "or" in spec:
        key = "and" if "and" in spec else "or"
        parts = spec[key]
        if set(spec) != {key} or not isinstance(parts, list) or not parts:
            raise BraidError(f"filter: {key!r} takes a non-empty list of filters, and nothing beside it")
        compiled = [parse_filter(part, fields, depth + 1) for part in parts]
        if key == "and":
            return lambda metadata: all(check(metadata) for check in compiled)
        return lambda metadata: any(check(metadata) for check in compiled)
    if "not" in spec:
        if set(spec) != {"not"}:
            raise BraidError("filter: 'not' takes one filter, and nothing beside it")
        inner = parse_filter(spec["not"], fields, depth + 1)
        return lambda metadata: not inner(metadata)
    return _condition(spec, fields)


def _condition(spec: Mapping[str, Any], fields: Mapping[str, str]) -> Predicate:
    name = spec.get("field")
    if not isinstance(name, str):
        raise BraidError(
            'filter: a condition names its field ({"field": NAME, ...}); combine conditions with and, or, not'
        )
    if name not in fields:
        declared = ", ".join(f"{field} ({kind})" for field, kind in fields.items()) or "none"
        raise BraidError(f"filter: unknown field {name!r} (declared fields: {declared})")
    kind = fields[name]
    operators = {key: value for key, value in spec.items() if key != "field"}
    allowed = ("eq", "in", *(RANGE_OPERATORS if kind in ("integer", "float", "date") else ()))
    unknown = sorted(set(operators) - set(allowed))
    if unknown or not operators:
        raise BraidError(
            f"filter on {name!r} ({kind}): operator(s) {', '.join(unknown) or 'missing'} "
            f"(allowed: {', '.join(allowed)})"
        )
    if ("eq" in operators or "in" in operators) and len(operators) > 1:
        raise BraidError(f"filter on {name!r}: eq and in stand alone; combine them with and / or")

    def typed(value: Any) -> Any:
        converted = coerce(kind, value)
        if converted is None:
            raise BraidError(f"filter on {name!r}: {value!r} is not of its type, {kind}")
        return converted

    if "eq" in operators:
        wanted = typed(operators["eq"])
        return lambda metadata: wanted in _values(metadata, name, kind)
    if "in" in operators:
        values = operators["in"]
        if not isinstance(values, list) or not values or len(values) > MAX_FILTER_VALUES:
            raise BraidError(f"filter on {name!r}: 'in' takes a list of 1 to {MAX_FILTER_VALUES} values")
        wanted_set = {typed(value) for value in values}
        return lambda metadata: any(value in wanted_set for value in _values(metadata, name, kind))
    bounds = {operator: typed(value) for operator, value in operators.items()}

    def within(value: Any) -> bool:
        return (
            ("gt" not in bounds or value > bounds["gt"])
            and ("gte" not in bounds or value >= bounds["gte"])
            and ("lt" not in bounds or value < bounds["lt"])
            and ("lte" not in bounds or value <= bounds["lte"])
        )

    return lambda metadata: any(within(value) for value in _values(metadata, name, kind))
