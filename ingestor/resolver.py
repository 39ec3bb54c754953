"""The pipeline's resolver (a `batching.Resolver`): what a window needs no forward pass for, found
with one Redis round trip. Unchanged records are skipped, texts still in flight share their
earlier passes, cached vectors are filled in; the rules it applies are `dedupe`'s, the I/O is here.

With chunking it also reads, in one Milvus query, what Milvus holds of every record and delete of
the window (first chunk: content hash and chunk count): the skip rule's evidence and what the
writer must trim. Reads see every write before them without waiting for the server's clock where
`consistency.Consistency` says how.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ingestor import metrics
from ingestor.cache import Cache
from ingestor.consistency import Consistency
from ingestor.dedupe import CachedVector, Identity, unchanged
from ingestor.in_flight import InFlight
from ingestor.records import Delete, Document
from ingestor.retry import Retrier
from ingestor.sink import MilvusSink, Stored
from ingestor.work import Unit, Work


@dataclass(frozen=True, slots=True)
class Resolver:
    cache: Cache
    sink: MilvusSink
    retrier: Retrier  # Milvus reads, retried
    in_flight: InFlight  # shared with the writer, which settles what it wrote
    identity: Identity
    consistency: Consistency  # shared with the writer, which notes its writes

    def __call__(self, units: list[Unit], ready: Work) -> list[Unit]:
        with metrics.stage("resolve"):
            return self._resolve(units, ready)

    def _resolve(self, units: list[Unit], ready: Work) -> list[Unit]:
        """Resolved units go into `ready`; returns the units still to embed (claimed, so that later
        windows share their passes). The window's records and deletes count as in flight.

        In-flight texts are looked up before Redis: their entries are released only after their
        vectors are in the cache, so a text missing from one is found in the other."""
        # Skips are per record (a chunked record's chunks are skipped together, on its marker).
        records = list({id(d.record): d.record for u in units for d in u.docs}.values())
        self.in_flight.enter([r.id for r in records] + [d.id for d in ready.deletes], units)
        skip: set[int] = set()
        vectors: list[CachedVector | None] = [None] * len(units)
        generations = _generations(records, ready.deletes)
        held: Mapping[str, Stored] | None = None
        if self.sink.chunked and (records or ready.deletes):
            held = self._read([r.id for r in records] + [d.id for d in ready.deletes], generations)
            ready.stored = {i: s.chunks for i, s in held.items()}
        if self.cache.enabled and records:
            unshared = [i for i, u in enumerate(units) if u.shares is None]
            markers, found = self.cache.lookup([r.id for r in records], [units[i].text_sha256 for i in unshared])
            for i, vector in zip(unshared, found):
                vectors[i] = vector
            for record in records:
                self.identity.digest(record)

            def hashes(ids: list[str]) -> dict[str, str]:
                known = held if held is not None else self._read(ids, generations)
                return {i: known[i].content_hash for i in ids if i in known}

            skip = unchanged(records, markers, self.in_flight.busy_among, hashes)
        ready.skipped += [r for r in records if id(r) in skip]
        todo: list[Unit] = []
        for unit, cached in zip(units, vectors):
            unit.docs = [d for d in unit.docs if id(d.record) not in skip]
            if not unit.docs:
                continue
            if unit.shares is not None:
                ready.units.append(unit)  # its vector comes from the earlier unit, at the model stage
            elif cached is not None:
                unit.vector, unit.truncated, unit.from_cache = cached.vector, cached.truncated, True
                ready.units.append(unit)
            else:
                todo.append(unit)
        self.in_flight.claim(todo)
        return todo

    def _read(self, record_ids: list[str], generations: set[int]) -> dict[str, Stored]:
        """What Milvus holds of these records, read so that it sees every write before it: at an
        older write's timestamp where `consistency` allows, else Strong."""
        guarantee = self.consistency.guarantee(record_ids, generations, time.monotonic())
        return self.retrier.run("milvus", lambda: self.sink.stored(record_ids, guarantee=guarantee))


def _generations(records: Sequence[Document], deletes: Sequence[Delete]) -> set[int]:
    """The partition ownerships the window's records and deletes (and what they superseded) came
    from: a read must see what each partition's previous owner wrote."""
    return {p.generation for item in [*records, *deletes] for p in (item.position, *item.superseded)}
