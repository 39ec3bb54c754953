"""A collection read back whole, and dropped, through a `MilvusSink`'s connection (which serves a
Milvus Lite file from a child process): how the bench and the tests check what the daemon wrote."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ingestor.sink import MilvusSink


def rows(sink: MilvusSink, fields: Sequence[str]) -> list[dict[str, Any]]:
    """Every entity, these fields only, strongly consistent (none when there is no collection).
    Read with an iterator, so an id stored twice shows twice."""
    if not sink.exists():
        return []
    client = sink._client
    # A reopened Lite file, or a restarted server, may hold the collection released.
    sink._call("load", lambda timeout: client.load_collection(sink.collection, timeout=max(timeout, 60)))
    iterator = sink._call(
        "query",
        client.query_iterator,
        sink.collection,
        batch_size=1000,
        filter="",
        output_fields=list(fields),
        consistency_level="Strong",
    )
    out: list[dict[str, Any]] = []
    try:
        while page := iterator.next():
            out.extend(page)
    finally:
        iterator.close()
    return out


def drop(sink: MilvusSink) -> None:
    """Drop the sink's collection, if it exists."""
    if sink.exists():
        sink._call("drop", sink._client.drop_collection, sink.collection)
