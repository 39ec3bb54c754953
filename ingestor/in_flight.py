"""What is planned and not yet written, shared by the resolver (which enters a window's records and
claims its texts) and the writer (which settles them). Pure logic, thread-safe.

- **Records** by id. An id that an earlier, unwritten work carries is *busy*: Milvus does not hold
  yet what that work will write, so a later record of it may not be skipped as unchanged. With
  chunking, when an earlier work settles an id a later one still carries, it leaves how many
  chunks it stored (0 after a delete): the later work read Milvus before the earlier one wrote, so
  this, not its read, is what it must trim (`extent`).
- **Texts** being embedded, by text hash: a text that arrives while the same text is in flight (in
  an earlier window, not yet in the Redis cache) shares that forward pass instead of running its
  own. This works because the model stage takes work in order: by the time the later work reaches
  it, the earlier unit has its vector (or, if its pass failed, none: the later unit then embeds the
  text itself). An entry is released once its vector is written and cached (a chunk's, with its
  record's last chunk: `writer`), so a later window always finds a text in one place or the
  other. Not bounded on its own: an entry is a unit that an unwritten work holds anyway, and a
  record may have any number of chunks, so a cap in records would make long documents embed their
  chunks twice.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence

from ingestor.work import Unit


class InFlight:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids: dict[str, int] = {}  # record id -> planned works that carry it
        self._extents: dict[str, int] = {}
        self._texts: dict[str, Unit] = {}  # text hash -> the unit embedding it

    def __len__(self) -> int:
        """Texts in flight."""
        return len(self._texts)

    def enter(self, record_ids: Sequence[str], units: Iterable[Unit]) -> None:
        """A window's records (and deletes) are planned; its units whose text is in flight point at
        the unit embedding it (`unit.shares`)."""
        with self._lock:
            for i in record_ids:
                self._ids[i] = self._ids.get(i, 0) + 1
            for unit in units:
                unit.shares = self._texts.get(unit.text_sha256)

    def busy_among(self, ids: Iterable[str]) -> set[str]:
        """Those of `ids` that an earlier planned work carries as well."""
        with self._lock:
            return {i for i in ids if self._ids.get(i, 0) > 1}

    def claim(self, units: Iterable[Unit]) -> None:
        """These units are about to be embedded; later windows may share their passes."""
        with self._lock:
            for unit in units:
                self._texts.setdefault(unit.text_sha256, unit)

    def settle(
        self, record_ids: Sequence[str], units: Iterable[Unit], extents: Mapping[str, int] | None = None
    ) -> None:
        """A work was written (or abandoned): its records leave (`extents`: chunks it left stored,
        by record id, kept for a later work of the same id) and the texts it claimed are released."""
        with self._lock:
            for i in record_ids:
                n = self._ids.get(i, 0) - 1
                if n > 0:
                    self._ids[i] = n
                    if extents is not None and i in extents:
                        self._extents[i] = extents[i]
                else:
                    self._ids.pop(i, None)
                    self._extents.pop(i, None)
            for unit in units:
                if self._texts.get(unit.text_sha256) is unit:
                    del self._texts[unit.text_sha256]

    def extent(self, record_id: str) -> int | None:
        """Chunks an earlier, settled work left stored for a record still in flight; None when no
        earlier work of this process wrote it since this one was planned."""
        with self._lock:
            return self._extents.get(record_id)
