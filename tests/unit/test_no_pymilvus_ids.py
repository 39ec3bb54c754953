"""No code under ingestor/ hands pymilvus ids to put into an expression itself.

pymilvus (3.0.2) builds `id in ['…']` from `ids` by pasting each id between single quotes without
escaping (`MilvusClient._pack_pks_expr`): `query(ids=…)`, `get(…)` and `delete(ids=…)` (or `pks=`,
or the ids as `delete`'s second positional argument) let a tombstone keyed `x','y` delete `y` too.
Every expression that carries ids is built by `ingestor.expressions.field_in` instead. This scans the
source (ast) for any way back to `_pack_pks_expr`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "ingestor"
MILVUS_CLIENT_CLASSES = {"MilvusClient", "AsyncMilvusClient"}
# Keywords pymilvus turns into `_pack_pks_expr`; no function of ours takes these names either, so any
# call passing them is flagged (a call through a wrapper such as MilvusSink._call included).
ID_KEYWORDS = {"ids", "pks"}
# The positional slot of `ids` in MilvusClient's methods (collection_name is 0).
IDS_POSITION = {"delete": 1, "query": 4, "get": 1}


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base is not None else None
    return None


def _makes_client(node: ast.AST | None) -> bool:
    """`MilvusClient(...)`, `pymilvus.MilvusClient(...)`, or `milvus_client(...)` (a context manager
    that yields one)."""
    if not isinstance(node, ast.Call):
        return False
    name = _dotted(node.func) or ""
    last = name.rsplit(".", 1)[-1]
    return last in MILVUS_CLIENT_CLASSES or last == "milvus_client"


def _clients(tree: ast.AST) -> set[str]:
    """Names and attributes (`client`, `self._client`) bound to a Milvus client in a module."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and _makes_client(node.value):
            found |= {d for t in node.targets if (d := _dotted(t)) is not None}
        elif isinstance(node, ast.AnnAssign) and _makes_client(node.value):
            if (d := _dotted(node.target)) is not None:
                found.add(d)
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                if _makes_client(item.context_expr) and item.optional_vars is not None:
                    if (d := _dotted(item.optional_vars)) is not None:
                        found.add(d)
    return found


def _client_method(node: ast.AST, clients: set[str]) -> str | None:
    """`get`, `delete` or `query` when `node` is that method of a Milvus client."""
    if isinstance(node, ast.Attribute) and node.attr in IDS_POSITION and _dotted(node.value) in clients:
        return node.attr
    return None


def violations(source: str, filename: str = "<source>") -> tuple[list[str], int]:
    """(every way `source` hands pymilvus ids, how many Milvus client methods it uses at all)."""
    tree = ast.parse(source, filename)
    clients = _clients(tree)
    out: list[str] = []
    uses = 0

    def at(node: ast.AST, what: str) -> None:
        out.append(f"{filename}:{getattr(node, 'lineno', '?')}: {what}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _dotted(node.value) in clients:
            uses += 1
            if node.attr == "get":
                at(node, f"{_dotted(node)}: MilvusClient.get packs its ids into an expression unescaped")
        if not isinstance(node, ast.Call):
            continue
        for kw in node.keywords:
            if kw.arg in ID_KEYWORDS:
                at(kw.value, f"`{kw.arg}=` passed to {_dotted(node.func) or 'a call'}")
            elif kw.arg is None and isinstance(kw.value, ast.Dict):
                for key in kw.value.keys:
                    if isinstance(key, ast.Constant) and key.value in ID_KEYWORDS:
                        at(key, f"`**{{{key.value!r}: …}}` passed to {_dotted(node.func) or 'a call'}")
        # The method called directly, or handed to a wrapper that calls it with the arguments after
        # it (MilvusSink._call(op, fn, *args, **kwargs)).
        calls: list[tuple[str, list[ast.expr]]] = []
        if (method := _client_method(node.func, clients)) is not None:
            calls.append((method, node.args))
        for i, arg in enumerate(node.args):
            if (method := _client_method(arg, clients)) is not None:
                calls.append((method, node.args[i + 1 :]))
        for method, args in calls:
            if any(isinstance(a, ast.Starred) for a in args):
                at(node, f"{method}(*…): cannot tell whether ids are passed positionally")
            elif len(args) > IDS_POSITION[method]:
                at(node, f"{method}() given ids positionally (argument {IDS_POSITION[method] + 1})")
    return out, uses


def test_no_code_under_ingestor_hands_pymilvus_ids() -> None:
    found: list[str] = []
    uses = 0
    for path in sorted(PACKAGE.rglob("*.py")):
        bad, n = violations(path.read_text(encoding="utf-8"), str(path.relative_to(PACKAGE.parent)))
        found += bad
        uses += n
    assert not found, "build the expression with ingestor.expressions.field_in instead:\n" + "\n".join(found)
    # Not vacuous: the scan recognises the sink's client and its calls (upsert, delete, query, search…).
    assert uses >= 5, f"the scan found only {uses} uses of a Milvus client: it no longer recognises the client"


SINK_LIKE = """
from pymilvus import MilvusClient
class Sink:
    def connect(self):
        self._client = MilvusClient(uri="x")
    def _call(self, op, fn, *args, **kwargs):
        return fn(*args, **kwargs)
    def delete(self, ids):
        {line}
"""


@pytest.mark.parametrize(
    "line",
    [
        'self._call("delete", self._client.delete, "c", ids=ids)',
        'self._call("delete", self._client.delete, "c", ids)',
        'self._call("delete", self._client.delete, "c", pks=ids)',
        'self._client.delete("c", ids)',
        'self._client.query("c", "", ["id"], None, ids)',
        'self._client.query("c", **{"ids": ids})',
        'self._call("get", self._client.get, "c", ids)',
        "return self._client.get",
        "self._client.delete(*ids)",
        "self.other(ids=ids)",  # any `ids=` keyword at all: no function of ours takes one
    ],
)
def test_the_scan_flags_every_way_to_hand_pymilvus_ids(line: str) -> None:
    found, _ = violations(SINK_LIKE.format(line=line))
    assert found, line


@pytest.mark.parametrize(
    "source",
    [
        SINK_LIKE.format(line='self._call("delete", self._client.delete, "c", filter=field_in("id", ids))'),
        SINK_LIKE.format(line='self._client.query("c", filter=field_in("id", ids), output_fields=["id"])'),
        "import redis\nclient = redis.Redis()\nclient.delete(*keys)\n",  # not a Milvus client
        "cache = {}\nvalue = cache.get('k')\n",
    ],
)
def test_the_scan_leaves_expressions_and_other_clients_alone(source: str) -> None:
    found, _ = violations(source)
    assert not found, found


def test_the_scan_finds_clients_bound_in_a_with_and_by_annotation() -> None:
    found, uses = violations("with milvus_client(uri) as c:\n    c.delete('c', ['a'])\n")
    assert found and uses == 1
    found, _ = violations("from pymilvus import MilvusClient\nc: MilvusClient = MilvusClient()\nc.get('c', 'a')\n")
    assert found
