"""The Kafka side: one thread that only does Kafka — poll, decode, hand on, commit, pause/resume.

No embedding or writing ever runs on this thread, so no batch however slow keeps it from
polling: the member is never evicted for being busy. When the pipeline holds
`max_in_flight_records`, every partition is paused and polling goes on (heartbeats, rebalances)
until the pipeline drains to half of that.

Commits move only over the contiguous done prefix (`OffsetTracker`), as `last + 1` with the
record's leader epoch, only for partitions we still own.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from kafka import KafkaConsumer, OffsetAndMetadata
from kafka import TopicPartition as KafkaTP
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import KafkaError

from ingestor import metrics
from ingestor.config import KafkaSettings
from ingestor.errors import RetriableError
from ingestor.kafka_common import client_kwargs
from ingestor.offsets import CommitPoint, OffsetTracker
from ingestor.parsing import ParseOptions, parse_record
from ingestor.records import Parsed, Position, RawRecord, TopicPartition

log = logging.getLogger(__name__)

_ASSIGNORS = {
    "range": "RangePartitionAssignor",
    "roundrobin": "RoundRobinPartitionAssignor",
    "cooperative-sticky": "CooperativeStickyAssignor",
}


def _ktp(tp: TopicPartition) -> KafkaTP:
    return KafkaTP(tp.topic, tp.partition)


def _tp(ktp: KafkaTP) -> TopicPartition:
    return TopicPartition(ktp.topic, ktp.partition)


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
    try:
        return KafkaConsumer(
            **kwargs,
            group_id=settings.group_id,
            enable_auto_commit=False,
            auto_offset_reset=settings.auto_offset_reset,
            max_poll_records=settings.max_poll_records,
            max_poll_interval_ms=settings.max_poll_interval_ms,
            session_timeout_ms=settings.session_timeout_ms,
            heartbeat_interval_ms=settings.heartbeat_interval_ms,
            partition_assignment_strategy=[assignor],
            # No deserializers: a raising deserializer wedges the consumer on that record.
        )
    except KafkaError as exc:
        raise RetriableError("kafka", f"cannot reach {settings.bootstrap_servers}: {exc}") from exc


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
            point = self.source.tracker.revoke(_tp(ktp))
            if point is not None:
                offsets[ktp] = OffsetAndMetadata(point.offset, "", point.leader_epoch)
        if offsets:
            try:
                self.source.consumer.commit_async(offsets)
            except Exception as exc:  # never raise into the client's loop
                log.warning("commit on revoke failed (the next owner replays): %s", exc)
        if revoked:
            log.info("partitions revoked: %s (owning %d)", ", ".join(sorted(str(_tp(k)) for k in revoked)),
                     len(self.source.tracker.owned()))
        metrics.PARTITIONS_ASSIGNED.set(len(self.source.tracker.owned()))

    def on_partitions_lost(self, lost: set[KafkaTP]) -> None:
        # Evicted: we may no longer commit for these; drop everything (kafka-python's default
        # would treat this as a revoke and try to commit).
        for ktp in lost:
            self.source.tracker.revoke(_tp(ktp))
        log.warning("partitions lost (evicted from the group): %s", ", ".join(sorted(str(_tp(k)) for k in lost)))
        metrics.PARTITIONS_ASSIGNED.set(len(self.source.tracker.owned()))


class KafkaSource:
    """Owns the KafkaConsumer. `run()` is the body of the consumer thread."""

    def __init__(
        self,
        settings: KafkaSettings,
        tracker: OffsetTracker,
        deliver: Callable[[list[Parsed]], None],
        max_in_flight: int,
        parse_options: ParseOptions,
        until_caught_up: bool = False,
    ) -> None:
        self.settings = settings
        self.tracker = tracker
        self.deliver = deliver
        self.max_in_flight = max_in_flight
        self.parse_options = parse_options
        self.until_caught_up = until_caught_up
        self.consumer: KafkaConsumer = make_consumer(settings)
        self.newly_assigned: set[TopicPartition] = set()
        self.caught_up = threading.Event()
        self.stopping = threading.Event()
        self.alive_monotonic = time.monotonic()
        self._catch_up = CatchUp()
        self._paused = False
        self._last_commit = 0.0
        self._last_catch_up_check = 0.0
        self._last_lag = 0.0
        self._commit_in_flight = False
        # Set by the daemon: True while a pipeline stage is retrying a dependency.
        self.hold: Callable[[], bool] = lambda: False

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        self.consumer.subscribe(topics=self.settings.topics, listener=_Listener(self))
        # Know the subscribed topics' partitions before the first join (the first poll). Otherwise
        # the leader assigns before the metadata arrived ("No partition metadata"), hands out
        # nothing, and the metadata then triggers a second rebalance; kafka-python 3.0.12 loses the
        # assignment of such a rebalance when it outlasts one poll() (the member then sits with no
        # partitions for good).
        for topic in self.settings.topics:
            try:
                self.consumer.partitions_for_topic(topic)
            except KafkaError as exc:  # then the group's rebalances will have to do
                log.warning("no metadata for topic %s yet: %s", topic, exc)
        if self.until_caught_up:
            self._catch_up.targets = self._end_offsets()
            log.info("catching up to end offsets of %d partition(s)", len(self._catch_up.targets))

    def _end_offsets(self) -> dict[TopicPartition, int]:
        partitions = []
        for topic in self.settings.topics:
            ids = self.consumer.partitions_for_topic(topic) or set()
            partitions += [KafkaTP(topic, p) for p in sorted(ids)]
        if not partitions:
            return {}
        ends = self.consumer.end_offsets(partitions)
        begins = self.consumer.beginning_offsets(partitions)
        targets = {_tp(k): v for k, v in ends.items()}
        # Empty partitions are caught up already.
        self._catch_up.reached |= {_tp(k) for k, v in ends.items() if v <= begins.get(k, 0)}
        return targets

    def run(self) -> None:
        """Poll until `stopping` is set. Exceptions propagate to the daemon."""
        while not self.stopping.is_set():
            self.poll_once()

    def poll_once(self) -> None:
        self.alive_monotonic = time.monotonic()
        self._seed_new_partitions()
        self._apply_backpressure()
        try:
            batches = self.consumer.poll(timeout_ms=self.settings.poll_timeout_ms)
        except KafkaError as exc:
            metrics.DEPENDENCY_ERRORS.labels("kafka", type(exc).__name__).inc()
            log.warning("poll failed (%s); retrying", exc)
            time.sleep(0.5)
            return
        items: list[Parsed] = []
        for ktp, records in batches.items():
            tp = _tp(ktp)
            generation = self.tracker.generation(tp)
            if generation is None or tp in self.newly_assigned:
                continue  # not ours, or not yet positioned for this ownership (next loop)
            for r in records:
                position = Position(tp, r.offset, r.leader_epoch if r.leader_epoch is not None else -1,
                                    generation, r.timestamp)
                if not self.tracker.add(position):
                    break
                raw = RawRecord(position, r.key, r.value, tuple((k, v) for k, v in (r.headers or [])))
                items.append(parse_record(raw, self.parse_options))
        if items:
            metrics.RECORDS_CONSUMED.inc(len(items))
            self.deliver(items)
        self.maybe_commit()
        self._check_caught_up()
        self._report_lag()

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
            ktp = _ktp(tp)
            try:
                committed = self.consumer.committed(ktp, timeout_ms=5_000)
                if committed is not None:
                    self.consumer.seek(ktp, committed)
                elif self.settings.auto_offset_reset == "earliest":
                    self.consumer.seek_to_beginning(ktp)
                else:
                    self.consumer.seek_to_end(ktp)
            except (KafkaError, AssertionError, ValueError) as exc:  # AssertionError: no longer assigned
                log.debug("could not position %s yet: %s", tp, exc)
                return
            self.newly_assigned.discard(tp)
            if committed is not None:
                self.tracker.committed(tp, CommitPoint(committed, -1), generation)

    def _apply_backpressure(self) -> None:
        in_flight = self.tracker.in_flight()
        metrics.RECORDS_IN_FLIGHT.set(in_flight)
        assigned = self.consumer.assignment()
        held = self.hold()
        if not self._paused and (in_flight >= self.max_in_flight or held):
            self._paused = True
            log.debug("pausing %d partition(s): %d records in flight", len(assigned), in_flight)
        elif self._paused and not held and in_flight <= self.max_in_flight // 2:
            self._paused = False
            self.consumer.resume(*self.consumer.paused())
        if self._paused or self.stopping.is_set():
            # Re-applied every loop: a rebalance may have brought partitions that are not paused.
            not_paused = set(assigned) - set(self.consumer.paused())
            if not_paused:
                self.consumer.pause(*not_paused)
        metrics.PARTITIONS_PAUSED.set(len(self.consumer.paused()))

    # -- commits ---------------------------------------------------------------------------------

    def maybe_commit(self, force: bool = False) -> None:
        now = time.monotonic()
        # An async commit's callback can be lost in a rebalance; never let one block commits for
        # longer than a request can take.
        if self._commit_in_flight and not force and now - self._last_commit < self.settings.request_timeout_ms / 1000.0:
            return
        if not force and now - self._last_commit < self.settings.commit_interval_ms / 1000.0:
            return
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
            try:
                self.consumer.commit(offsets, timeout_ms=5_000)
            except (KafkaError, Exception) as exc:
                metrics.COMMITS.labels("failed").inc()
                log.warning("final offset commit failed (uncommitted records will replay): %s", exc)
                return
            on_done(offsets, None)
            return
        self._commit_in_flight = True
        try:
            self.consumer.commit_async(offsets, callback=on_done)
        except KafkaError as exc:
            self._commit_in_flight = False
            log.warning("offset commit failed (will retry): %s", exc)

    def _check_caught_up(self) -> None:
        if not self.until_caught_up or self.caught_up.is_set():
            return
        now = time.monotonic()
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
                try:
                    committed = self.consumer.committed(_ktp(tp), timeout_ms=2_000)
                except KafkaError:
                    continue
                if committed is not None and committed >= target:
                    self._catch_up.reached.add(tp)
        if self._catch_up.done() or (not self._catch_up.targets and self.tracker.in_flight() == 0):
            log.info("caught up with the end offsets seen at start")
            self.caught_up.set()

    def _report_lag(self) -> None:
        now = time.monotonic()
        if now - self._last_lag < 5.0:
            return
        self._last_lag = now
        for tp in self.tracker.owned():
            high = self.consumer.highwater(_ktp(tp))
            point = self.tracker.last_committed(tp)
            if high is not None and point is not None:
                metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(max(0, high - point.offset))

    def pause_all(self) -> None:
        assigned = self.consumer.assignment()
        if assigned:
            self.consumer.pause(*assigned)

    def close(self) -> None:
        """Final commit of what is done, then leave the group."""
        self.maybe_commit(force=True)
        try:
            self.consumer.close(autocommit=False, timeout_ms=5_000)
        except Exception as exc:
            log.warning("consumer close: %s", exc)
