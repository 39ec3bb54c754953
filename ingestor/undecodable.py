"""The guard for batches that cannot be decoded (a codec we lack, a corrupt batch): the partition
of such a batch is paused and its batch retried with backoff, never skipped, while the other
partitions go on. `KafkaSource` reports each failure (`block`) and calls `retry` every turn."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kafka import TopicPartition as KafkaTP
from kafka.consumer.fetcher import Fetcher

from ingestor import metrics
from ingestor.kafka_common import UNDECODABLE_REASONS, kafka_call, kafka_tp, our_tp, undecodable_reason
from ingestor.offsets import OffsetTracker
from ingestor.patches import fingerprint, not_applied
from ingestor.records import TopicPartition
from ingestor.retry import Backoff

log = logging.getLogger(__name__)


class UndecodableBatch(Exception):
    """A fetched batch of one partition cannot be decoded (a codec we lack, a corrupt batch)."""

    def __init__(self, tp: KafkaTP, offset: int, cause: BaseException) -> None:
        super().__init__(f"{tp.topic}[{tp.partition}] at offset {offset}: {type(cause).__name__}: {cause}")
        self.tp = tp
        self.offset = offset
        self.cause = cause

    @property
    def reason(self) -> str:
        return undecodable_reason(self.cause)


class _PartitionRecords(Fetcher.PartitionRecords):
    """kafka-python's fetched records of one partition, failing cleanly on a batch it cannot decode.

    kafka-python 3.0.12 decodes a batch lazily inside a generator. When decoding raises, the
    generator is finished, yet the fetcher keeps the half-read records as "next in line" and asks
    them for more forever: `poll()` spins at 100% CPU and never returns (not even for a signal).
    Here the failure ends these records (the fetcher moves on; the partition's position stays at the
    bad batch, so nothing is skipped) and names the partition and offset, which kafka-python's own
    exception does not."""

    def take(self, n: int | None = None) -> list:
        try:
            return super().take(n)
        except Exception as exc:  # whatever decoding raised (not only kafka-python's own): re-raised, named
            offset = self.next_fetch_offset
            self.drain()
            raise UndecodableBatch(self.topic_partition, offset, exc) from exc


# kafka-python 3.0.12's `PartitionRecords.take` and `__init__` (what sets `next_fetch_offset` and
# `topic_partition`), which `_PartitionRecords` was read against.
TAKE_FINGERPRINT = "9558697bd76730b8"
INIT_FINGERPRINT = "69626e7150e62346"
FETCH_GUARD = "kafka-python Fetcher.PartitionRecords"


def install(consumer: Any) -> bool:
    """Make the consumer's fetcher hand out `_PartitionRecords`. A subclass changes nothing but a
    failed `take`, so it goes wherever the fetcher has the class to replace; else the loss is said.
    Whether installed."""
    fetcher = getattr(consumer, "_fetcher", None)
    records = getattr(fetcher, "PartitionRecords", None)
    usable = records is not None and all(callable(getattr(records, name, None)) for name in ("take", "drain"))
    if fetcher is None or not usable:
        not_applied(
            FETCH_GUARD,
            "this kafka-python's consumer has no _fetcher.PartitionRecords with take and drain",
            "a batch that cannot be decoded (a codec not installed, a corrupt batch) makes poll() spin at "
            "100% CPU and never return, stalling every partition, instead of pausing its own",
        )
        return False
    fetcher.PartitionRecords = _PartitionRecords
    return True


def fits() -> bool:
    """Whether kafka-python's PartitionRecords is the code `_PartitionRecords` was read against."""
    return (
        fingerprint(Fetcher.PartitionRecords.take) == TAKE_FINGERPRINT
        and fingerprint(Fetcher.PartitionRecords.__init__) == INIT_FINGERPRINT
    )


@dataclass(slots=True)
class Blocked:
    """A partition paused because its next batch cannot be decoded; retried, never skipped."""

    offset: int
    reason: str
    error: str
    attempts: int
    retry_at: float  # monotonic; inf while a retry is under way


class BlockedPartitions:
    """The partitions whose next batch cannot be decoded: paused apart from backpressure."""

    def __init__(self, consumer: Any, tracker: OffsetTracker, backoff: Backoff, clock: Callable[[], float]) -> None:
        self.consumer = consumer
        self.tracker = tracker
        self.backoff = backoff
        self.clock = clock
        self.partitions: dict[TopicPartition, Blocked] = {}

    def block(self, failure: UndecodableBatch) -> None:
        """Pause the partition of a batch that cannot be decoded and retry it with backoff: its
        records are never skipped, and the other partitions go on."""
        tp = our_tp(failure.tp)
        if self.tracker.generation(tp) is None:
            return  # no longer ours
        prior = self.partitions.get(tp)
        attempts = prior.attempts + 1 if prior is not None and prior.offset == failure.offset else 1
        delay = self.backoff.delay_s(attempts - 1)
        name, text = type(failure.cause).__name__, str(failure.cause)
        error = text if text.startswith(name) else f"{name}: {text}"  # kafka-python's errors name themselves
        self.partitions[tp] = Blocked(failure.offset, failure.reason, error, attempts, self.clock() + delay)
        kafka_call(f"pausing {tp}", lambda: self.consumer.pause(failure.tp))  # fails only if revoked meanwhile
        metrics.UNDECODABLE_BATCHES.labels(failure.reason).inc()
        self._report()
        if attempts == 1:
            log.error(
                "cannot decode the batch of %s at offset %d (%s); partition paused, other partitions "
                "go on; retrying with backoff, nothing is skipped",
                tp,
                failure.offset,
                error,
            )
        else:
            log.debug(
                "batch of %s at offset %d still cannot be decoded (attempt %d); next retry in %.1fs",
                tp,
                failure.offset,
                attempts,
                delay,
            )

    def retry(self, paused: bool, stopping: bool) -> None:
        """Resume each partition whose backoff ran out, unless all are paused or we are stopping."""
        now = self.clock()
        for tp, blocked in list(self.partitions.items()):
            if now < blocked.retry_at or paused or stopping:
                continue
            blocked.retry_at = math.inf  # until the retry decodes, or fails again
            if not kafka_call(f"resuming {tp}", lambda: self.consumer.resume(kafka_tp(tp)))[0]:
                self.unblock(tp)

    def waiting(self) -> set[KafkaTP]:
        """The blocked partitions that wait out their backoff: backpressure must not resume them."""
        return {kafka_tp(tp) for tp, b in self.partitions.items() if b.retry_at != math.inf}

    def decoded(self, tp: TopicPartition) -> None:
        """A blocked partition's batch decoded at last (or the position moved past it)."""
        blocked = self.partitions.get(tp)
        if blocked is not None:
            log.info("%s decodes again (offset %d, after %d attempt(s))", tp, blocked.offset, blocked.attempts)
        self.unblock(tp)

    def unblock(self, tp: TopicPartition) -> None:
        """Forget a blocked partition (decoded at last, or no longer ours)."""
        if self.partitions.pop(tp, None) is not None:
            self._report()

    def _report(self) -> None:
        counts: dict[str, int] = {}
        for blocked in list(self.partitions.values()):
            counts[blocked.reason] = counts.get(blocked.reason, 0) + 1
        for reason in UNDECODABLE_REASONS:
            metrics.PARTITIONS_BLOCKED.labels(reason).set(counts.get(reason, 0))

    def reason(self) -> str | None:
        """Why some partition cannot progress, for /readyz; None when all can."""
        items = sorted(self.partitions.items(), key=lambda kv: str(kv[0]))
        if not items:
            return None
        tp, first = items[0]
        more = f" (and {len(items) - 1} more partition(s))" if len(items) > 1 else ""
        return f"{tp} at offset {first.offset} cannot be decoded ({first.reason}: {first.error}); retrying{more}"
