"""Small fakes of the daemon's collaborators, logging what is done to them in order: a scripted
world for unit tests of the pipeline and its stages (resolver, model stage, writer), and a
scripted KafkaConsumer with a fake clock for the source (as Kafka Connect's WorkerSinkTaskTest
drives WorkerSinkTask)."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
from kafka import OffsetAndMetadata
from kafka import TopicPartition as KTP

from ingestor.config import BatchSettings, KafkaSettings
from ingestor.consistency import Consistency
from ingestor.dedupe import Identity
from ingestor.errors import DataError, RetriableError
from ingestor.in_flight import InFlight
from ingestor.offsets import OffsetTracker
from ingestor.parsing import parse_record
from ingestor.pipeline import Pipeline
from ingestor.records import Position, RawRecord, TopicPartition
from ingestor.resolver import Resolver
from ingestor.retry import Backoff, Retrier

TP = TopicPartition("t", 0)


class Log(list):
    pass


class FakeEmbedder:
    identity = "fake@fp32"
    dimension = 4

    def __init__(self, log: Log, fail_once: set[str] | None = None) -> None:
        self.log = log
        self.fail_once = set(fail_once or ())

    def encode(self, texts):
        failing = self.fail_once & set(texts)
        if failing:
            self.fail_once -= failing
            raise RuntimeError("cannot encode")
        self.log.append(("encode", len(texts)))
        return np.ones((len(texts), 4), dtype=np.float32)

    device = "cpu"

    def prepare(self, texts):
        from ingestor.tokenizer import Prepared

        return [Prepared(5, False, {"input_ids": [1] * 5}) for _ in texts]

    def collate(self, encodings):
        return {"n": len(encodings)}

    def forward(self, features):
        self.log.append(("forward", features["n"]))
        return np.ones((features["n"], 4), dtype=np.float32)


class FakeCache:
    enabled = True

    def __init__(self, log: Log) -> None:
        self.log = log

    def lookup(self, ids, shas):
        return [None] * len(ids), [None] * len(shas)

    def store(self, vectors, markers):
        self.log.append(("store", sorted(markers)))

    def forget(self, ids):
        self.log.append(("forget", sorted(ids)))


class FakeSink:
    def __init__(self, log: Log, fail_times: int = 0, reject_id: str | None = None, chunked: bool = False) -> None:
        self.log = log
        self.fail_times = fail_times
        self.reject_id = reject_id
        self.chunked = chunked
        self.held: dict[str, Any] = {}  # what `stored` answers, by record id
        self.timestamp = 0  # what `covering_timestamp` answers (0: none, as Milvus Lite)

    def upsert(self, entities):
        if self.fail_times:
            self.fail_times -= 1
            self.log.append(("upsert-failed", len(entities)))
            raise RetriableError("milvus", "down")
        if self.reject_id and any(e.id == self.reject_id for e in entities):
            raise DataError("sink_rejected", "no")
        self.log.append(("upsert", sorted(e.id for e in entities)))
        return len(entities)

    def delete(self, ids):
        self.log.append(("delete", sorted(ids)))

    def covering_timestamp(self):
        return self.timestamp

    def stored(self, ids, guarantee=None):
        self.log.append(("read", "strong" if guarantee is None else "guarantee"))
        return {i: self.held[i] for i in ids if i in self.held}


class FakeDlq:
    def __init__(self, log: Log) -> None:
        self.log = log

    def send(self, items):
        self.log.append(("dlq", sorted(i.reason for i in items)))


class LoggingTracker(OffsetTracker):
    def __init__(self, log: Log) -> None:
        super().__init__()
        self.log = log

    def done(self, positions):
        self.log.append(("done", sorted(p.offset for p in positions)))
        super().done(positions)


def pipeline_with(
    log: Log,
    sink: FakeSink,
    embedder: FakeEmbedder | None = None,
    backoff: Backoff | None = None,
    clock: Callable[[], float] = time.monotonic,
    settings: BatchSettings | None = None,
    cache: FakeCache | None = None,
    splitter: Any = None,
    observer: Any = None,
) -> tuple[Pipeline, LoggingTracker]:
    tracker = LoggingTracker(log)
    sink.chunked = splitter is not None  # as the daemon builds both from chunking.enabled
    p = Pipeline(
        settings or BatchSettings(),
        tracker,
        embedder or FakeEmbedder(log),
        cache or FakeCache(log),
        sink,
        FakeDlq(log),
        backoff or Backoff(initial_ms=1, max_ms=2, jitter=0.0),
        store_text=True,
        observer=observer,
        clock=clock,
        splitter=splitter,
    )
    return p, tracker


def resolver_with(log: Log, sink: FakeSink | None = None, cache: FakeCache | None = None) -> Resolver:
    """The pipeline's resolver on its own, with fresh records and texts in flight
    (`resolver.in_flight`) and the identity `pipeline_with` gives."""
    import threading

    retrier = Retrier(Backoff(initial_ms=1, max_ms=2, jitter=0.0), threading.Event())
    return Resolver(
        cache or FakeCache(log),
        sink or FakeSink(log),
        retrier,
        InFlight(),
        Identity(FakeEmbedder.identity, True),
        Consistency(),
    )


def records_for(tracker: OffsetTracker, values: list[tuple[bytes | None, bytes | None]]):
    generation = tracker.assign(TP)
    out = []
    for offset, (key, value) in enumerate(values):
        pos = Position(TP, offset, 0, generation, 0)
        tracker.add(pos)
        out.append(parse_record(RawRecord(pos, key, value), KafkaSettings()))
    return out


def slow_tokenizer(hf: Any, max_length: int) -> Any:
    """A `Tokenizer` on the transformers path, as for a tokenizer without a Rust core."""
    from unittest import mock

    from ingestor import tokenizer

    with mock.patch.object(tokenizer, "batch_tokenizer", lambda hf, max_length: None):
        return tokenizer.Tokenizer(hf, max_length)


class BarSplitter:
    """Chunks a text at each "|": a splitter whose cuts a test can see at a glance."""

    layout = "chunks:bars"

    def split(self, text: str):
        from ingestor.chunking import Chunk

        out, start = [], 0
        for i, part in enumerate(text.split("|")):
            out.append(Chunk(i, part, start, start + len(part), 1))
            start += len(part) + 1
        return out

    def split_many(self, texts: list[str]):
        return [self.split(t) for t in texts]


# -- Kafka ------------------------------------------------------------------------------------------


class Record:
    def __init__(self, tp: KTP, offset: int, value: bytes | None = b'{"text": "hello"}', key: bytes | None = None):
        self.topic, self.partition, self.offset = tp.topic, tp.partition, offset
        self.value, self.key, self.headers = value, key, []
        self.leader_epoch, self.timestamp = 0, 1_000


class FakeConsumer:
    """The KafkaConsumer calls KafkaSource makes, answered from a script: each `poll` takes the
    next scripted result (a dict of records or an exception to raise); positions follow what was
    handed out unless the script moves them (`skip_to`: markers, aborted records)."""

    def __init__(self, partitions: list[KTP]) -> None:
        self.partitions = partitions
        self.script: deque[Any] = deque()
        self.listener: Any = None
        self.assigned: set[KTP] = set()
        self.paused_set: set[KTP] = set()
        self.positions: dict[KTP, int] = {}
        self.commits: list[dict[KTP, OffsetAndMetadata]] = []
        self.group_committed: dict[KTP, int] = {}

    # subscription and rebalances
    def subscribe(self, topics: list[str], listener: Any) -> None:
        self.listener = listener

    def partitions_for_topic(self, topic: str) -> set[int]:
        return {tp.partition for tp in self.partitions if tp.topic == topic}

    def assign_all(self) -> None:
        self.assigned = set(self.partitions)
        self.listener.on_partitions_assigned(set(self.partitions))

    def revoke(self, tps: set[KTP]) -> None:
        self.listener.on_partitions_revoked(tps)
        self.assigned -= tps

    # fetching
    def poll(self, timeout_ms: int) -> dict[KTP, list[Record]]:
        step = self.script.popleft() if self.script else {}
        if isinstance(step, BaseException):
            raise step
        out = {}
        for tp, records in step.items():
            if tp in self.paused_set or tp not in self.assigned:
                continue  # a paused partition hands out nothing
            out[tp] = records
            if records:
                self.positions[tp] = records[-1].offset + 1
        return out

    def skip_to(self, tp: KTP, offset: int) -> None:
        self.positions[tp] = offset

    def position(self, tp: KTP, timeout_ms: int | None = None) -> int | None:
        return self.positions.get(tp)

    def assignment(self) -> set[KTP]:
        return set(self.assigned)

    def paused(self) -> set[KTP]:
        return set(self.paused_set)

    def pause(self, *tps: KTP) -> None:
        self.paused_set |= set(tps)

    def resume(self, *tps: KTP) -> None:
        self.paused_set -= set(tps)

    # offsets
    def committed(self, tp: KTP, timeout_ms: int | None = None) -> int | None:
        return self.group_committed.get(tp)

    def seek(self, tp: KTP, offset: int) -> None:
        self.positions[tp] = offset

    def seek_to_beginning(self, *tps: KTP) -> None:
        for tp in tps:
            self.positions[tp] = 0

    def seek_to_end(self, *tps: KTP) -> None:
        raise AssertionError("not scripted")

    def end_offsets(self, tps: list[KTP], timeout_ms: int | None = None) -> dict[KTP, int]:
        return {tp: self.positions.get(tp, 0) for tp in tps}

    def beginning_offsets(self, tps: list[KTP]) -> dict[KTP, int]:
        return {tp: 0 for tp in tps}

    def commit_async(self, offsets: dict[KTP, OffsetAndMetadata], callback: Any = None) -> None:
        self.commits.append(dict(offsets))
        self.group_committed.update({tp: om.offset for tp, om in offsets.items()})
        if callback is not None:
            callback(offsets, None)

    def commit(self, offsets: dict[KTP, OffsetAndMetadata], timeout_ms: int | None = None) -> None:
        self.commit_async(offsets)

    def close(self, autocommit: bool = False, timeout_ms: int | None = None) -> None:
        pass


class Clock:
    """A monotonic clock that moves only when a test sets `now`."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now
