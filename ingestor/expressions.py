"""Milvus boolean expressions that carry outside data. Built here and nowhere else. Pure.

Ids and keys come from producers we do not control and may hold any Unicode: quotes, backslashes,
brackets, newlines. pymilvus's `ids=` argument pastes each id between single quotes without
escaping (`MilvusClient._pack_pks_expr`, pymilvus 3.0.2), so a tombstone keyed `x','y` would delete
`y` as well. Ingestor therefore never passes `ids=`: every expression is built by `field_in`, from
string literals escaped for the grammar that both Milvus implementations parse:

- Milvus server (`Plan.g4`): a double-quoted literal holds any character raw except `"`, `\\`, CR and
  LF; the server unquotes it with Go's `strconv.Unquote`, which reads `\\\\ \\" \\n \\r \\t`.
- Milvus Lite 3 (`search/filter/tokens.py`): the same raw rule; escapes `\\" \\' \\\\ \\n \\r \\t`.

So backslash, double quote, CR, LF and TAB are escaped and every other character goes raw: the
escapes both readers share, and nothing a reader could take for the end of the literal.
"""

from __future__ import annotations

from collections.abc import Iterable

_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"})


def string_literal(value: str) -> str:
    """`value` as a Milvus string literal that reads back as exactly `value`."""
    return '"' + value.translate(_ESCAPES) + '"'


def field_in(field: str, values: Iterable[str]) -> str:
    """`field in ["a", "b"]` for a field of ours and any strings."""
    if not field.isidentifier():  # field names are ours; never outside data
        raise ValueError(f"not a field name: {field!r}")
    return f"{field} in [{', '.join(string_literal(v) for v in values)}]"


# -- filters of the query side (`ingestor.serve.filters`) -------------------------------------------

COMPARISONS = ("==", "!=", "<", "<=", ">", ">=")
Scalar = str | int | float | bool


class Ref:
    """What an expression compares: a field of ours, or one key of a JSON field, made only by
    `column` and `json_key` so that no outside text reaches an expression unescaped."""

    __slots__ = ("text", "json")

    def __init__(self, text: str, json: bool) -> None:
        self.text, self.json = text, json


def column(field: str) -> Ref:
    if not field.isidentifier():  # field names are ours; never outside data
        raise ValueError(f"not a field name: {field!r}")
    return Ref(field, json=False)


def json_key(field: str, key: str) -> Ref:
    """`field["key"]`: one key of the JSON field `field`, the key any string."""
    return Ref(f"{column(field).text}[{string_literal(key)}]", json=True)


def literal(value: Scalar) -> str:
    """A string, integer, finite float or boolean as a Milvus literal."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("not a finite number")
        return repr(value)
    if isinstance(value, str):
        return string_literal(value)
    raise TypeError(f"not a literal: {type(value).__name__}")


def compare(ref: Ref, op: str, value: Scalar) -> str:
    if op not in COMPARISONS:
        raise ValueError(f"not a comparison: {op!r}")
    return f"{ref.text} {op} {literal(value)}"


def member(ref: Ref, values: Iterable[Scalar]) -> str:
    """`ref` is one of `values`. A JSON key's as equalities joined by `or`: Milvus Lite takes only a
    field on the left of `in`."""
    values = list(values)
    if not values:
        raise ValueError("an empty list matches nothing")
    if ref.json:
        return any_of([compare(ref, "==", v) for v in values])
    return f"{ref.text} in [{', '.join(literal(v) for v in values)}]"


def all_of(expressions: Iterable[str]) -> str:
    """Expressions built here, all true."""
    return _join(" and ", list(expressions))


def any_of(expressions: Iterable[str]) -> str:
    """Expressions built here, one true."""
    return _join(" or ", list(expressions))


def _join(word: str, parts: list[str]) -> str:
    if not parts:
        raise ValueError("nothing to join")
    return parts[0] if len(parts) == 1 else "(" + word.join(f"({p})" for p in parts) + ")"
