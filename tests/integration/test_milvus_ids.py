"""Any id is safe against a real Milvus, the Lite server and the Milvus 2.3.5 server alike (their
expression grammars differ): reading, deleting and skip-checking an id touch exactly that id,
whatever quotes, backslashes, brackets, line breaks or Unicode it holds, at any position."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bench import milvus
from ingestor.config import MilvusSettings
from ingestor.lite import LiteServer
from ingestor.milvus_schema import Entity
from ingestor.parsing import MAX_ID_BYTES
from ingestor.sink import MilvusSink, Stored
from tests.support import harness

DIM = 4


def _valid(s: str) -> bool:
    return bool(s.strip()) and len(s.encode("utf-8")) <= MAX_ID_BYTES - 16


# What the parser lets through as an id: non-blank, encodable, at most MAX_ID_BYTES of UTF-8.
ids = st.text(min_size=1, max_size=60).filter(_valid)

# Ids that break out of a quoted list to name another id `b` of the same example, for each way a
# list could be quoted (double or single quotes, escaped quotes, a trailing backslash that eats
# the closing quote): with an expression built by pasting, deleting or reading one of these would
# touch `b` as well.
ATTACKS = [
    '{a}", "{b}',
    "{a}', '{b}",
    '{a}"] or id in ["{b}',
    "{a}' or id in ['{b}",
    '{a}" or id == "{b}',
    '{a}\\", \\"{b}',
    "{a}\\', \\'{b}",
    "{a}\\",
]


@st.composite
def attacking_group(draw) -> tuple[list[str], list[str]]:
    """(ids as drawn, 1-2 ids built from them to reach one of them)."""
    base = draw(st.lists(ids, min_size=2, max_size=4, unique=True))
    attacks: list[str] = []
    for _ in range(draw(st.integers(1, 2))):
        attack = draw(st.sampled_from(ATTACKS)).format(
            a=draw(st.sampled_from([*base, "", "x"])), b=draw(st.sampled_from(base))
        )
        if _valid(attack) and attack not in base + attacks:
            attacks.append(attack)
    assume(attacks)
    return base, attacks


def entity(record_id: str, n: int) -> Entity:
    v = np.zeros(DIM, dtype=np.float32)
    v[n % DIM] = 1.0
    return Entity(
        id=record_id,
        vector=v,
        text="t",
        metadata={},
        content_hash=f"h{n}",
        model="m",
        truncated=False,
        kafka_topic="t",
        kafka_partition=0,
        kafka_offset=n,
    )


def _open_sink(request, tmp_path_factory, name: str, chunked: bool = False) -> Iterator[MilvusSink]:
    """A real Milvus behind the daemon's own sink: the Lite server over gRPC, or the Milvus server."""
    server = None
    if request.param == "lite":
        server = LiteServer(str(tmp_path_factory.mktemp(name) / f"{name}.db"))
        uri = server.start()
    else:
        uri = request.getfixturevalue("milvus_server")
    sink = MilvusSink(MilvusSettings(uri=uri, collection=harness.unique(name).replace("-", "_")), chunked=chunked)
    sink.connect()
    sink.ensure_collection(DIM, "m")
    try:
        yield sink
    finally:
        milvus.drop(sink)
        sink.close()
        if server is not None:
            server.stop()


@pytest.fixture(scope="module", params=["lite", "server"])
def sink(request, tmp_path_factory) -> Iterator[MilvusSink]:
    yield from _open_sink(request, tmp_path_factory, "ids")


# The server reads every example's deletes back Strong (a time tick each): fewer examples there, the
# same ids and checks.
_EXAMPLES = {"lite": 60, "server": 20}


@pytest.mark.parametrize("sink", ["lite"], indirect=True)
@settings(max_examples=_EXAMPLES["lite"], deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(attacking_group(), st.data())
def test_delete_and_query_of_an_id_touch_exactly_that_id(
    sink: MilvusSink, group: tuple[list[str], list[str]], data
) -> None:
    touch_exactly(sink, group, data)


@pytest.mark.parametrize("sink", ["server"], indirect=True)
@settings(max_examples=_EXAMPLES["server"], deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(attacking_group(), st.data())
def test_delete_and_query_of_an_id_touch_exactly_that_id_on_the_server(
    sink: MilvusSink, group: tuple[list[str], list[str]], data
) -> None:
    touch_exactly(sink, group, data)


def touch_exactly(sink: MilvusSink, group: tuple[list[str], list[str]], data) -> None:
    # The ids go in as drawn (a hostile first character included), with ids built to reach
    # another of them; each example deletes all of its ids before the next begins, and asserts
    # so, so that examples never see each other's.
    base, attacks = group
    names = base + attacks
    sink.upsert([entity(name, n) for n, name in enumerate(names)])
    victim = data.draw(st.sampled_from(names))
    others = [n for n in names if n != victim]

    # Every attack read alone, then deleted alone, touches itself only: injection is attempted in
    # every example, whichever victim was drawn.
    for attack in attacks:
        assert [r["id"] for r in sink.get([attack], ["id"])] == [attack]
        assert sink.content_hashes([attack]) == {attack: f"h{names.index(attack)}"}
    assert [r["id"] for r in sink.get([victim], ["id"])] == [victim]
    assert sink.content_hashes([victim]) == {victim: f"h{names.index(victim)}"}
    sink.delete([victim])
    assert sink.get([victim], ["id"]) == []
    assert sorted(r["id"] for r in sink.get(names, ["id"])) == sorted(others)
    left = list(others)
    for attack in [a for a in attacks if a != victim]:
        sink.delete([attack])
        left.remove(attack)
        assert sorted(r["id"] for r in sink.get(names, ["id"])) == sorted(left), f"deleting {attack!r}"
    sink.delete(others)
    assert sink.get(names, ["id"]) == []


def chunk(record_id: str, index: int, count: int, n: int) -> Entity:
    from ingestor.chunking import chunk_id
    from ingestor.milvus_schema import ChunkSpan

    base = entity(chunk_id(record_id, index), n)
    return Entity(
        **{
            **{f: getattr(base, f) for f in base.__dataclass_fields__},
            "content_hash": f"h{n}",
            "chunk": ChunkSpan(record_id, index, count, 0, 1),
        }
    )


@pytest.fixture(scope="module", params=["lite", "server"])
def chunk_sink(request, tmp_path_factory) -> Iterator[MilvusSink]:
    """The sink over a collection of chunks, as `chunking.enabled` makes it."""
    yield from _open_sink(request, tmp_path_factory, "chunks", chunked=True)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(attacking_group())
def test_a_read_at_the_covering_timestamp_sees_every_write_before_it(
    chunk_sink: MilvusSink, group: tuple[list[str], list[str]]
) -> None:
    """What the writer and `consistency` rely on, on both Milvus implementations: after an upsert
    the sink's covering timestamp makes a read see it, and every delete before it; after a delete
    there is none (a Milvus 2.3 server answers a delete with timestamp 0; Milvus Lite gives none)
    and a Strong read sees it. Reads and deletes by chunk key touch exactly those records."""
    base, attacks = group
    names = base + attacks
    lite = chunk_sink.settings.is_lite or chunk_sink.server_version.startswith("milvus_lite")
    chunk_sink.upsert([chunk(name, i, 3, n) for n, name in enumerate(names) for i in range(3)])
    covering = chunk_sink.covering_timestamp()
    assert (covering == 0) == lite
    assert chunk_sink.stored(names, guarantee=covering or None) == {
        name: Stored(f"h{n}", 3) for n, name in enumerate(names)
    }
    victim = attacks[0]
    # A shrink to one chunk, as the writer does it: the other chunks, the surplus, the first chunk.
    chunk_sink.delete([f"{victim}#1", f"{victim}#2"])
    assert chunk_sink.covering_timestamp() == 0, "a delete's timestamp is not known"
    chunk_sink.upsert([chunk(victim, 0, 1, 99)])
    covering = chunk_sink.covering_timestamp()
    assert chunk_sink.stored(names, guarantee=covering or None)[victim] == Stored("h99", 1)
    rows = chunk_sink.get(
        [f"{n}#{i}" for n in names for i in range(3)],
        ["id"],
        **({"consistency_level": "Customized", "guarantee_timestamp": covering} if covering else {}),
    )
    assert sorted(r["id"] for r in rows) == sorted(
        [f"{n}#{i}" for n in names if n != victim for i in range(3)] + [f"{victim}#0"]
    ), "the deletes before the upsert are seen"
    chunk_sink.delete([f"{n}#{i}" for n in names for i in range(3)])
    assert chunk_sink.stored(names) == {}, "a Strong read sees a delete"
