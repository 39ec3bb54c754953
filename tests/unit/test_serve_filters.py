"""`/search`'s structured filter to a Milvus expression: the expression Milvus Lite's own parser
reads back is exactly the filter asked for, whatever strings it holds, and what is not a filter is
refused with the kind of error and where."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from milvus_lite.search.filter import ast
from milvus_lite.search.filter.parser import parse_expr

from ingestor.serve.errors import ApiError
from ingestor.serve.filters import build

HOSTILE = ['"] or id in ["x', 'a"b', "back\\slash", "\\", "'", "new\nline", "\r\t", "] or 1 == 1 or [", "日本 🚀"]


def canonical(node: Any) -> Any:
    """What the parsed expression means, in the filter's own form: leaves as (ref, op, value),
    where ref is ('column', name) or ('json', column, key); `and`/`or` as tuples."""
    if isinstance(node, ast.And | ast.Or):
        return ("and" if isinstance(node, ast.And) else "or", tuple(canonical(o) for o in node.operands))
    if isinstance(node, ast.CmpOp):
        return (ref(node.left), node.op, node.right.value)
    if isinstance(node, ast.InOp):
        return (ref(node.field), "in", tuple(e.value for e in node.values.elements))
    raise AssertionError(f"unexpected node {node!r}")


def ref(node: Any) -> tuple:
    if isinstance(node, ast.FieldRef):
        return ("column", node.name)
    assert isinstance(node, ast.PathAccess) and isinstance(node.base, ast.FieldRef), node
    assert len(node.path) == 1
    return ("json", node.base.name, node.path[0])


def expected(f: Any, chunked: bool) -> Any:
    """The canonical form a filter should parse back as."""
    if "and" in f or "or" in f:
        word = next(iter(f))
        parts = tuple(expected(p, chunked) for p in f[word])
        return parts[0] if len(parts) == 1 else (word, parts)
    field, op, value = f["field"], f["op"], f["value"]
    if field in ("id", "doc_id"):
        target: tuple = ("column", "doc_id" if chunked else "id")
    elif field in ("kafka_topic", "kafka_partition", "truncated"):
        target = ("column", field)
    else:
        target = ("json", "metadata", field.removeprefix("metadata."))
    if op != "in":
        return (target, op, value)
    if target[0] == "json":  # a JSON key's `in` is equalities joined by `or`
        eqs = tuple((target, "==", v) for v in value)
        return eqs[0] if len(eqs) == 1 else ("or", eqs)
    return (target, "in", tuple(value))


def parsed(f: Any, chunked: bool = True) -> Any:
    return canonical(parse_expr(build(f, chunked)))


@pytest.mark.parametrize("value", HOSTILE)
def test_a_hostile_value_is_one_literal_holding_exactly_itself(value):
    f = {"field": "id", "op": "==", "value": value}
    assert parsed(f) == (("column", "doc_id"), "==", value)
    g = {"field": "lang", "op": "in", "value": [value, "en"]}
    assert parsed(g) == expected(g, True)


@pytest.mark.parametrize("key", HOSTILE)
def test_a_hostile_metadata_key_is_one_key(key):
    f = {"field": key, "op": "!=", "value": 1}
    assert parsed(f) == (("json", "metadata", key), "!=", 1)


def test_id_is_the_records_id_with_and_without_chunks():
    f = {"field": "id", "op": "in", "value": ["a", "b"]}
    assert parsed(f, chunked=True) == (("column", "doc_id"), "in", ("a", "b"))
    assert parsed(f, chunked=False) == (("column", "id"), "in", ("a", "b"))


def test_a_column_whose_name_is_also_a_metadata_key_is_reached_with_the_prefix():
    assert parsed({"field": "metadata.kafka_topic", "op": "==", "value": "t"}) == (
        ("json", "metadata", "kafka_topic"),
        "==",
        "t",
    )


scalars = st.one_of(st.text(max_size=20), st.integers(-(2**63), 2**63 - 1), st.booleans())
fields = st.one_of(st.sampled_from(["id", "doc_id", "lang", "metadata.x"]), st.text(min_size=1, max_size=12))


@st.composite
def leaves(draw: Any) -> dict:
    field = draw(fields)
    if field in ("id", "doc_id"):
        values = st.text(max_size=20)
    elif field.startswith("metadata.") or field not in ("vector", "text", "metadata", "kafka_topic", "truncated"):
        values = scalars
    else:
        values = st.text(max_size=20)
    if field in ("vector", "text", "metadata", "metadata.") or field in (
        "kafka_partition",
        "kafka_offset",
        "ingested_at",
        "model",
        "content_hash",
        "truncated",
        "chunk_index",
        "chunk_count",
        "char_start",
        "char_end",
    ):
        field = "lang"
    if draw(st.booleans()):
        return {"field": field, "op": "in", "value": draw(st.lists(values, min_size=1, max_size=4))}
    value = draw(values)
    ops = ["==", "!="] if isinstance(value, bool) else ["==", "!=", "<", "<=", ">", ">="]
    return {"field": field, "op": draw(st.sampled_from(ops)), "value": value}


filters_st = st.recursive(
    leaves(),
    lambda inner: st.one_of(
        st.builds(lambda xs: {"and": xs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda xs: {"or": xs}, st.lists(inner, min_size=1, max_size=3)),
    ),
    max_leaves=8,
)


def flatten(node: Any) -> Any:
    """The parser flattens `a and (b and c)`; so does this, on both sides."""
    if isinstance(node, tuple) and node and node[0] in ("and", "or") and isinstance(node[1], tuple):
        word, parts = node
        out: list = []
        for p in (flatten(p) for p in parts):
            if isinstance(p, tuple) and p and p[0] == word and isinstance(p[1], tuple):
                out.extend(p[1])
            else:
                out.append(p)
        return (word, tuple(out))
    return node


@settings(max_examples=300, deadline=None)
@given(filters_st, st.booleans())
def test_any_filter_parses_back_as_itself(f, chunked):
    assert flatten(parsed(f, chunked)) == flatten(expected(f, chunked))


@pytest.mark.parametrize(
    ("f", "kind", "where"),
    [
        ({"field": "vector", "op": "==", "value": 1}, "unknown_field", "filter.field"),
        ({"field": "text", "op": "==", "value": "x"}, "unknown_field", "filter.field"),
        ({"field": "", "op": "==", "value": "x"}, "unknown_field", "filter.field"),
        ({"field": 3, "op": "==", "value": "x"}, "unknown_field", "filter.field"),
        ({"field": "metadata.", "op": "==", "value": "x"}, "unknown_field", "filter.field"),
        ({"field": "lang", "op": "like", "value": "x"}, "unknown_operator", "filter.op"),
        ({"field": "lang", "op": "== 1 or", "value": "x"}, "unknown_operator", "filter.op"),
        ({"and": [{"field": "lang", "op": "=~", "value": "x"}]}, "unknown_operator", "filter.and[0].op"),
        ({"field": "lang", "op": "in", "value": "x"}, "invalid_filter", "filter.value"),
        ({"field": "lang", "op": "in", "value": []}, "invalid_filter", "filter.value"),
        ({"field": "lang", "op": "==", "value": None}, "invalid_filter", "filter.value"),
        ({"field": "lang", "op": "==", "value": {"a": 1}}, "invalid_filter", "filter.value"),
        ({"field": "lang", "op": "<", "value": True}, "invalid_filter", "filter.value"),
        ({"field": "kafka_partition", "op": "==", "value": "0"}, "invalid_filter", "filter.value"),
        ({"field": "kafka_partition", "op": "==", "value": 2**70}, "invalid_filter", "filter.value"),
        ({"field": "truncated", "op": "==", "value": 1}, "invalid_filter", "filter.value"),
        ({"field": "id", "op": "==", "value": 1}, "invalid_filter", "filter.value"),
        ({"field": "lang", "op": "==", "value": float("nan")}, "invalid_filter", "filter.value"),
        ({"field": "lang", "op": "==", "value": "x", "raw": "id != ''"}, "invalid_filter", "filter"),
        ({"and": []}, "invalid_filter", "filter.and"),
        ({"and": [1]}, "invalid_filter", "filter.and[0]"),
        ({"and": [], "or": []}, "invalid_filter", "filter"),
        ("id != ''", "invalid_filter", "filter"),
        ([{"field": "id", "op": "==", "value": "x"}], "invalid_filter", "filter"),
    ],
)
def test_what_is_not_a_filter_is_refused_with_its_kind_and_place(f, kind, where):
    with pytest.raises(ApiError) as refused:
        build(f, chunked=True)
    assert (refused.value.status, refused.value.kind, refused.value.detail) == (422, kind, where)


def test_chunk_columns_only_with_chunks():
    f = {"field": "chunk_index", "op": ">=", "value": 1}
    assert parsed(f, chunked=True) == (("column", "chunk_index"), ">=", 1)
    with pytest.raises(ApiError, match="chunked"):
        build(f, chunked=False)


def test_filters_are_bounded_in_depth_and_size():
    deep: dict = {"field": "lang", "op": "==", "value": "x"}
    for _ in range(10):
        deep = {"and": [deep]}
    with pytest.raises(ApiError, match="deep"):
        build(deep, chunked=True)
    wide = {"or": [{"field": "lang", "op": "==", "value": str(i)} for i in range(65)]}
    with pytest.raises(ApiError, match="comparisons"):
        build(wide, chunked=True)
