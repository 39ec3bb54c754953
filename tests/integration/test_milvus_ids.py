"""Any id is safe against a real Milvus, the Lite server and the Milvus 2.3.5 server alike (their
expression grammars differ): reading, deleting and skip-checking an id touch exactly that id,
whatever quotes, backslashes, brackets, line breaks or Unicode it holds, at any position."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingestor.config import MilvusSettings
from ingestor.lite import LiteServer
from ingestor.parsing import MAX_ID_BYTES
from ingestor.sink import Entity, MilvusSink
from tests.support import harness

DIM = 4

# What the parser lets through as an id: non-blank, encodable, at most MAX_ID_BYTES of UTF-8.
ids = st.text(min_size=1, max_size=60).filter(
    lambda s: s.strip() and len(s.encode("utf-8")) <= MAX_ID_BYTES - 16)


def entity(record_id: str, n: int) -> Entity:
    v = np.zeros(DIM, dtype=np.float32)
    v[n % DIM] = 1.0
    return Entity(id=record_id, vector=v, text="t", metadata={}, content_hash=f"h{n}", model="m",
                  truncated=False, kafka_topic="t", kafka_partition=0, kafka_offset=n)


@pytest.fixture(scope="module", params=["lite", "server"])
def sink(request, tmp_path_factory) -> Iterator[MilvusSink]:
    """A real Milvus behind the daemon's own sink: the Lite server over gRPC, or the Milvus server."""
    server = None
    if request.param == "lite":
        server = LiteServer(str(tmp_path_factory.mktemp("ids") / "ids.db"))
        uri = server.start()
    else:
        uri = request.getfixturevalue("milvus_server")
    sink = MilvusSink(MilvusSettings(uri=uri, collection=harness.unique("ids").replace("-", "_")))
    sink.connect()
    sink.ensure_collection(DIM, "m")
    try:
        yield sink
    finally:
        sink.drop()
        sink.close()
        if server is not None:
            server.stop()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(ids, min_size=2, max_size=5, unique=True), st.data())
def test_delete_and_query_of_an_id_touch_exactly_that_id(sink: MilvusSink, group: list[str], data) -> None:
    # The ids go in as drawn (a hostile first character included); each example deletes all of
    # its ids before the next begins, and asserts so, so that examples never see each other's.
    names = group
    sink.upsert([entity(name, n) for n, name in enumerate(names)])
    victim = data.draw(st.sampled_from(names))
    others = [n for n in names if n != victim]

    assert [r["id"] for r in sink.get([victim], ["id"])] == [victim]
    assert sink.content_hashes([victim]) == {victim: f"h{names.index(victim)}"}
    sink.delete([victim])
    assert sink.get([victim], ["id"]) == []
    assert sorted(r["id"] for r in sink.get(names, ["id"])) == sorted(others)
    sink.delete(others)
    assert sink.get(names, ["id"]) == []
