"""The Kafka side: poll, decode, hand on, commit, pause/resume — on the consumer thread.

No embedding or writing ever runs on this thread, so no batch however slow keeps it from
polling: the member is never evicted for being busy. When the pipeline holds
`max_in_flight_records`, every partition is paused and polling goes on (heartbeats, rebalances)
until the pipeline drains to half of that.

Commits move only over the contiguous done prefix (`OffsetTracker`), as `last + 1` with the
record's leader epoch, only for partitions we still own. A partition whose next batch cannot be
decoded is `undecodable`'s to pause and retry; when `--until-caught-up` is done, `catch_up`'s.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kafka import KafkaConsumer, OffsetAndMetadata
from kafka import TopicPartition as KafkaTP
from kafka.consumer.subscription_state import ConsumerRebalanceListener

from ingestor import hooks, metrics, undecodable
from ingestor.catch_up import CatchUp
from ingestor.config import KafkaSettings
from ingestor.kafka_common import client_kwargs, kafka_call, kafka_errors
from ingestor.kafka_common import kafka_tp as _ktp
from ingestor.kafka_common import our_tp as _tp
from ingestor.offsets import CommitPoint, OffsetTracker
from ingestor.parsing import parse_record
from ingestor.records import Parsed, Position, RawRecord, TopicPartition
from ingestor.retry import Backoff
from ingestor.undecodable import Blocked, BlockedPartitions, UndecodableBatch

log = logging.getLogger(__name__)

LAG_INTERVAL_S = 5.0

_ASSIGNORS = {
    "range": "RangePartitionAssignor",
    "roundrobin": "RoundRobinPartitionAssignor",
    "cooperative-sticky": "CooperativeStickyAssignor",
}


def make_consumer(settings: KafkaSettings) -> KafkaConsumer:
    from kafka.coordinator import assignors

    assignor_name = _ASSIGNORS[settings.assignor]
    assignor = getattr(assignors, assignor_name, None)
    if assignor is None:  # older layouts keep each assignor in its own module
        from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
        from kafka.coordinator.assignors.range import RangePartitionAssignor
        from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor

        assignor = {
            "RangePartitionAssignor": RangePartitionAssignor,
            "RoundRobinPartitionAssignor": RoundRobinPartitionAssignor,
            "CooperativeStickyAssignor": CooperativeStickyAssignor,
        }[assignor_name]
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
    undecodable.install(consumer)
    return consumer


class _Listener(ConsumerRebalanceListener):
    """Runs on kafka-python's I/O loop, next to heartbeats: must return quickly."""

    def __init__(self, source: KafkaSource) -> None:
        self.source = source

    def on_partitions_assigned(self, assigned: set[KafkaTP]) -> None:
        for ktp in assigned:
            tp = _tp(ktp)
            self.source.tracker.assign(tp)
            self.source.newly_assigned.add(tp)
        log.info(
            "partitions assigned: %s (owning %d)",
            ", ".join(sorted(str(_tp(k)) for k in assigned)) or "none",
            len(self.source.tracker.owned()),
        )
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
            kafka_call(
                "the commit on revoke (the next owner replays)",
                lambda: self.source.consumer.commit_async(offsets),
                loud=True,
                last=True,
            )
        if revoked:
            log.info(
                "partitions revoked: %s (owning %d)",
                ", ".join(sorted(str(_tp(k)) for k in revoked)),
                len(self.source.tracker.owned()),
            )
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
        self.undecodable = BlockedPartitions(self.consumer, tracker, self.backoff, self.clock)
        self.caught_up = threading.Event()
        self.stopping = threading.Event()
        self.alive_monotonic = self.clock()
        self._catch_up = CatchUp(self.consumer, tracker, settings.topics)
        self._paused = False
        self._last_commit = 0.0
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
            ok, ids = kafka_call(
                f"metadata of topic {topic}", lambda: self.consumer.partitions_for_topic(topic), loud=True
            )
            if ok and not ids:
                # kafka-python's own "not found in cluster metadata" is held back as noise (a topic
                # being auto-created); a topic that is simply missing, or misspelt, is said once.
                log.warning("topic %s does not exist (yet): nothing to consume from it until it is created", topic)
        if self.until_caught_up:
            self._catch_up.start()

    @property
    def blocked(self) -> dict[TopicPartition, Blocked]:
        """The partitions whose next batch cannot be decoded (`undecodable.BlockedPartitions`)."""
        return self.undecodable.partitions

    def poll_once(self) -> None:
        self.alive_monotonic = self.clock()
        self._seed_new_partitions()
        self._apply_backpressure()
        self.undecodable.retry(self._paused, self.stopping.is_set())
        try:
            with metrics.stage("poll"):
                ok, polled = kafka_call(
                    "poll", lambda: self.consumer.poll(timeout_ms=self.settings.poll_timeout_ms), loud=True
                )
        except UndecodableBatch as failure:
            self.undecodable.block(failure)
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
                self.undecodable.decoded(tp)
            for r in records:
                position = Position(
                    tp, r.offset, r.leader_epoch if r.leader_epoch is not None else -1, generation, r.timestamp
                )
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
                self.undecodable.decoded(tp)

    def unblock(self, tp: TopicPartition) -> None:
        """Forget a blocked partition (no longer ours)."""
        self.undecodable.unblock(tp)

    def blocked_reason(self) -> str | None:
        """Why some partition cannot progress, for /readyz; None when all can."""
        return self.undecodable.reason()

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
            resumable = set(self.consumer.paused()) - self.undecodable.waiting()
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
            if kafka_call(
                "the final commit (what it does not cover replays)",
                lambda: self.consumer.commit(offsets, timeout_ms=5_000),
                loud=True,
            )[0]:
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
        if self._catch_up.check(self.clock()):
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
        ok, ends = kafka_call(
            "end offsets for the lag", lambda: self.consumer.end_offsets([_ktp(tp) for tp in owned], timeout_ms=2_000)
        )
        for ktp, end in (ends or {}).items():
            point = self.tracker.last_committed(_tp(ktp))
            if end is not None and point is not None:
                metrics.CONSUMER_LAG.labels(ktp.topic, str(ktp.partition)).set(max(0, end - point.offset))

    def abandon(self) -> None:
        """Leave without committing (a pipeline stage failed: what is not committed replays)."""
        kafka_call(
            "leaving the group", lambda: self.consumer.close(autocommit=False, timeout_ms=2_000), loud=True, last=True
        )

    def close(self) -> None:
        """Final commit of what is done, then leave the group."""
        self.maybe_commit(force=True)
        kafka_call(
            "leaving the group", lambda: self.consumer.close(autocommit=False, timeout_ms=5_000), loud=True, last=True
        )
