"""Turning a window of parsed records into embedding work. Pure logic.

Within one window:
- records of the same id collapse to the latest one read (the others' offsets ride along and are
  done when it is), so a length-sorted batch order can never write an older version last;
- identical texts become one `Unit`, embedded once however many records carry them;
- units are cut into batches by the token budget (`batcher.cut_batches`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ingestor.batcher import BatchLimits, cut_batches
from ingestor.records import Delete, Document, Parsed, Rejected


@dataclass(slots=True)
class Unit:
    """One distinct text of a batch and the documents that carry it."""

    text: str
    text_sha256: str
    docs: list[Document]
    tokens: int = 0  # after truncation; set by the tokenizer before the cut
    truncated: bool = False
    vector: np.ndarray | None = None
    from_cache: bool = False
    encoding: dict[str, list[int]] | None = None
    # The same text in earlier work that is still being embedded: its forward pass serves this one.
    shares: Unit | None = None

    @property
    def to_embed(self) -> bool:
        """Still needs a forward pass of its own."""
        return self.vector is None and self.shares is None


@dataclass(slots=True)
class Work:
    """What flows from the batcher through the model to the writer."""

    units: list[Unit] = field(default_factory=list)
    skipped: list[Document] = field(default_factory=list)
    deletes: list[Delete] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    features: dict[str, Any] | None = None  # padded tensors of the units to embed, in order
    registered: list[str] = field(default_factory=list)  # ids counted as in flight for this work
    claimed: list[Unit] = field(default_factory=list)  # units it embeds, which later work may share

    @property
    def padded_tokens(self) -> int:
        todo = [u.tokens for u in self.units if u.to_embed]
        return len(todo) * max(todo, default=0)

    def ids(self) -> list[str]:
        return [d.id for u in self.units for d in u.docs] + [d.id for d in self.skipped] + [d.id for d in self.deletes]


@dataclass(slots=True)
class Window:
    documents: list[Document]
    deletes: list[Delete]
    rejected: list[Rejected]


def collapse(items: list[Parsed]) -> Window:
    """Keep the latest record per id; earlier ones become `superseded` positions of it."""
    latest: dict[str, Document | Delete] = {}
    rejected: list[Rejected] = []
    for item in items:
        if isinstance(item, Rejected):
            rejected.append(item)
            continue
        previous = latest.pop(item.id, None)  # pop+insert keeps dict order = order of latest
        if previous is not None:
            item.superseded.extend(previous.superseded)
            item.superseded.append(previous.position)
            previous.superseded = []
        latest[item.id] = item
    docs = [i for i in latest.values() if isinstance(i, Document)]
    deletes = [i for i in latest.values() if isinstance(i, Delete)]
    return Window(docs, deletes, rejected)


def group_texts(docs: list[Document]) -> list[Unit]:
    """One unit per distinct text, in order of first appearance."""
    units: dict[str, Unit] = {}
    for doc in docs:
        unit = units.get(doc.text_sha256)
        if unit is None:
            unit = units[doc.text_sha256] = Unit(doc.text, doc.text_sha256, [])
        unit.docs.append(doc)
    return list(units.values())


def cut_work(todo: list[Unit], ready: Work, limits: BatchLimits) -> list[Work]:
    """Cut the units still to embed into batches; everything already resolved (cached vectors,
    skips, deletes, dead letters) rides with the first one, so no batch is cut half-empty."""
    works = [Work(units=b) for b in cut_batches(todo, lambda u: u.tokens, limits)]
    if not works:
        return [ready] if (ready.units or ready.skipped or ready.deletes or ready.rejected) else []
    first = works[0]
    first.units = ready.units + first.units
    first.skipped, first.deletes, first.rejected = ready.skipped, ready.deletes, ready.rejected
    return works



class SharedTexts:
    """Texts being embedded by work that is not written yet, by text hash: a text that arrives
    while the same text is in flight (in an earlier window, not yet in the Redis cache) shares that
    forward pass instead of running its own.

    This works because the model stage takes work in order: by the time the later work reaches it,
    the earlier unit has its vector (or, if its pass failed, none: the later unit then embeds the
    text itself). An entry is released when its work is written, after the cache write, so a later
    window always finds a text in one place or the other. Bounded: at most `capacity` texts (the
    pipeline holds no more records than that); beyond it a text is simply embedded again."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()
        self._units: dict[str, Unit] = {}

    def __len__(self) -> int:
        return len(self._units)

    def share(self, units: list[Unit]) -> None:
        """Point every unit whose text is in flight at the unit embedding it (`unit.shares`)."""
        with self._lock:
            for unit in units:
                unit.shares = self._units.get(unit.text_sha256)

    def claim(self, units: list[Unit]) -> None:
        """These units are about to be embedded; later windows may share their passes."""
        with self._lock:
            for unit in units:
                if len(self._units) >= self.capacity:
                    return
                self._units.setdefault(unit.text_sha256, unit)

    def release(self, units: list[Unit]) -> None:
        """Their work was written (or abandoned): forget the entries they own, and only those."""
        with self._lock:
            for unit in units:
                if self._units.get(unit.text_sha256) is unit:
                    del self._units[unit.text_sha256]
