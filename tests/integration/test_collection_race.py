"""Several workers starting together on a new collection: one creates it, the others use it; none
fails, and all share one incarnation (so they share cache markers)."""

from __future__ import annotations

import logging
import threading

import pytest

from bench import milvus
from ingestor.config import MilvusSettings
from ingestor.lite import LiteServer
from ingestor.sink import MilvusSink
from tests.support import harness


@pytest.mark.parametrize("backend", ["lite", "server"])
def test_workers_racing_to_create_one_collection_all_start_on_it(backend, request, tmp_path, caplog):
    server = None
    if backend == "lite":
        server = LiteServer(str(tmp_path / "race.db"))
        uri = server.start()
    else:
        uri = request.getfixturevalue("milvus_server")
    name = harness.unique("raced").replace("-", "_")
    sinks = [MilvusSink(MilvusSettings(uri=uri, collection=name)) for _ in range(4)]
    errors: list[BaseException] = []
    gate = threading.Barrier(len(sinks))

    def start(sink: MilvusSink) -> None:
        try:
            sink.connect()
            gate.wait()
            sink.ensure_collection(8, "m")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(s,)) for s in sinks]
    try:
        with caplog.at_level("INFO", logger="ingestor.sink"):
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
        assert not errors, errors
        assert len({s.namespace for s in sinks}) == 1, "every worker must use the one collection's incarnation"
        created = [r for r in caplog.records if "created Milvus collection" in r.getMessage()]
        assert len(created) == 1, [r.getMessage() for r in created]
        loud = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert not loud, f"a race that every worker survives is not worth a warning: {loud}"
    finally:
        milvus.drop(sinks[0])
        for s in sinks:
            s.close()
        if server is not None:
            server.stop()
