"""KafkaSource, one `poll_once` at a time, with a scripted consumer and a fake clock (as Kafka
Connect's WorkerSinkTaskTest drives WorkerSinkTask): pausing and retrying a partition whose batch
cannot be decoded, following the position over offsets never delivered, backpressure, revokes."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from kafka import OffsetAndMetadata
from kafka import TopicPartition as KTP
from kafka.errors import KafkaTimeoutError, UnsupportedCodecError
from kafka.record.memory_records import MemoryRecords, MemoryRecordsBuilder
from prometheus_client import REGISTRY

from ingestor.config import KafkaSettings
from ingestor.offsets import OffsetTracker
from ingestor.records import TopicPartition
from ingestor.retry import Backoff
from ingestor.source import LAG_INTERVAL_S, KafkaSource
from ingestor.undecodable import UndecodableBatch, _PartitionRecords
from tests.support.fakes import Clock, FakeConsumer, Record

T0, T1 = KTP("docs", 0), KTP("docs", 1)


@pytest.fixture
def world():
    consumer = FakeConsumer([T0, T1])
    clock = Clock()
    delivered: list[Any] = []
    tracker = OffsetTracker()
    source = KafkaSource(
        KafkaSettings(topics=["docs"], commit_interval_ms=0),
        tracker,
        delivered.extend,
        max_in_flight=8,
        backoff=Backoff(initial_ms=1_000, max_ms=4_000, jitter=0.0),
        consumer=consumer,
        clock=clock,
        sleep=lambda s: None,
    )
    source.start()
    consumer.assign_all()
    source.poll_once()  # positions the new partitions at their committed offsets (none: the beginning)
    return source, consumer, clock, delivered, tracker


def test_a_topic_that_does_not_exist_is_said_once_at_start(caplog):
    # kafka-python's own "not found in cluster metadata" is held back as auto-create noise; a
    # misspelt topic must still be visible, or `--until-caught-up` "catches up" on nothing silently.
    consumer = FakeConsumer([T0, T1])
    source = KafkaSource(
        KafkaSettings(topics=["docs", "dcos"]),
        OffsetTracker(),
        lambda _: None,
        max_in_flight=8,
        backoff=Backoff(),
        consumer=consumer,
        clock=Clock(),
        sleep=lambda s: None,
    )
    with caplog.at_level("INFO", logger="ingestor.source"):
        source.start()
    loud = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(loud) == 1 and "topic dcos does not exist" in loud[0], loud


def _undecodable(tp: KTP, offset: int) -> UndecodableBatch:
    return UndecodableBatch(tp, offset, UnsupportedCodecError("Libraries for zstd compression codec not found"))


def test_an_undecodable_batch_pauses_only_its_partition_and_is_retried_with_backoff(world, caplog):
    source, consumer, clock, delivered, tracker = world
    consumer.script += [_undecodable(T0, 0), {T1: [Record(T1, 0), Record(T1, 1)]}]
    with caplog.at_level("DEBUG", logger="ingestor.source"):
        source.poll_once()
        assert consumer.paused() == {T0}
        assert source.blocked_reason() == (
            "docs[0] at offset 0 cannot be decoded (unsupported_codec: "
            "UnsupportedCodecError: Libraries for zstd compression codec not found); retrying"
        )
        source.poll_once()  # the other partition goes on
        assert [d.position.offset for d in delivered] == [0, 1] and consumer.paused() == {T0}
        clock.now += 0.9
        source.poll_once()
        assert consumer.paused() == {T0}, "retried before its backoff ran out"
        clock.now += 0.2
        consumer.script.append(_undecodable(T0, 0))
        source.poll_once()  # resumed for the retry, which fails again: paused, with a longer backoff
        assert consumer.paused() == {T0} and source.blocked[TopicPartition("docs", 0)].attempts == 2
        clock.now += 1.5
        source.poll_once()
        assert consumer.paused() == {T0}, "the second backoff is twice the first"
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1, "one ERROR per stuck batch, not one per attempt"
    assert "docs[0] at offset 0" in errors[0].getMessage() and "UnsupportedCodecError" in errors[0].getMessage()


def test_a_blocked_partition_that_decodes_again_is_unblocked_and_nothing_was_skipped(world):
    source, consumer, clock, delivered, tracker = world
    consumer.script.append(_undecodable(T0, 0))
    source.poll_once()
    clock.now += 1.1
    consumer.script.append({T0: [Record(T0, 0)]})
    source.poll_once()  # resumes, then the batch decodes
    assert source.blocked == {} and source.blocked_reason() is None
    assert [d.position.offset for d in delivered] == [0]


def test_a_blocked_partition_stays_paused_when_backpressure_lifts(world):
    source, consumer, clock, delivered, tracker = world
    consumer.script.append({T1: [Record(T1, i) for i in range(8)]})
    source.poll_once()  # 8 in flight: at the limit
    consumer.script.append(_undecodable(T0, 0))
    source.poll_once()
    assert consumer.paused() == {T0, T1}
    tracker.done([d.position for d in delivered])
    source.poll_once()  # in flight drops to 0: backpressure lifts, the blocked partition stays paused
    assert consumer.paused() == {T0}


def test_the_commit_follows_the_position_over_offsets_never_delivered(world):
    source, consumer, clock, delivered, tracker = world
    consumer.script.append({T0: [Record(T0, 0), Record(T0, 1)]})
    source.poll_once()
    tracker.done([d.position for d in delivered])
    consumer.skip_to(T0, 3)  # offset 2 was a transaction marker: the consumer stepped over it
    source.poll_once()
    assert consumer.group_committed[T0] == 3


def test_the_commit_never_passes_a_record_in_flight(world):
    source, consumer, clock, delivered, tracker = world
    consumer.script.append({T0: [Record(T0, 0), Record(T0, 1)]})
    source.poll_once()
    tracker.done([delivered[0].position])
    consumer.skip_to(T0, 5)
    source.poll_once()
    assert consumer.group_committed[T0] == 1


def test_a_revoke_commits_what_is_done_and_drops_the_blocked_state(world):
    source, consumer, clock, delivered, tracker = world
    consumer.script += [{T0: [Record(T0, 0), Record(T0, 1)]}, _undecodable(T1, 0)]
    source.poll_once()
    source.poll_once()
    tracker.done([delivered[0].position])
    consumer.revoke({T0, T1})
    assert consumer.commits[-1] == {T0: OffsetAndMetadata(1, "", 0)}
    assert source.blocked == {}


def test_a_failed_poll_is_retried_on_the_next_turn(world):
    source, consumer, clock, delivered, tracker = world
    consumer.script += [KafkaTimeoutError("broker away"), {T0: [Record(T0, 0)]}]
    source.poll_once()
    source.poll_once()
    assert [d.position.offset for d in delivered] == [0]


def test_a_commit_failing_on_revoke_is_logged_and_never_raises_into_the_client(world, caplog):
    source, consumer, clock, delivered, tracker = world
    consumer.script += [{T0: [Record(T0, 0)]}]
    source.poll_once()
    tracker.done([delivered[0].position])

    def refuse(offsets: Any, callback: Any = None) -> None:
        raise KafkaTimeoutError("coordinator away")

    consumer.commit_async = refuse
    with caplog.at_level("WARNING"):
        consumer.revoke({T0, T1})  # raises if the listener lets the error out
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("commit on revoke" in m and "coordinator away" in m for m in warned), warned
    assert not any("trying again later" in m for m in warned), "a commit on revoke is not retried"
    assert not source.tracker.owned()


def test_end_offsets_unreadable_at_start_is_a_retriable_error(caplog):
    from ingestor.errors import RetriableError

    consumer = FakeConsumer([T0, T1])
    calls = {"n": 0}

    def flaky(tps: list[KTP], timeout_ms: int | None = None) -> dict[KTP, int]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise KafkaTimeoutError("no leader")
        return {tp: 3 for tp in tps}

    consumer.end_offsets = flaky
    source = KafkaSource(
        KafkaSettings(topics=["docs"]),
        OffsetTracker(),
        lambda _: None,
        max_in_flight=8,
        until_caught_up=True,
        backoff=Backoff(),
        consumer=consumer,
        clock=Clock(),
        sleep=lambda s: None,
    )
    with pytest.raises(RetriableError, match="end offsets of docs"):
        source.start()
    source.start()  # the daemon retries start() with backoff (Daemon.until_up)
    assert source._catch_up.targets == {TopicPartition("docs", 0): 3, TopicPartition("docs", 1): 3}


def test_pause_and_resume_failing_for_a_partition_revoked_meanwhile_do_not_stop_the_loop(world):
    source, consumer, clock, delivered, tracker = world

    def gone(*tps: KTP) -> None:
        raise AssertionError("partition is not currently assigned")

    consumer.pause = gone
    consumer.script += [{T0: [Record(T0, i) for i in range(8)]}, {}]
    source.poll_once()  # 8 in flight: backpressure pauses next turn
    source.poll_once()  # pausing raises; the turn goes on
    assert source._paused
    consumer.resume = gone
    tracker.done([d.position for d in delivered])
    source.poll_once()
    assert not source._paused


def _sample(name: str, **labels: str) -> float:
    value = REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value


def _lag(tp: KTP) -> float | None:
    return REGISTRY.get_sample_value(
        "ingestor_consumer_lag_records", {"topic": tp.topic, "partition": str(tp.partition)}
    )


def test_the_lag_gauge_is_the_end_offset_minus_the_committed_offset(world):
    source, consumer, clock, delivered, tracker = world
    consumer.script.append({T0: [Record(T0, i) for i in range(5)], T1: [Record(T1, 0), Record(T1, 1)]})
    source.poll_once()
    # T0: 0-2 done (3, 4 in flight: the commit stops at 3); T1: both done.
    tracker.done([d.position for d in delivered if d.position.tp.partition == 1 or d.position.offset < 3])
    # The broker's end offsets (the last stable offsets under read_committed) are past what was
    # fetched: records written since.
    ends = {T0: 12, T1: 7}
    consumer.end_offsets = lambda tps, timeout_ms=None: {tp: ends[tp] for tp in tps}
    clock.now += LAG_INTERVAL_S
    source.poll_once()  # commits T0 at 3 and T1 at 2, then reports the lag
    assert consumer.group_committed == {T0: 3, T1: 2}
    assert (_lag(T0), _lag(T1)) == (12 - 3, 7 - 2)
    # The rest of T0 done, and more written meanwhile: the gauge follows both.
    tracker.done([d.position for d in delivered if d.position.tp.partition == 0 and d.position.offset >= 3])
    ends = {T0: 20, T1: 7}
    clock.now += LAG_INTERVAL_S
    source.poll_once()
    assert consumer.group_committed == {T0: 5, T1: 2}
    assert (_lag(T0), _lag(T1)) == (20 - 5, 7 - 2)


def _corrupt_batch(tp: KTP, offset: int) -> UndecodableBatch:
    """What the consumer's fetch path raises for a v2 batch whose CRC does not match: built by
    kafka-python's own decoder through `_PartitionRecords`, as the daemon's consumer runs it."""
    builder = MemoryRecordsBuilder(magic=2, compression_type=0, batch_size=1 << 20, offset=offset)
    for _ in range(3):
        builder.append(timestamp=1_000, key=None, value=b'{"text": "hello"}', headers=[])
    builder.close()
    data = bytearray(builder.buffer())
    data[-3] ^= 0xFF  # a flipped bit in the last record: the batch's CRC no longer matches
    records = _PartitionRecords(offset, tp, MemoryRecords(bytes(data)))
    with pytest.raises(UndecodableBatch) as raised:
        records.take()
    assert not records, "the failed records are drained, not asked for more (the spin of kafka-python 3.0.12)"
    return raised.value


def test_a_corrupt_batch_is_blocked_with_its_own_reason(world, caplog):
    source, consumer, clock, delivered, tracker = world
    failure = _corrupt_batch(T1, 0)
    assert failure.reason == "corrupt_batch" and failure.offset == 0
    before = {
        r: _sample("ingestor_undecodable_batches_total", reason=r)
        for r in ("corrupt_batch", "unsupported_codec", "undecodable")
    }
    consumer.script += [failure, {T0: [Record(T0, 0)]}]
    with caplog.at_level("ERROR", logger="ingestor.source"):
        source.poll_once()
        source.poll_once()  # the other partition goes on
    assert consumer.paused() == {T1} and [d.position.offset for d in delivered] == [0]
    after = {r: _sample("ingestor_undecodable_batches_total", reason=r) for r in before}
    assert {r: after[r] - before[r] for r in before} == {"corrupt_batch": 1, "unsupported_codec": 0, "undecodable": 0}
    assert _sample("ingestor_partitions_blocked", reason="corrupt_batch") == 1
    assert _sample("ingestor_partitions_blocked", reason="unsupported_codec") == 0
    reason = source.blocked_reason()
    assert reason is not None
    assert reason.startswith("docs[1] at offset 0 cannot be decoded (corrupt_batch: CorruptRecordError"), reason
    assert "failed crc check" in reason and reason.endswith("; retrying"), reason
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "docs[1] at offset 0" in errors[0] and "CorruptRecordError" in errors[0], errors
    # Once the partition is no longer ours, neither the reason nor the gauge keeps it.
    consumer.revoke({T1})
    assert source.blocked_reason() is None
    assert _sample("ingestor_partitions_blocked", reason="corrupt_batch") == 0
