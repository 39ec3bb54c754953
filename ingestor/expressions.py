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
