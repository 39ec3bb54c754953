"""Milvus Lite in a child process (ingestor/lite.py), against the real Milvus Lite: it serves,
keeps what it acknowledged across a restart, never outlives its parent, refuses a second user of
its file clearly, and a crash of it is an outage the sink recovers from."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest

from ingestor.config import MilvusSettings
from ingestor.errors import RetriableError, StartupError
from ingestor.lite import LiteServer
from ingestor.milvus_schema import Entity
from ingestor.sink import MilvusSink

DIM = 8


@contextmanager
def milvus_client(path: str) -> Iterator[Any]:
    """A MilvusClient for a Lite file, served by a child for just this long, so the file is free
    again afterwards (pymilvus's in-process server would hold it until this process exits)."""
    from pymilvus import MilvusClient

    lite = LiteServer(path)
    client = MilvusClient(uri=lite.start())
    try:
        yield client
    finally:
        client.close()
        lite.stop()


def entity(i: int) -> Entity:
    v = np.zeros(DIM, dtype=np.float32)
    v[i % DIM] = 1.0
    return Entity(
        id=f"id-{i}",
        vector=v,
        text=f"text {i}",
        metadata={"i": i},
        content_hash=f"h{i}",
        model="m",
        truncated=False,
        kafka_topic="t",
        kafka_partition=0,
        kafka_offset=i,
    )


def sink_for(path: str) -> MilvusSink:
    sink = MilvusSink(MilvusSettings(uri=path, collection="docs"))
    sink.connect()
    sink.ensure_collection(DIM, "m")
    return sink


def children_of(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid), "-f", "ingestor.lite"], capture_output=True, text=True, check=False)
    return [int(p) for p in out.stdout.split()]


def gone(pid: int, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":  # dead, not yet reaped by its parent
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.1)
    return False


def test_rows_written_through_the_child_are_there_after_it_restarts(tmp_path):
    path = str(tmp_path / "a.db")
    sink = sink_for(path)
    assert sink._lite is not None and sink._lite.alive and children_of(os.getpid())
    sink.upsert([entity(i) for i in range(20)])
    sink.close()
    assert not children_of(os.getpid()), "close stops the child"
    with milvus_client(path) as client:
        client.load_collection("docs")
        rows = client.query("docs", filter="", output_fields=["id", "metadata"], consistency_level="Strong")
    assert sorted(r["id"] for r in rows) == sorted(f"id-{i}" for i in range(20))
    assert all(r["metadata"]["i"] == int(r["id"].split("-")[1]) for r in rows)


def test_the_child_stops_when_its_parent_is_killed(tmp_path):
    path = str(tmp_path / "b.db")
    script = (
        "import os, sys\nfrom ingestor.lite import LiteServer\n"
        f"LiteServer({path!r}).start()\nprint('up', flush=True)\nsys.stdin.read()\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None and parent.stdout.readline().strip() == "up"
    (child,) = children_of(parent.pid)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    assert gone(child, within_s=30), "an orphaned Lite child would hold the data directory"
    server = LiteServer(path)  # the directory is free again
    try:
        assert server.start().startswith("http://127.0.0.1:")
    finally:
        server.stop()


def test_a_second_user_of_the_file_gets_the_busy_message(tmp_path):
    path = str(tmp_path / "c.db")
    first = LiteServer(path)
    first.start()
    try:
        with pytest.raises(StartupError, match="(?i)lock"):
            LiteServer(path).start()
        # Through the sink, without ingestor's own lock in the way: the message says what to do.
        other = MilvusSink(MilvusSettings(uri=path, collection="docs"))
        other._lock = None
        with pytest.raises(StartupError, match="(?i)lock"):
            other.connect()
    finally:
        first.stop()


def test_a_crashed_child_is_an_outage_the_sink_recovers_from(tmp_path):
    path = str(tmp_path / "d.db")
    sink = sink_for(path)
    try:
        sink.upsert([entity(i) for i in range(5)])
        assert sink._lite is not None
        (child,) = children_of(os.getpid())
        os.kill(child, signal.SIGKILL)
        assert gone(child, within_s=10)
        with pytest.raises(RetriableError):
            sink.upsert([entity(5)])  # the pipeline retries this with backoff
        deadline = time.monotonic() + 60
        while True:
            try:
                sink.upsert([entity(i) for i in range(5, 10)])
                break
            except RetriableError:
                assert time.monotonic() < deadline, "the sink never restarted Milvus Lite"
                time.sleep(0.5)
        assert sink.count() == 10
    finally:
        sink.close()


def test_the_child_still_checks_vectors_and_keeps_every_float(tmp_path):
    """The child skips Lite's per-element check of wire floats (lite.trust_wire_floats): widths
    and missing vectors are still refused, and every float written comes back bit for bit."""
    sink = sink_for(str(tmp_path / "v.db"))
    try:
        rng = np.random.default_rng(7)
        vectors = rng.standard_normal((50, DIM)).astype(np.float32)
        entities = [dataclasses.replace(entity(i), vector=v) for i, v in enumerate(vectors)]
        sink.upsert(entities)
        back = {row["id"]: row["vector"] for row in sink.get([e.id for e in entities], ["vector"])}
        for e, v in zip(entities, vectors):
            assert np.array_equal(np.asarray(back[e.id], dtype=np.float32), v)

        short = dict(
            id="short",
            vector=[0.5] * (DIM - 1),
            text="t",
            metadata={},
            content_hash="h",
            model="m",
            truncated=False,
            kafka_topic="t",
            kafka_partition=0,
            kafka_offset=0,
            ingested_at=0,
        )
        with pytest.raises(Exception, match="(?i)dim"):
            sink._client.upsert("docs", [short])
        missing = {k: v for k, v in short.items() if k != "vector"}
        with pytest.raises(Exception, match="(?i)vector"):
            sink._client.upsert("docs", [missing])
        assert sink.get(["short"], ["id"]) == []
    finally:
        sink.close()


def test_the_wire_float_shortcut_applies_to_this_lite_release(monkeypatch):
    """If a Lite upgrade stops matching, the shortcut is off (safe) and this says so."""
    from milvus_lite.engine import collection

    from ingestor.lite import trust_wire_floats

    monkeypatch.setattr(collection, "validate_record", collection.validate_record)  # restored after
    assert trust_wire_floats()
    assert collection.validate_record.__module__ == "ingestor.lite"
