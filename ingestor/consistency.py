"""How a read of Milvus sees everything the skip rule and the trims need without waiting for the
server's clock. Pure: time is passed in.

Milvus orders writes by timestamp; a read waits until the server has applied every write up to its
*guarantee* timestamp. A Strong read asks for "now", and a Session read for this client's last
write: each waits for the server's next time tick (about 200 ms on a Milvus server) when that
write was a large upsert. The guarantee chosen here is older: the timestamp of this process's
newest write that was acknowledged at least `settle_s` ago, which a server that keeps up has
applied already, so the read returns at once. What such a read may miss, and what covers it:

- this process's writes since then: their record ids are kept here, and a window that holds one
  of them reads at Session consistency (it may wait, and it sees them);
- another process's writes since then: only a partition's previous owner writes its records, and
  it wrote them before the partition was assigned to us. So the guarantee's write must have been
  issued after the window's partitions were assigned (ownership generations, `OffsetTracker`);
  where no write of ours is, the window first *anchors* the session with a write of its own (a
  delete of no entity, `MilvusSink.anchor`) and reads at Session consistency.

A write in flight while a window is read (a later work of the same record) is not this module's:
`dedupe.IdsInFlight` hands its result to the later work.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

SETTLE_S = 0.4  # a server that keeps up applies a write by its next time tick (200 ms); only speed depends on it


@dataclass(frozen=True, slots=True)
class Read:
    """How to read a window: `anchor` with a write first; then at the `guarantee` timestamp, or at
    Session consistency where it is None."""

    anchor: bool
    guarantee: int | None


@dataclass(frozen=True, slots=True)
class _Write:
    generation: int  # the newest partition ownership when the write was issued
    acknowledged_s: float
    timestamp: int  # Milvus's, of the write's last call (0 where Milvus gives none: Milvus Lite)
    ids: tuple[str, ...]


class Consistency:
    """This process's recent Milvus writes, and what a read of some records must wait for."""

    def __init__(self, settle_s: float = SETTLE_S) -> None:
        self.settle_s = settle_s
        self._lock = threading.Lock()
        self._base: _Write | None = None  # the newest write acknowledged `settle_s` ago or more
        self._since: deque[_Write] = deque()  # the writes after it, oldest first
        self._recent: dict[str, int] = {}  # their record ids, with how many of them wrote each
        self._covered = 0  # the newest generation assigned before a write we made was issued

    def wrote(self, generation: int, acknowledged_s: float, timestamp: int, ids: Iterable[str]) -> None:
        """A write issued while `generation` was the newest ownership was acknowledged at
        `acknowledged_s` (monotonic), at Milvus timestamp `timestamp`, for these record ids."""
        write = _Write(generation, acknowledged_s, timestamp, tuple(ids))
        with self._lock:
            self._since.append(write)
            for i in write.ids:
                self._recent[i] = self._recent.get(i, 0) + 1
            self._covered = max(self._covered, generation)

    def read(self, ids: Iterable[str], generations: Iterable[int], now_s: float) -> Read:
        """How to read these records (of these ownerships) at `now_s` (monotonic)."""
        newest = max(generations, default=0)
        with self._lock:
            self._settle(now_s)
            base = self._base
            if (base is not None and base.timestamp > 0 and base.generation >= newest
                    and not any(i in self._recent for i in ids)):
                return Read(anchor=False, guarantee=base.timestamp)
            return Read(anchor=newest > self._covered, guarantee=None)

    def _settle(self, now_s: float) -> None:
        """Writes acknowledged `settle_s` ago or more become the base, and leave the recent ones."""
        while self._since and self._since[0].acknowledged_s <= now_s - self.settle_s:
            write = self._since.popleft()
            for i in write.ids:
                left = self._recent.pop(i) - 1
                if left > 0:
                    self._recent[i] = left
            self._base = write
