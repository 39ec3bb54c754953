"""How a read of Milvus sees every write the skip rule and the trims need, mostly without waiting
for the server's clock. Pure: time is passed in.

Milvus orders writes by timestamp; a read waits until the server has applied every write up to its
*guarantee* timestamp. A Strong read asks for "now", which costs the server's next time tick (about
200 ms on a Milvus server). The guarantee chosen here is older: the timestamp of this process's
newest write that was acknowledged at least `settle_s` ago, which a server that keeps up has
applied already, so the read returns at once. What such a read may miss, and what covers it:

- this process's writes since then: their record ids are kept here, and a window that holds one
  of them reads Strong;
- another process's writes since then: only a partition's previous owner writes its records, and
  it wrote them before the partition was assigned to us. So the guarantee's write must have been
  issued after the window's partitions were assigned (ownership generations, `OffsetTracker`);
  until such a write is old enough, windows of that partition read Strong.

A write's timestamp is the sink's `covering_timestamp`: a Milvus 2.3 server gives none for a delete
(nor does Milvus Lite for anything), so a write that ended with a delete is covered only once a
later write with a timestamp has settled; until then its ids stay among the recent ones.

A write in flight while a window is read (a later work of the same record) is not this module's:
`in_flight.InFlight` hands its result to the later work.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

# A server that keeps up applies a write by its next time tick (200 ms); only speed depends on it.
SETTLE_S = 0.25
# Record ids kept for writes no timestamp covers yet (a run of deletes): past this many, all of
# them are forgotten and every read is Strong until a write with a timestamp settles.
MAX_UNCOVERED_IDS = 100_000


@dataclass(frozen=True, slots=True)
class _Write:
    generation: int  # the newest partition ownership when the write was issued
    acknowledged_s: float
    timestamp: int  # covering every write of ours up to this one; 0: unknown
    ids: tuple[str, ...]


class Consistency:
    """This process's recent Milvus writes, and the guarantee a read of some records may name."""

    def __init__(self, settle_s: float = SETTLE_S) -> None:
        self.settle_s = settle_s
        self._lock = threading.Lock()
        self._base: _Write | None = None  # the newest write with a timestamp, settled
        self._since: deque[_Write] = deque()  # writes not settled yet, oldest first
        self._uncovered: list[_Write] = []  # settled writes with no timestamp, after the base
        self._recent: dict[str, int] = {}  # ids of the writes not covered by the base, with counts

    def wrote(self, generation: int, acknowledged_s: float, timestamp: int, ids: Iterable[str]) -> None:
        """A write issued while `generation` was the newest ownership was acknowledged at
        `acknowledged_s` (monotonic); `timestamp` covers it and every earlier write of ours (0:
        none does yet)."""
        write = _Write(generation, acknowledged_s, timestamp, tuple(ids))
        with self._lock:
            self._since.append(write)
            self._count(write, +1)

    def guarantee(self, ids: Iterable[str], generations: Iterable[int], now_s: float) -> int | None:
        """The timestamp a read of these records (of these ownerships) at `now_s` (monotonic) may
        name as its guarantee, or None: read Strong."""
        newest = max(generations, default=0)
        with self._lock:
            self._settle(now_s)
            base = self._base
            if base is None or base.generation < newest or any(i in self._recent for i in ids):
                return None
            return base.timestamp

    def _settle(self, now_s: float) -> None:
        """Writes acknowledged `settle_s` ago or more: one with a timestamp becomes the base and
        covers every write before it; ones without wait for the next."""
        while self._since and self._since[0].acknowledged_s <= now_s - self.settle_s:
            write = self._since.popleft()
            if write.timestamp <= 0:
                self._uncovered.append(write)
                continue
            for old in [*self._uncovered, write]:
                self._count(old, -1)
            self._uncovered.clear()
            self._base = write
        if sum(len(w.ids) for w in self._uncovered) > MAX_UNCOVERED_IDS:
            self._forget()

    def _forget(self) -> None:
        """Too many writes wait for a timestamp: keep none of them, and read Strong until one comes."""
        for old in self._uncovered:
            self._count(old, -1)
        self._uncovered.clear()
        self._base = None

    def _count(self, write: _Write, step: int) -> None:
        for i in write.ids:
            n = self._recent.get(i, 0) + step
            if n > 0:
                self._recent[i] = n
            else:
                self._recent.pop(i, None)
