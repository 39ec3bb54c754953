"""Small fakes of the pipeline's collaborators, logging what is done to them in order (a scripted
world for unit tests of the pipeline and the writer)."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from ingestor.config import BatchSettings, KafkaSettings
from ingestor.errors import DataError, RetriableError
from ingestor.offsets import OffsetTracker
from ingestor.parsing import parse_record
from ingestor.pipeline import Pipeline
from ingestor.records import Position, RawRecord, TopicPartition
from ingestor.retry import Backoff

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
    def __init__(self, log: Log, fail_times: int = 0, reject_id: str | None = None) -> None:
        self.log = log
        self.fail_times = fail_times
        self.reject_id = reject_id

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

    def content_hashes(self, ids):
        return {}


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


def pipeline_with(log: Log, sink: FakeSink, embedder: FakeEmbedder | None = None,
                  backoff: Backoff | None = None, clock: Callable[[], float] = time.monotonic,
                  settings: BatchSettings | None = None) -> tuple[Pipeline, LoggingTracker]:
    tracker = LoggingTracker(log)
    p = Pipeline(settings or BatchSettings(), tracker, embedder or FakeEmbedder(log), FakeCache(log), sink, FakeDlq(log),
                 backoff or Backoff(initial_ms=1, max_ms=2, jitter=0.0), store_text=True, clock=clock)
    return p, tracker


def records_for(tracker: OffsetTracker, values: list[tuple[bytes | None, bytes | None]]):
    generation = tracker.assign(TP)
    out = []
    for offset, (key, value) in enumerate(values):
        pos = Position(TP, offset, 0, generation, 0)
        tracker.add(pos)
        out.append(parse_record(RawRecord(pos, key, value), KafkaSettings()))
    return out


