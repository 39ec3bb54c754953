"""What a program that runs a `Daemon` in its own process may watch: records handed from Kafka to
the pipeline, and records acknowledged by Milvus. Pass an `Observer` as `Daemon(observer=...)`."""

from __future__ import annotations

from dataclasses import dataclass

from ingestor.records import Parsed


@dataclass(frozen=True, slots=True)
class Latency:
    """One record written: its Kafka timestamp and when Milvus acknowledged its write (ms since
    the epoch; with chunking, a record's first chunk)."""

    timestamp_ms: int
    written_ms: int


class Observer:
    """Told of records as they arrive and as they land; this one ignores both. Its methods run on
    the daemon's threads, inside the record path: they must be quick and must not raise."""

    def delivered(self, items: list[Parsed]) -> None:
        """Records handed from Kafka to the pipeline (on the consumer thread)."""

    def written(self, latencies: list[Latency]) -> None:
        """Records whose writes Milvus acknowledged (on the writer thread)."""
