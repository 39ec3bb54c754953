"""`--until-caught-up`: the end offsets seen at start, and when the group has committed at least
that far on every partition (ours from our own commits, the others' by asking the broker)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from kafka import TopicPartition as KafkaTP

from ingestor.errors import RetriableError
from ingestor.kafka_common import kafka_call, kafka_tp, our_tp
from ingestor.offsets import OffsetTracker
from ingestor.records import TopicPartition

log = logging.getLogger(__name__)

OTHERS_CHECK_INTERVAL_S = 2.0


class CatchUp:
    """End offsets seen at start; done once the group committed at least that far everywhere."""

    def __init__(self, consumer: Any, tracker: OffsetTracker, topics: Sequence[str]) -> None:
        self.consumer = consumer
        self.tracker = tracker
        self.topics = list(topics)
        self.targets: dict[TopicPartition, int] = {}
        self.reached: set[TopicPartition] = set()
        self._last_check = 0.0

    def start(self) -> None:
        """Read the end offsets to catch up to; RetriableError where they cannot be read (the daemon
        retries the source's start with backoff)."""
        ok, targets = kafka_call("reading the end offsets to catch up to", self._end_offsets, loud=True)
        if not ok:
            raise RetriableError("kafka", f"cannot read the end offsets of {', '.join(self.topics)}")
        self.targets = targets or {}
        log.info("catching up to end offsets of %d partition(s)", len(self.targets))

    def _end_offsets(self) -> dict[TopicPartition, int]:
        partitions = []
        for topic in self.topics:
            ids = self.consumer.partitions_for_topic(topic) or set()
            partitions += [KafkaTP(topic, p) for p in sorted(ids)]
        if not partitions:
            return {}
        # With read_committed these are last stable offsets: what a consumer can ever read now.
        ends = self.consumer.end_offsets(partitions)
        begins = self.consumer.beginning_offsets(partitions)
        targets = {our_tp(k): v for k, v in ends.items()}
        # Empty partitions are caught up already.
        self.reached |= {our_tp(k) for k, v in ends.items() if v <= begins.get(k, 0)}
        return targets

    def done(self) -> bool:
        return bool(self.targets) and self.reached >= set(self.targets)

    def check(self, now: float) -> bool:
        """Whether everything up to the targets is committed now (or, with no partitions at all,
        whether nothing is in flight)."""
        for tp, target in self.targets.items():
            if tp in self.reached:
                continue
            point = self.tracker.last_committed(tp)
            if point is not None and point.offset >= target:
                self.reached.add(tp)
        # Partitions owned by other members of the group: ask the broker now and then.
        if not self.done() and now - self._last_check > OTHERS_CHECK_INTERVAL_S:
            self._last_check = now
            owned = set(self.tracker.owned())
            for tp, target in self.targets.items():
                if tp in self.reached or tp in owned:
                    continue
                ok, committed = kafka_call(
                    f"committed offset of {tp}", lambda: self.consumer.committed(kafka_tp(tp), timeout_ms=2_000)
                )
                if ok and committed is not None and committed >= target:
                    self.reached.add(tp)
        return self.done() or (not self.targets and self.tracker.in_flight() == 0)
