"""Offset watermarks: which offsets may be committed. Pure logic, thread-safe.

Invariant: for each owned partition, the committable position is `last + 1` where `last` is the
highest offset such that it and every offset this consumer read before it (in that ownership)
are done — written to Milvus, skipped as unchanged, or acknowledged by the dead-letter topic.
Offsets finish out of order (length-sorted batches, bisection); the commit only ever moves over
a contiguous done prefix, so a crash can only replay, never skip.

Ownership is versioned: `assign` starts a new generation for a partition; `revoke` ends it.
`done` for an old generation is ignored, so work that was in flight when a partition left us is
never committed by us.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field

from ingestor.records import Position, TopicPartition


@dataclass(frozen=True, slots=True)
class CommitPoint:
    """What to commit for one partition: the next offset to read and the epoch of the last done."""

    offset: int
    leader_epoch: int


@dataclass(slots=True)
class _PartitionState:
    generation: int
    pending: deque[tuple[int, int]] = field(default_factory=deque)  # (offset, epoch), read order
    done: set[int] = field(default_factory=set)
    point: CommitPoint | None = None  # contiguous done prefix
    committed: CommitPoint | None = None  # last commit that Kafka acknowledged


class OffsetTracker:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._parts: dict[TopicPartition, _PartitionState] = {}
        self._next_generation = 1

    # -- ownership -------------------------------------------------------------------------------

    def assign(self, tp: TopicPartition) -> int:
        """Start a new ownership of `tp`; returns its generation."""
        with self._lock:
            generation = self._next_generation
            self._next_generation += 1
            self._parts[tp] = _PartitionState(generation=generation)
            return generation

    def revoke(self, tp: TopicPartition) -> CommitPoint | None:
        """End the ownership of `tp`. Returns the done position not yet committed, if any."""
        with self._lock:
            state = self._parts.pop(tp, None)
            if state is None or state.point is None or state.point == state.committed:
                return None
            return state.point

    def generation(self, tp: TopicPartition) -> int | None:
        with self._lock:
            state = self._parts.get(tp)
            return state.generation if state else None

    def is_current(self, position: Position) -> bool:
        """Whether the partition that `position` came from is still owned by the same generation."""
        with self._lock:
            state = self._parts.get(position.tp)
            return state is not None and state.generation == position.generation

    def latest_generation(self) -> int:
        """The newest ownership started so far (0 before the first)."""
        with self._lock:
            return self._next_generation - 1

    def owned(self) -> list[TopicPartition]:
        with self._lock:
            return list(self._parts)

    # -- progress --------------------------------------------------------------------------------

    def add(self, position: Position) -> bool:
        """Register a record that was read. Returns False for a stale generation."""
        with self._lock:
            state = self._parts.get(position.tp)
            if state is None or state.generation != position.generation:
                return False
            if state.pending and position.offset <= state.pending[-1][0]:
                raise ValueError(f"{position.tp}: offset {position.offset} read out of order")
            state.pending.append((position.offset, position.leader_epoch))
            return True

    def done(self, positions: list[Position]) -> None:
        """Mark records done; advances the contiguous prefix of each partition."""
        with self._lock:
            touched: set[TopicPartition] = set()
            for position in positions:
                state = self._parts.get(position.tp)
                if state is None or state.generation != position.generation:
                    continue
                state.done.add(position.offset)
                touched.add(position.tp)
            for tp in touched:
                self._advance(self._parts[tp])

    @staticmethod
    def _advance(state: _PartitionState) -> None:
        while state.pending and state.pending[0][0] in state.done:
            offset, epoch = state.pending.popleft()
            state.done.discard(offset)
            state.point = CommitPoint(offset=offset + 1, leader_epoch=epoch)

    def idle(self) -> dict[TopicPartition, int]:
        """Owned partitions with nothing in flight, with their generations."""
        with self._lock:
            return {tp: s.generation for tp, s in self._parts.items() if not s.pending}

    def follow(self, tp: TopicPartition, next_offset: int, generation: int) -> None:
        """The consumer's next offset for `tp` is `next_offset`, and nothing of `tp` is in flight:
        every offset before it was done or never delivered (transaction markers, records of
        aborted transactions), so the commit may move there. Ignored for an old generation, or
        while records of `tp` are in flight (they were read before that position)."""
        with self._lock:
            state = self._parts.get(tp)
            if state is None or state.generation != generation or state.pending:
                return
            current = max(
                (p for p in (state.point, state.committed) if p is not None), key=lambda p: p.offset, default=None
            )
            if current is None or next_offset > current.offset:
                epoch = current.leader_epoch if current is not None else -1
                state.point = CommitPoint(offset=next_offset, leader_epoch=epoch)

    def in_flight(self) -> int:
        """Records read and not yet done, over all owned partitions."""
        with self._lock:
            return sum(len(s.pending) for s in self._parts.values())

    # -- commits ---------------------------------------------------------------------------------

    def to_commit(self) -> dict[TopicPartition, CommitPoint]:
        """Positions that moved since the last acknowledged commit."""
        with self._lock:
            return {tp: s.point for tp, s in self._parts.items() if s.point is not None and s.point != s.committed}

    def committed(self, tp: TopicPartition, point: CommitPoint, generation: int | None = None) -> None:
        """Record that Kafka acknowledged a commit of `point` for `tp`."""
        with self._lock:
            state = self._parts.get(tp)
            if state is None or (generation is not None and state.generation != generation):
                return
            if state.committed is None or point.offset > state.committed.offset:
                state.committed = point

    def last_committed(self, tp: TopicPartition) -> CommitPoint | None:
        with self._lock:
            state = self._parts.get(tp)
            return state.committed if state else None
