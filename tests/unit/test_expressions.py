"""Expressions carrying outside data read back as exactly that data, checked with the tokenizer of
Milvus Lite (the expression reader the default deployment runs)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from milvus_lite.search.filter import tokens  # a dependency (milvus-lite>=3.0): this never skips

from ingestor.expressions import field_in, string_literal

HOSTILE = [
    "nope','victim1",
    'a"b',
    "back\\slash",
    "\\",
    "'",
    '"',
    "new\nline",
    "\r\n\t",
    "] or id != [",
    "日本語 🚀",
    "\u2028\u0000\x7f",
    "\\'",
    '\\"',
    "x\\",
    "$meta",
    "id",
]


def _strings(expression: str) -> list[str]:
    kinds = tokens.TokenKind
    found = tokens.tokenize(expression)
    assert [t.kind for t in found[:3]] == [kinds.IDENT, kinds.IN, kinds.LBRACKET]
    assert [t.kind for t in found[-2:]] == [kinds.RBRACKET, kinds.EOF]
    return [t.value for t in found if t.kind == kinds.STRING]


@pytest.mark.parametrize("value", HOSTILE)
def test_a_hostile_value_is_one_literal_holding_exactly_itself(value: str) -> None:
    assert _strings(field_in("id", [value])) == [value]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.text(min_size=0, max_size=40), min_size=1, max_size=6))
def test_any_values_read_back_as_themselves(values: list[str]) -> None:
    assert _strings(field_in("id", values)) == values


@given(st.text(max_size=40))
def test_a_literal_never_holds_a_raw_line_break_or_an_unescaped_quote(value: str) -> None:
    body = string_literal(value)[1:-1]
    assert "\n" not in body and "\r" not in body
    unescaped = body.replace("\\\\", "").replace('\\"', "")
    assert '"' not in unescaped


@pytest.mark.parametrize("field", ["id or 1", "a b", "", "x]"])
def test_field_names_are_never_outside_data(field: str) -> None:
    with pytest.raises(ValueError):
        field_in(field, ["x"])
