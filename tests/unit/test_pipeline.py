"""The pipeline's threads and queues, end to end over fakes: records submitted flow through the
batcher, the model and the writer, and become committable; an outage holds them, then lets go;
a revoke drops what waits and releases what was in flight."""

from __future__ import annotations

import json
import threading
import time

from ingestor import metrics
from ingestor.config import BatchSettings
from ingestor.observer import Latency, Observer
from ingestor.retry import Backoff
from tests.support.fakes import TP, FakeEmbedder, FakeSink, Log, pipeline_with, records_for


def _wait(condition, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _docs(n: int, start: int = 0) -> list[tuple[bytes | None, bytes | None]]:
    return [(None, json.dumps({"id": f"d{i}", "text": f"text number {i}"}).encode()) for i in range(start, start + n)]


def test_submitted_records_flow_through_every_stage_and_become_committable(world):
    pipeline, tracker, log, sink = world
    items = records_for(tracker, _docs(30) + [(b"d3", None), (None, b"not json")] + _docs(10, start=30))
    pipeline.start()
    pipeline.submit(items[:20])
    pipeline.submit(items[20:])
    pipeline.flush()
    _wait(lambda: tracker.in_flight() == 0)
    assert tracker.to_commit()[TP].offset == len(items)
    upserted = [i for entry in log if entry[0] == "upsert" for i in entry[1]]
    assert sorted(upserted) == sorted(f"d{i}" for i in range(40) if i != 3)
    assert ("dlq", ["invalid_json"]) in log
    assert pipeline.healthy()


def test_an_observer_is_told_of_every_record_written_with_its_kafka_timestamp():
    log = Log()
    written: list[Latency] = []

    class Watch(Observer):
        def written(self, latencies: list[Latency]) -> None:
            written.extend(latencies)

    pipeline, tracker = pipeline_with(log, FakeSink(log), observer=Watch())
    items = records_for(tracker, _docs(12))
    before_ms = int(time.time() * 1000)
    pipeline.start()
    pipeline.submit(items)
    pipeline.flush()
    _wait(lambda: tracker.in_flight() == 0)
    pipeline.stop()
    assert sorted(w.timestamp_ms for w in written) == sorted(i.position.timestamp_ms for i in items)
    assert all(w.written_ms >= before_ms for w in written)


def test_an_outage_holds_the_records_and_pauses_intake_until_it_heals():
    log = Log()
    sink = FakeSink(log, fail_times=3)
    pipeline, tracker = pipeline_with(log, sink, backoff=Backoff(initial_ms=300, max_ms=300, jitter=0.0))
    items = records_for(tracker, _docs(5))
    pipeline.start()
    pipeline.submit(items)
    pipeline.flush()
    _wait(lambda: pipeline.is_retrying())  # the consumer pauses its partitions while this is true
    assert tracker.to_commit() == {}
    _wait(lambda: tracker.in_flight() == 0)
    assert not pipeline.is_retrying()
    assert tracker.to_commit()[TP].offset == 5
    assert [e[0] for e in log].count("upsert-failed") == 3
    pipeline.stop()


def test_a_window_waits_for_max_wait_ms_on_the_pipelines_clock():
    """With a clock that stands still, a part-full window is never cut by time; once the clock
    passes max_wait_ms it is."""
    log = Log()
    now = [100.0]
    pipeline, tracker = pipeline_with(log, FakeSink(log), clock=lambda: now[0])
    items = records_for(tracker, _docs(3))
    pipeline.start()
    try:
        pipeline.submit(items)
        time.sleep(0.5)  # real time passes; the pipeline's does not
        assert tracker.in_flight() == 3 and not [e for e in log if e[0] == "upsert"]
        now[0] += pipeline.settings.max_wait_ms / 1000.0
        pipeline.submit([])  # wakes the batcher, which reads the clock again
        _wait(lambda: tracker.in_flight() == 0)
        assert tracker.to_commit()[TP].offset == 3
    finally:
        pipeline.stop()


def test_a_window_holding_a_batchs_token_budget_in_characters_is_cut_without_waiting():
    """The window's fill level counts characters (`batching.window_chars`): with the clock standing
    still, records whose texts reach max_batch_tokens × CHARS_PER_TOKEN characters are cut at once,
    and one character less waits."""
    from ingestor.batching import CHARS_PER_TOKEN

    log = Log()
    now = [100.0]
    pipeline, tracker = pipeline_with(
        log, FakeSink(log), clock=lambda: now[0], settings=BatchSettings(max_batch_tokens=16, max_batch_records=64)
    )
    budget = 16 * CHARS_PER_TOKEN
    short, last = records_for(
        tracker,
        [
            (None, json.dumps({"id": "a", "text": "x" * (budget - 1)}).encode()),
            (None, json.dumps({"id": "b", "text": "y"}).encode()),
        ],
    )
    pipeline.start()
    try:
        pipeline.submit([short])
        time.sleep(0.3)
        assert tracker.in_flight() == 2, "one character short of a batch: it waits"
        pipeline.submit([last])
        _wait(lambda: tracker.in_flight() == 0)
        assert tracker.to_commit()[TP].offset == 2
    finally:
        pipeline.stop()


def test_a_backlog_fills_windows_of_max_window_records_not_one_window_of_everything():
    """Eight deliveries of the same 16 ids wait before the batcher starts. Windows of 64 records
    hold four deliveries each, and a window collapses repeated ids: two windows write 32 entities.
    One window of everything would write 16."""
    log = Log()
    pipeline, tracker = pipeline_with(
        log, FakeSink(log), settings=BatchSettings(max_window_records=64, max_batch_records=64)
    )
    values = [(None, json.dumps({"id": f"d{i % 16}", "text": f"text {i}"}).encode()) for i in range(128)]
    items = records_for(tracker, values)
    for n in range(0, 128, 16):
        pipeline.submit(items[n : n + 16])
    pipeline.start()
    try:
        _wait(lambda: tracker.in_flight() == 0)
        upserted = [i for entry in log if entry[0] == "upsert" for i in entry[1]]
        assert len(upserted) == 32, upserted
    finally:
        pipeline.stop()


def test_records_of_a_partition_revoked_while_they_wait_are_dropped_not_written():
    log = Log()
    now = [100.0]
    pipeline, tracker = pipeline_with(log, FakeSink(log), clock=lambda: now[0])
    items = records_for(tracker, _docs(3))
    before = metrics.RECORDS.totals()["dropped"]
    pipeline.start()
    try:
        pipeline.submit(items)
        time.sleep(0.3)  # in the window, which the standing clock never cuts
        tracker.revoke(TP)
        now[0] += pipeline.settings.max_wait_ms / 1000.0
        pipeline.submit([])
        _wait(lambda: metrics.RECORDS.totals()["dropped"] - before == 3)
        assert not [e for e in log if e[0] in ("upsert", "forward", "encode")]
    finally:
        pipeline.stop()


class BlockingEmbedder(FakeEmbedder):
    """Its first forward pass waits until released."""

    def __init__(self, log: Log) -> None:
        super().__init__(log)
        self.entered, self.release = threading.Event(), threading.Event()

    def forward(self, features):
        if not self.entered.is_set():
            self.entered.set()
            assert self.release.wait(20)
        return super().forward(features)


def test_a_text_whose_pass_began_before_a_revoke_is_released_for_the_next_owner():
    """The in-flight text set lets go of a pass whose partition was revoked mid-pass: the same text
    from the partition's next assignment is written, not left waiting forever."""
    log = Log()
    embedder = BlockingEmbedder(log)
    pipeline, tracker = pipeline_with(log, FakeSink(log), embedder=embedder)
    pipeline.start()
    try:
        pipeline.submit(records_for(tracker, _docs(1)))
        pipeline.flush()
        assert embedder.entered.wait(20)
        tracker.revoke(TP)
        again = records_for(tracker, _docs(1))  # a new generation of the partition, the same record
        pipeline.submit(again)
        pipeline.flush()
        time.sleep(0.2)
        embedder.release.set()
        _wait(lambda: tracker.in_flight() == 0)
        assert tracker.to_commit()[TP].offset == 1
        assert "d0" in [i for entry in log if entry[0] == "upsert" for i in entry[1]]
        assert len(pipeline.in_flight) == 0
    finally:
        pipeline.stop()
