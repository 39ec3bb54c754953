"""The Kafka side: poll, decode, hand on, commit, pause/resume — on the consumer thread.

No embedding or writing ever runs on this thread, so no batch however slow keeps it from
polling: the member is never evicted for being busy. When the pipeline holds
`max_in_flight_records`, every partition is paused and polling goes on (heartbeats, rebalances)
until the pipeline drains to half of that.

Commits move only over the contiguous done prefix (`OffsetTracker`), as `last + 1` with the
record's leader epoch, only for partitions we still own.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaConsumer, OffsetAndMetadata
from kafka import TopicPartition as KafkaTP
from kafka.consumer.fetcher import Fetcher
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import CorruptRecordError, UnsupportedCodecError

from ingestor import hooks, metrics
from ingestor.config import KafkaSettings
from ingestor.errors import RetriableError
from ingestor.kafka_common import client_kwargs, kafka_call, kafka_errors
from ingestor.offsets import CommitPoint, OffsetTracker
from ingestor.parsing import parse_record
from ingestor.records import Parsed, Position, RawRecord, TopicPartition
from ingestor.retry import Backoff

log = logging.getLogger(__name__)

LAG_INTERVAL_S = 5.0
UNDECODABLE_REASONS = ("unsupported_codec", "corrupt_batch", "undecodable")

_ASSIGNORS = {
    "range": "RangePartitionAssignor",
    "roundrobin": "RoundRobinPartitionAssignor",
    "cooperative-sticky": "CooperativeStickyAssignor",
}


def _ktp(tp: TopicPartition) -> KafkaTP:
    return KafkaTP(tp.topic, tp.partition)


def _tp(ktp: KafkaTP) -> TopicPartition:
    return TopicPartition(ktp.topic, ktp.partition)


class UndecodableBatch(Exception):
    """A fetched batch of one partition cannot be decoded (a codec we lack, a corrupt batch)."""

    def __init__(self, tp: KafkaTP, offset: int, cause: BaseException) -> None:
        super().__init__(f"{tp.topic}[{tp.partition}] at offset {offset}: {type(cause).__name__}: {cause}")
        self.tp = tp
        self.offset = offset
        self.cause = cause

    @property
    def reason(self) -> str:
        if isinstance(self.cause, UnsupportedCodecError):
            return "unsupported_codec"
        if isinstance(self.cause, CorruptRecordError):
            return "corrupt_batch"
        return "undecodable"


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
        except Exception as exc:
            offset = self.next_fetch_offset
            self.drain()
            raise UndecodableBatch(self.topic_partition, offset, exc) from exc




def make_consumer(settings: KafkaSettings) -> KafkaConsumer:
    from kafka.coordinator import assignors

    assignor_name = _ASSIGNORS[settings.assignor]
    assignor = getattr(assignors, assignor_name, None)
    if assignor is None:  # older layouts keep each assignor in its own module
        from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
        from kafka.coordinator.assignors.range import RangePartitionAssignor
        from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor

        assignor = {"RangePartitionAssignor": RangePartitionAssignor,
                    "RoundRobinPartitionAssignor": RoundRobinPartitionAssignor,
                    "CooperativeStickyAssignor": CooperativeStickyAssignor}[assignor_name]
    kwargs = client_kwargs(settings)
    if settings.group_instance_id:
        kwargs["group_instance_id"] = settings.group_instance_id
    with kafka_errors("kafka", f"cannot reach {settings.bootstrap_servers}", at_start=True):
        consumer = KafkaConsumer(
            **kwargs,
            group_id=settings.group_id,
            enable_auto_commit=False,
            auto_offset_reset=settings.auto_offset_reset,
            max_poll_records=settings.max_poll_records,
            max_poll_interval_ms=settings.max_poll_interval_ms,
            session_timeout_ms=settings.session_timeout_ms,
            heartbeat_interval_ms=settings.heartbeat_interval_ms,
            isolation_level=settings.isolation_level,
            partition_assignment_strategy=[assignor],
            # No deserializers: a raising deserializer wedges the consumer on that record.
        )
    hooks.current.consumer_created(consumer)
    fetcher = getattr(consumer, "_fetcher", None)
    if fetcher is None or not hasattr(fetcher, "PartitionRecords"):
        raise RuntimeError("this kafka-python has no Fetcher.PartitionRecords: pin kafka-python 3.0.x")
    fetcher.PartitionRecords = _PartitionRecords
    return consumer


@dataclass(slots=True)
class Blocked:
    """A partition paused because its next batch cannot be decoded; retried, never skipped."""

    offset: int
    reason: str
    error: str
    attempts: int
    retry_at: float  # monotonic; inf while a retry is under way


@dataclass(slots=True)
class CatchUp:
    """End offsets seen at start; done once the group committed at least that far everywhere."""

    targets: dict[TopicPartition, int] = field(default_factory=dict)
    reached: set[TopicPartition] = field(default_factory=set)

    def done(self) -> bool:
        return bool(self.targets) and self.reached >= set(self.targets)


class _Listener(ConsumerRebalanceListener):
    """Runs on kafka-python's I/O loop, next to heartbeats: must return quickly."""

    def __init__(self, source: KafkaSource) -> None:
        self.source = source

    def on_partitions_assigned(self, assigned: set[KafkaTP]) -> None:
        for ktp in assigned:
            tp = _tp(ktp)
            self.source.tracker.assign(tp)
            self.source.newly_assigned.add(tp)
        log.info("partitions assigned: %s (owning %d)", ", ".join(sorted(str(_tp(k)) for k in assigned)) or "none",
                 len(self.source.tracker.owned()))
        metrics.PARTITIONS_ASSIGNED.set(len(self.source.tracker.owned()))

    def on_partitions_revoked(self, revoked: set[KafkaTP]) -> None:
        # Commit what is done for the leaving partitions, without waiting: the next owner resumes
        # there; anything not done (or a commit that does not land) is simply replayed by it.
        offsets = {}
        for ktp in revoked:
            self.source.unblock(_tp(ktp))
            point = self.source.tracker.revoke(_tp(ktp))
            if point is not None:
                offsets[ktp] = OffsetAndMetadata(point.offset, "", point.leader_epoch)
        if offsets:  # `last`: nothing may raise into the client's loop
            kafka_call("the commit on revoke (the next owner replays)",
                       lambda: self.source.consumer.commit_async(offsets), loud=True, last=True)
        if revoked:
            log.info("partitions revoked: %s (owning %d)", ", ".join(sorted(str(_tp(k)) for k in revoked)),
                     len(self.source.tracker.owned()))
        metrics.PARTITIONS_ASSIGNED.set(len(self.source.tracker.owned()))

    def on_partitions_lost(self, lost: set[KafkaTP]) -> None:
        # Evicted: we may no longer commit for these; drop everything (kafka-python's default
        # would treat this as a revoke and try to commit).
        for ktp in lost:
            self.source.unblock(_tp(ktp))
            self.source.tracker.revoke(_tp(ktp))
        log.warning("partitions lost (evicted from the group): %s", ", ".join(sorted(str(_tp(k)) for k in lost)))
        metrics.PARTITIONS_ASSIGNED.set(len(self.source.tracker.owned()))


class KafkaSource:
    """Owns the KafkaConsumer. `poll_once()` is one turn of the consumer thread."""

    def __init__(
        self,
        settings: KafkaSettings,
        tracker: OffsetTracker,
        deliver: Callable[[list[Parsed]], None],
        max_in_flight: int,
        until_caught_up: bool = False,
        backoff: Backoff | None = None,
        hold: Callable[[], bool] = lambda: False,
        consumer: KafkaConsumer | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """`hold`: True while a pipeline stage retries a dependency (partitions stay paused).
        `consumer`, `clock` and `sleep` are for tests (a scripted consumer, a fake clock)."""
        self.settings = settings
        self.tracker = tracker
        self.deliver = deliver
        self.max_in_flight = max_in_flight
        self.until_caught_up = until_caught_up
        self.backoff = backoff or Backoff()
        self.clock = clock
        self.sleep = sleep
        self.consumer: KafkaConsumer = consumer if consumer is not None else make_consumer(settings)
        self.newly_assigned: set[TopicPartition] = set()
        # Partitions whose next batch cannot be decoded: paused apart from backpressure.
        self.blocked: dict[TopicPartition, Blocked] = {}
        self.caught_up = threading.Event()
        self.stopping = threading.Event()
        self.alive_monotonic = self.clock()
        self._catch_up = CatchUp()
        self._paused = False
        self._last_commit = 0.0
        self._last_catch_up_check = 0.0
        self._last_lag = 0.0
        self._commit_in_flight = False
        self.hold = hold

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        self.consumer.subscribe(topics=self.settings.topics, listener=_Listener(self))
        # Know the subscribed topics' partitions before the first join (the first poll). Otherwise
        # the leader assigns before the metadata arrived ("No partition metadata"), hands out
        # nothing, and the metadata then triggers a second rebalance; kafka-python 3.0.12 loses the
        # assignment of such a rebalance when it outlasts one poll() (the member then sits with no
        # partitions for good).
        for topic in self.settings.topics:  # if it fails, the group's rebalances will have to do
            ok, ids = kafka_call(f"metadata of topic {topic}", lambda: self.consumer.partitions_for_topic(topic),
                                 loud=True)
            if ok and not ids:
                # kafka-python's own "not found in cluster metadata" is held back as noise (a topic
                # being auto-created); a topic that is simply missing, or misspelt, is said once.
                log.warning("topic %s does not exist (yet): nothing to consume from it until it is created",
                            topic)
        if self.until_caught_up:
            ok, targets = kafka_call("reading the end offsets to catch up to", self._end_offsets, loud=True)
            if not ok:
                raise RetriableError("kafka", f"cannot read the end offsets of {', '.join(self.settings.topics)}")
            self._catch_up.targets = targets or {}
            log.info("catching up to end offsets of %d partition(s)", len(self._catch_up.targets))

    def _end_offsets(self) -> dict[TopicPartition, int]:
        partitions = []
        for topic in self.settings.topics:
            ids = self.consumer.partitions_for_topic(topic) or set()
            partitions += [KafkaTP(topic, p) for p in sorted(ids)]
        if not partitions:
            return {}
        # With read_committed these are last stable offsets: what a consumer can ever read now.
        ends = self.consumer.end_offsets(partitions)
        begins = self.consumer.beginning_offsets(partitions)
        targets = {_tp(k): v for k, v in ends.items()}
        # Empty partitions are caught up already.
        self._catch_up.reached |= {_tp(k) for k, v in ends.items() if v <= begins.get(k, 0)}
        return targets

    def poll_once(self) -> None:
        self.alive_monotonic = self.clock()
        self._seed_new_partitions()
        self._apply_backpressure()
        self._retry_blocked()
        try:
            with metrics.stage("poll"):
                ok, polled = kafka_call("poll", lambda: self.consumer.poll(timeout_ms=self.settings.poll_timeout_ms),
                                        loud=True)
        except UndecodableBatch as failure:
            self._block(failure)
            ok, polled = True, {}
        if not ok:
            self.sleep(0.5)
            return
        with metrics.stage("parse"):
            items = self._parse(polled or {})
        if items:
            metrics.RECORDS.consumed(len(items))
            self.deliver(items)
        with metrics.stage("commit"):
            self.maybe_commit()
            self._check_caught_up()
            self._report_lag()

    def _parse(self, batches: dict[KafkaTP, list[Any]]) -> list[Parsed]:
        """The polled records of partitions we own (this ownership), parsed, in order."""
        items: list[Parsed] = []
        for ktp, records in batches.items():
            tp = _tp(ktp)
            generation = self.tracker.generation(tp)
            if generation is None or tp in self.newly_assigned:
                continue  # not ours, or not yet positioned for this ownership (next loop)
            if records and tp in self.blocked:
                self._unblocked(tp)
            for r in records:
                position = Position(tp, r.offset, r.leader_epoch if r.leader_epoch is not None else -1,
                                    generation, r.timestamp)
                if not self.tracker.add(position):
                    break
                raw = RawRecord(position, r.key, r.value, tuple((k, v) for k, v in (r.headers or [])))
                items.append(parse_record(raw, self.settings))
        return items

    def _seed_new_partitions(self) -> None:
        # The group's committed offset of a newly owned partition counts as committed by us (for
        # catch-up); `position()` would not do: it moves as soon as records are fetched.
        #
        # And the fetch position goes back to it. A rebalance can hand a member partitions it
        # owned before; kafka-python then keeps their fetch positions, past the records that were
        # in flight at the revoke, which the tracker dropped (their generation may not commit).
        # Unpositioned, the new ownership would never see them again: its done-prefix could never
        # start, and no commit or catch-up would ever happen on that partition.
        for tp in list(self.newly_assigned):
            generation = self.tracker.generation(tp)
            if generation is None:
                self.newly_assigned.discard(tp)
                continue
            ok, committed = kafka_call(f"positioning {tp}", lambda: self._position(_ktp(tp)))
            if not ok:
                return
            self.newly_assigned.discard(tp)
            if committed is not None:
                self.tracker.committed(tp, CommitPoint(committed, -1), generation)

    def _position(self, ktp: KafkaTP) -> int | None:
        """Seek a newly owned partition to its committed offset (or the reset policy's end);
        returns the committed offset, if any."""
        committed = self.consumer.committed(ktp, timeout_ms=5_000)
        if committed is not None:
            self.consumer.seek(ktp, committed)
        elif self.settings.auto_offset_reset == "earliest":
            self.consumer.seek_to_beginning(ktp)
        else:
            self.consumer.seek_to_end(ktp)
        return committed

    def _follow_idle_positions(self) -> None:
        """Let the commit of a partition with nothing in flight follow the fetch position.

        The consumer steps over offsets it never hands out: transaction markers, and with
        read_committed the records of aborted transactions. A partition whose last records are
        such offsets would otherwise never commit up to its end: its lag would never reach 0 and
        `--until-caught-up` would never end. Everything before the position was delivered (and,
        with nothing in flight, done) or never deliverable, so committing it loses nothing."""
        for tp, generation in self.tracker.idle().items():
            if tp in self.newly_assigned:
                continue  # its position is not this ownership's yet
            ok, position = kafka_call(f"position of {tp}", lambda: self.consumer.position(_ktp(tp), timeout_ms=0))
            if not ok or position is None:
                continue
            self.tracker.follow(tp, position, generation)
            blocked = self.blocked.get(tp)
            if blocked is not None and position > blocked.offset:
                self._unblocked(tp)

    # -- batches that cannot be decoded ---------------------------------------------------------

    def _block(self, failure: UndecodableBatch) -> None:
        """Pause the partition of a batch that cannot be decoded and retry it with backoff: its
        records are never skipped, and the other partitions go on."""
        tp = _tp(failure.tp)
        if self.tracker.generation(tp) is None:
            return  # no longer ours
        prior = self.blocked.get(tp)
        attempts = prior.attempts + 1 if prior is not None and prior.offset == failure.offset else 1
        delay = self.backoff.delay_s(attempts - 1)
        name, text = type(failure.cause).__name__, str(failure.cause)
        error = text if text.startswith(name) else f"{name}: {text}"  # kafka-python's errors name themselves
        self.blocked[tp] = Blocked(failure.offset, failure.reason, error, attempts, self.clock() + delay)
        kafka_call(f"pausing {tp}", lambda: self.consumer.pause(failure.tp))  # fails only if revoked meanwhile
        metrics.UNDECODABLE_BATCHES.labels(failure.reason).inc()
        self._report_blocked()
        if attempts == 1:
            log.error("cannot decode the batch of %s at offset %d (%s); partition paused, other partitions "
                      "go on; retrying with backoff, nothing is skipped", tp, failure.offset, error)
        else:
            log.debug("batch of %s at offset %d still cannot be decoded (attempt %d); next retry in %.1fs",
                      tp, failure.offset, attempts, delay)

    def _retry_blocked(self) -> None:
        now = self.clock()
        for tp, blocked in list(self.blocked.items()):
            if now < blocked.retry_at or self._paused or self.stopping.is_set():
                continue
            blocked.retry_at = math.inf  # until the retry decodes, or fails again
            if not kafka_call(f"resuming {tp}", lambda: self.consumer.resume(_ktp(tp)))[0]:
                self.unblock(tp)

    def _unblocked(self, tp: TopicPartition) -> None:
        blocked = self.blocked.get(tp)
        if blocked is not None:
            log.info("%s decodes again (offset %d, after %d attempt(s))", tp, blocked.offset, blocked.attempts)
        self.unblock(tp)

    def unblock(self, tp: TopicPartition) -> None:
        """Forget a blocked partition (decoded at last, or no longer ours)."""
        if self.blocked.pop(tp, None) is not None:
            self._report_blocked()

    def _report_blocked(self) -> None:
        counts: dict[str, int] = {}
        for blocked in list(self.blocked.values()):
            counts[blocked.reason] = counts.get(blocked.reason, 0) + 1
        for reason in UNDECODABLE_REASONS:
            metrics.PARTITIONS_BLOCKED.labels(reason).set(counts.get(reason, 0))

    def blocked_reason(self) -> str | None:
        """Why some partition cannot progress, for /readyz; None when all can."""
        items = sorted(self.blocked.items(), key=lambda kv: str(kv[0]))
        if not items:
            return None
        tp, first = items[0]
        more = f" (and {len(items) - 1} more partition(s))" if len(items) > 1 else ""
        return f"{tp} at offset {first.offset} cannot be decoded ({first.reason}: {first.error}); retrying{more}"

    # -- backpressure ----------------------------------------------------------------------------

    def _apply_backpressure(self) -> None:
        in_flight = self.tracker.in_flight()
        assigned = self.consumer.assignment()
        held = self.hold()
        if not self._paused and (in_flight >= self.max_in_flight or held):
            self._paused = True
            log.debug("pausing %d partition(s): %d records in flight", len(assigned), in_flight)
        elif self._paused and not held and in_flight <= self.max_in_flight // 2:
            self._paused = False
            waiting = {_ktp(tp) for tp, b in self.blocked.items() if b.retry_at != math.inf}
            resumable = set(self.consumer.paused()) - waiting
            if resumable:  # fails only for a partition revoked meanwhile
                kafka_call("resuming after backpressure", lambda: self.consumer.resume(*resumable))
        if self._paused or self.stopping.is_set():
            # Re-applied every loop: a rebalance may have brought partitions that are not paused.
            not_paused = set(assigned) - set(self.consumer.paused())
            if not_paused:
                kafka_call("pausing for backpressure", lambda: self.consumer.pause(*not_paused))
        metrics.PARTITIONS_PAUSED.set(len(self.consumer.paused()))

    # -- commits ---------------------------------------------------------------------------------

    def maybe_commit(self, force: bool = False) -> None:
        now = self.clock()
        # An async commit's callback can be lost in a rebalance; never let one block commits for
        # longer than a request can take.
        if self._commit_in_flight and not force and now - self._last_commit < self.settings.request_timeout_ms / 1000.0:
            return
        if not force and now - self._last_commit < self.settings.commit_interval_ms / 1000.0:
            return
        self._follow_idle_positions()
        points = self.tracker.to_commit()
        if not points:
            return
        self._last_commit = now
        generations = {tp: self.tracker.generation(tp) for tp in points}
        offsets = {_ktp(tp): OffsetAndMetadata(p.offset, "", p.leader_epoch) for tp, p in points.items()}

        def on_done(_offsets: object, response: object) -> None:
            self._commit_in_flight = False
            if isinstance(response, Exception):
                metrics.COMMITS.labels("failed").inc()
                log.warning("offset commit failed (will retry): %s", response)
                return
            metrics.COMMITS.labels("ok").inc()
            for tp, point in points.items():
                self.tracker.committed(tp, point, generations[tp])

        if force:
            if kafka_call("the final commit (what it does not cover replays)",
                          lambda: self.consumer.commit(offsets, timeout_ms=5_000), loud=True)[0]:
                on_done(offsets, None)
            else:
                metrics.COMMITS.labels("failed").inc()
            return
        self._commit_in_flight = True
        if not kafka_call("commit", lambda: self.consumer.commit_async(offsets, callback=on_done), loud=True)[0]:
            self._commit_in_flight = False

    def _check_caught_up(self) -> None:
        if not self.until_caught_up or self.caught_up.is_set():
            return
        now = self.clock()
        for tp, target in self._catch_up.targets.items():
            if tp in self._catch_up.reached:
                continue
            point = self.tracker.last_committed(tp)
            if point is not None and point.offset >= target:
                self._catch_up.reached.add(tp)
        # Partitions owned by other members of the group: ask the broker now and then.
        if not self._catch_up.done() and now - self._last_catch_up_check > 2.0:
            self._last_catch_up_check = now
            owned = set(self.tracker.owned())
            for tp, target in self._catch_up.targets.items():
                if tp in self._catch_up.reached or tp in owned:
                    continue
                ok, committed = kafka_call(f"committed offset of {tp}",
                                           lambda: self.consumer.committed(_ktp(tp), timeout_ms=2_000))
                if ok and committed is not None and committed >= target:
                    self._catch_up.reached.add(tp)
        if self._catch_up.done() or (not self._catch_up.targets and self.tracker.in_flight() == 0):
            log.info("caught up with the end offsets seen at start")
            self.caught_up.set()

    def _report_lag(self) -> None:
        """End offset (the last stable offset with read_committed) minus committed, per owned
        partition, every few seconds."""
        now = self.clock()
        if now - self._last_lag < LAG_INTERVAL_S:
            return
        self._last_lag = now
        owned = self.tracker.owned()
        if not owned:
            return
        ok, ends = kafka_call("end offsets for the lag",
                              lambda: self.consumer.end_offsets([_ktp(tp) for tp in owned], timeout_ms=2_000))
        for ktp, end in (ends or {}).items():
            point = self.tracker.last_committed(_tp(ktp))
            if end is not None and point is not None:
                metrics.CONSUMER_LAG.labels(ktp.topic, str(ktp.partition)).set(max(0, end - point.offset))

    def abandon(self) -> None:
        """Leave without committing (a pipeline stage failed: what is not committed replays)."""
        kafka_call("leaving the group", lambda: self.consumer.close(autocommit=False, timeout_ms=2_000), loud=True,
                   last=True)

    def close(self) -> None:
        """Final commit of what is done, then leave the group."""
        self.maybe_commit(force=True)
        kafka_call("leaving the group", lambda: self.consumer.close(autocommit=False, timeout_ms=5_000), loud=True,
                   last=True)
