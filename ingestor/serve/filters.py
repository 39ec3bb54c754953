"""`/search`'s metadata filter: a small JSON form turned into a Milvus expression. Pure.

    {"field": "lang", "op": "==", "value": "en"}
    {"and": [filter, ...]}    {"or": [filter, ...]}

`op` is one of `== != < <= > >= in` (`in` takes a list). `field` is `id` (or `doc_id`: the record's
id, whatever the chunking), a typed column of ours (`kafka_topic`, `kafka_partition`,
`kafka_offset`, `ingested_at`, `truncated`, `model`, `content_hash`, and with chunking
`chunk_index`, `chunk_count`, `char_start`, `char_end`), or else a key of the record's metadata
(`metadata.<key>` names one whose name is also a column's). Values are checked against the
column's type; every name and value reaches the expression through `ingestor.expressions`, which
escapes it, so no filter can do more than compare.
"""

from __future__ import annotations

import math
from typing import Any

from ingestor import expressions
from ingestor.expressions import Ref
from ingestor.serve.errors import ApiError

OPERATORS = (*expressions.COMPARISONS, "in")
MAX_DEPTH = 8
MAX_TERMS = 64  # comparisons in one filter
MAX_VALUES = 1_024  # values of one `in`
INT64 = (-(2**63), 2**63 - 1)

# Typed columns a filter may name, by the type of value they take.
COLUMNS: dict[str, type] = {
    "kafka_topic": str,
    "kafka_partition": int,
    "kafka_offset": int,
    "ingested_at": int,
    "truncated": bool,
    "model": str,
    "content_hash": str,
}
CHUNK_COLUMNS: dict[str, type] = {"chunk_index": int, "chunk_count": int, "char_start": int, "char_end": int}
NOT_FILTERABLE = ("vector", "text", "metadata")


def unknown_field(message: str, where: str) -> ApiError:
    return ApiError(422, "unknown_field", message, where)


def bad_filter(message: str, where: str) -> ApiError:
    return ApiError(422, "invalid_filter", message, where)


def build(node: Any, chunked: bool) -> str:
    """The Milvus expression of a filter, or ApiError (422) saying what is wrong and where."""
    counter = [0]
    return _node(node, chunked, "filter", 0, counter)


def _node(node: Any, chunked: bool, where: str, depth: int, counter: list[int]) -> str:
    if not isinstance(node, dict):
        raise bad_filter("a filter is an object: {field, op, value}, {and: [...]} or {or: [...]}", where)
    if depth > MAX_DEPTH:
        raise bad_filter(f"filters nest at most {MAX_DEPTH} deep", where)
    if set(node) in ({"and"}, {"or"}):
        word = next(iter(node))
        parts = node[word]
        if not isinstance(parts, list) or not parts:
            raise bad_filter(f"{word} takes a non-empty list of filters", f"{where}.{word}")
        built = [_node(p, chunked, f"{where}.{word}[{i}]", depth + 1, counter) for i, p in enumerate(parts)]
        return expressions.all_of(built) if word == "and" else expressions.any_of(built)
    if set(node) != {"field", "op", "value"}:
        extra = sorted(set(node) - {"field", "op", "value"})
        raise bad_filter(
            f"a filter is {{field, op, value}}, {{and: [...]}} or {{or: [...]}}; got the keys {sorted(node)}"
            + (f" ({', '.join(map(repr, extra))} not understood)" if extra else ""),
            where,
        )
    counter[0] += 1
    if counter[0] > MAX_TERMS:
        raise bad_filter(f"a filter holds at most {MAX_TERMS} comparisons", where)
    return _leaf(node["field"], node["op"], node["value"], chunked, where)


def _leaf(field: Any, op: Any, value: Any, chunked: bool, where: str) -> str:
    if not isinstance(op, str) or op not in OPERATORS:
        raise ApiError(422, "unknown_operator", f"unknown operator {op!r}: one of {' '.join(OPERATORS)}", f"{where}.op")
    ref, kind = _field(field, chunked, f"{where}.field")
    if op == "in":
        if not isinstance(value, list) or not value:
            raise bad_filter("`in` takes a non-empty list of values", f"{where}.value")
        if len(value) > MAX_VALUES:
            raise bad_filter(f"`in` takes at most {MAX_VALUES} values", f"{where}.value")
        return expressions.member(ref, [_value(v, kind, op, f"{where}.value[{i}]") for i, v in enumerate(value)])
    return expressions.compare(ref, op, _value(value, kind, op, f"{where}.value"))


def _field(field: Any, chunked: bool, where: str) -> tuple[Ref, type | None]:
    """The reference a field name stands for, and the type its values must have (None: any
    scalar, for a metadata key)."""
    if not isinstance(field, str) or not field:
        raise unknown_field("a field is a non-empty string", where)
    if field in ("id", "doc_id"):
        return expressions.column("doc_id" if chunked else "id"), str
    if field in COLUMNS:
        return expressions.column(field), COLUMNS[field]
    if field in CHUNK_COLUMNS:
        if not chunked:
            raise unknown_field(f"{field!r} is a column of chunked collections, and this one is not", where)
        return expressions.column(field), CHUNK_COLUMNS[field]
    if field in NOT_FILTERABLE:
        raise unknown_field(
            f"{field!r} cannot be filtered on: filter on id, the typed columns or a metadata key", where
        )
    key = field.removeprefix("metadata.") if field.startswith("metadata.") else field
    if not key:
        raise unknown_field("`metadata.` names no key", where)
    return expressions.json_key("metadata", key), None


def _value(value: Any, kind: type | None, op: str, where: str) -> expressions.Scalar:
    if isinstance(value, bool):
        if kind not in (bool, None):
            raise bad_filter(f"expected a {_name(kind)}, got a boolean", where)
        if op not in ("==", "!=", "in"):
            raise bad_filter(f"a boolean compares with == != in, not {op}", where)
        return value
    if isinstance(value, int):
        if kind not in (int, None):
            raise bad_filter(f"expected a {_name(kind)}, got a number", where)
        if not INT64[0] <= value <= INT64[1]:
            raise bad_filter("integers are 64-bit", where)
        return value
    if isinstance(value, float):
        if kind is not None:
            raise bad_filter(f"expected a {_name(kind)}, got a fractional number", where)
        if not math.isfinite(value):
            raise bad_filter("numbers are finite", where)
        return value
    if isinstance(value, str):
        if kind not in (str, None):
            raise bad_filter(f"expected a {_name(kind)}, got a string", where)
        return value
    raise bad_filter(f"a value is a string, a number or a boolean, not {type(value).__name__}", where)


def _name(kind: type | None) -> str:
    return {str: "string", int: "integer", bool: "boolean"}.get(kind, "scalar") if kind else "scalar"
