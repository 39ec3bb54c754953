"""The writer: the order of effects for one unit of work, always the same.

    1. deletes      the Redis marker first, then the entities: no marker outlives its entity
    2. upserts      Milvus; an entity it refuses is isolated (bisection) and dead-lettered alone
    3. surplus      with chunking, a record that shrank: its chunks past its new count (an
                    earlier, longer version's), deleted only now, after the new ones landed, so
                    the record never vanishes from search
    4. dead letters acknowledged by the broker, or retried: only then is a bad record done
    5. cache        vectors and markers, only for what Milvus acknowledged
    6. offsets      every record the work settles (and those it superseded) becomes done

A record's chunks may ride in several works (the batch cut is by tokens); the work that carries
the last of them upserts all of them, in one list, and settles the record in steps 3 to 6.

Every Milvus write goes by primary key, never by another expression (a server first waits for its
next time tick, ~200 ms, to resolve one). That needs, for each record, its *stored count*: the
chunk count its first chunk holds, which is never below the index of any chunk of it stored. The
resolver reads it with the window; an earlier work of this process that wrote the record since is
asked instead (`InFlight.extent`). The order keeps the rule true whichever step a crash ends:
- a record that grows or keeps its size is upserted first chunk first, so its new count lands
  before (or with) any chunk past the old one;
- a record that shrinks has its first chunk held back: its other chunks, then its surplus deleted
  by key, then its first chunk, so the old, larger count stands until nothing lies past the new one;
- a delete removes every chunk below the stored count in one call.

A retriable failure at any step retries that step (nothing after it happens meanwhile); a crash
between steps replays the work, which the order makes harmless: Milvus is never behind a marker
or a commit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ingestor import hooks, metrics
from ingestor.cache import Cache
from ingestor.chunking import chunk_id
from ingestor.consistency import Consistency
from ingestor.dedupe import CachedVector, Identity
from ingestor.dlq import DeadLetterQueue
from ingestor.errors import DataError, Reason
from ingestor.in_flight import InFlight
from ingestor.isolate import run_isolating
from ingestor.observer import Latency, Observer
from ingestor.offsets import OffsetTracker
from ingestor.records import Chunked, Document, Parsed, Position, Rejected, fail
from ingestor.retry import Retrier
from ingestor.sink import ChunkSpan, Entity, MilvusSink
from ingestor.work import Unit, Work

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Row:
    """One entity to write, with the document it comes from."""

    doc: Document
    entity: Entity
    # The unit whose own pass gave its vector (None: from the cache or a shared pass): its vector
    # is cached once the row is written, and its text leaves `InFlight` only then.
    claimed: Unit | None


@dataclass(slots=True)
class _Record:
    """A chunked record whose last chunk is in this work: its chunks, in index order."""

    progress: Chunked
    rows: list[_Row]
    stored: int  # the stored count before this write

    @property
    def shrinks(self) -> bool:
        return self.stored > self.progress.count

    def first_rows(self) -> list[_Row]:
        """What the first upsert takes: all chunks, first chunk first; a shrinking record's first
        chunk waits for its surplus to go."""
        return self.rows[1:] if self.shrinks else self.rows


class Writer:
    def __init__(
        self,
        sink: MilvusSink,
        dlq: DeadLetterQueue,
        cache: Cache,
        tracker: OffsetTracker,
        retrier: Retrier,
        in_flight: InFlight,
        identity: Identity,
        consistency: Consistency | None = None,
        observer: Observer | None = None,
    ) -> None:
        self.sink = sink
        self.dlq = dlq
        self.cache = cache
        self.tracker = tracker
        self.retrier = retrier
        self.in_flight = in_flight
        self.identity = identity
        self.consistency = consistency or Consistency()
        self.observer = observer
        self._held: dict[int, list[_Row]] = {}  # chunks of records still in flight, by id(Chunked)
        self._unreleased: list[Unit] = []  # claimed units with a held row: still in `InFlight`

    def write(self, work: Work) -> None:
        generation = self.tracker.latest_generation()  # before any write is issued (`consistency`)
        wrote = False
        extents: dict[str, int] = {}  # with chunking: what each settled record leaves stored
        # 1. deletes: the marker goes first, so no marker outlives its entity.
        if work.deletes:
            ids = [d.id for d in work.deletes]
            self.cache.forget(ids)
            keys = ids if not self.sink.chunked else self._delete_keys(ids, work.stored)
            if keys:
                self.retrier.run("milvus", lambda: self.sink.delete(keys))
                wrote = True
            extents.update(dict.fromkeys(ids, 0))
            metrics.RECORDS.settled("deleted", len(ids))
        # 2. upserts, isolating any entity Milvus refuses.
        plain = self._rows(work)
        finished = last_chunks(work)
        records = self._complete(finished, work.stored)
        refused: set[int] = set()
        written = self._upsert(work, plain + [row for r in records for row in r.first_rows()], refused)
        if written:
            hooks.current.point("after_upsert")
        # 3. surplus: a shrunk record's chunks past its new count go, then its first chunk lands.
        shrunk = [r for r in records if r.shrinks and r.progress.failure is None]
        if shrunk:
            keys = [chunk_id(r.progress.record.id, i) for r in shrunk for i in range(r.progress.count, r.stored)]
            self.retrier.run("milvus", lambda: self.sink.delete(keys))
            written += self._upsert(work, [r.rows[0] for r in shrunk], refused)
        landed = {id(row) for row in written}
        self._trim_refused_growth(records, landed)
        wrote = wrote or bool(written) or bool(shrunk)
        for r in records:
            extents[r.progress.record.id] = r.progress.count if id(r.rows[0]) in landed else r.stored
        whole = [r for r in records if r.progress.failure is None]
        work.rejected += [Rejected.of(p.record, *p.failure) for p in finished if p.failure is not None]
        done_plain = [row.doc for row in plain if id(row) not in refused]
        metrics.RECORDS.settled("upserted", len(done_plain) + len(whole))
        metrics.CHUNKS_UPSERTED.inc(sum(1 for row in written if row.doc.chunk is not None))
        # 4. dead letters: only acknowledged ones become done.
        if work.rejected:
            self.retrier.run("dlq", lambda: self.dlq.send(work.rejected))
        # 5. cache, only for what Milvus acknowledged.
        if self.cache.enabled and written:
            vectors = {
                row.doc.text_sha256: CachedVector(np.asarray(row.entity.vector), row.entity.truncated)
                for row in written
                if row.claimed is not None
            }
            markers = {row.doc.id: row.entity.content_hash for row in plain if id(row) not in refused}
            markers.update((r.progress.record.id, r.progress.record.digest) for r in whole)
            with metrics.stage("cache"):
                self.cache.store(vectors, markers)
        if wrote:
            ids = [*extents, *(row.doc.id for row in plain)]
            self.consistency.wrote(generation, time.monotonic(), self.sink.covering_timestamp(), ids)
        # 6. offsets.
        items: list[Parsed] = [
            *done_plain,
            *(r.progress.record for r in whole),
            *work.skipped,
            *work.deletes,
            *work.rejected,
        ]
        metrics.RECORDS.settled("skipped", len(work.skipped))
        metrics.RECORDS.settled("dropped", work.dropped)
        metrics.RECORDS.settled("superseded", sum(len(item.superseded) for item in items))
        self.tracker.done(positions(items))
        self.in_flight.settle(work.registered + [p.record.id for p in finished], self._released(work), extents)
        self._observe_latency(work)

    # -- the rows of a work ----------------------------------------------------------------------

    def _rows(self, work: Work) -> list[_Row]:
        """The work's rows of whole records; chunks are held with their records' earlier ones."""
        claimed = {id(u) for u in work.claimed}
        plain: list[_Row] = []
        for unit in work.units:
            for doc in unit.docs:
                row = _Row(doc, self._entity(doc, unit), unit if id(unit) in claimed else None)
                if doc.chunk is None:
                    plain.append(row)
                else:
                    self._held.setdefault(id(doc.chunk.progress), []).append(row)
        return plain

    def _released(self, work: Work) -> list[Unit]:
        """The claimed units whose texts may leave `InFlight`: those with no row still held. A held
        chunk's vector reaches the cache only with its record's last chunk; released before, its
        text would be in neither place, and a later window would embed it again."""
        held = {id(row.claimed) for rows in self._held.values() for row in rows if row.claimed is not None}
        candidates = [*work.claimed, *self._unreleased]
        self._unreleased = [u for u in candidates if id(u) in held]
        return [u for u in candidates if id(u) not in held]

    def _complete(self, finished: list[Chunked], read: Mapping[str, int]) -> list[_Record]:
        """Of the records whose last chunk is in this work, those with no failed chunk, with all
        their chunks; a record with a failed chunk writes none (it becomes one dead letter)."""
        out = []
        for progress in finished:
            rows = sorted(self._held.pop(id(progress), []), key=_chunk_index)
            if progress.failure is None:
                assert len(rows) == progress.count, "a record without a failed chunk has all of them"
                out.append(_Record(progress, rows, self._stored(progress.record.id, read)))
        return out

    def _stored(self, record_id: str, read: Mapping[str, int]) -> int:
        """A record's stored count now: what an earlier work of ours left, else the window's read."""
        extent = self.in_flight.extent(record_id)
        return extent if extent is not None else read.get(record_id, 0)

    def _delete_keys(self, record_ids: list[str], read: Mapping[str, int]) -> list[str]:
        """Every chunk of these records below their stored counts, first chunks last."""
        counts = {i: self._stored(i, read) for i in record_ids}
        rest = [chunk_id(i, k) for i, n in counts.items() for k in range(1, n)]
        return rest + [chunk_id(i, 0) for i, n in counts.items() if n > 0]

    def _upsert(self, work: Work, rows: list[_Row], refused: set[int]) -> list[_Row]:
        """Upsert `rows`; an entity Milvus refuses fails its document (`refused`). The rows written."""
        if not rows:
            return []
        by_entity = {id(row.entity): row for row in rows}
        outcome = self.retrier.run(
            "milvus",
            lambda: run_isolating(
                [row.entity for row in rows], self.sink.upsert, splittable=lambda exc: isinstance(exc, DataError)
            ),
        )
        for entity, exc in outcome.failures:
            row = by_entity[id(entity)]
            log.warning("Milvus refused id %r; dead-lettering it: %s", entity.id, exc)
            refused.add(id(row))
            work.rejected += fail(row.doc, Reason.SINK_REJECTED.value, str(exc))
        return [by_entity[id(e)] for batch, _ in outcome.results for e in batch]

    def _trim_refused_growth(self, records: list[_Record], landed: set[int]) -> None:
        """A growing record whose first chunk Milvus refused may have had later chunks written past
        its stored count: delete those, so the rule holds (the record is a dead letter now)."""
        keys = [
            chunk_id(r.progress.record.id, i)
            for r in records
            if not r.shrinks and id(r.rows[0]) not in landed
            for i in range(max(1, r.stored), r.progress.count)
        ]
        if keys:
            self.retrier.run("milvus", lambda: self.sink.delete(keys))

    def _entity(self, doc: Document, unit: Unit) -> Entity:
        p = doc.position
        assert unit.vector is not None
        chunk = doc.chunk
        span = (
            None
            if chunk is None
            else ChunkSpan(doc.record.id, chunk.index, chunk.progress.count, chunk.char_start, chunk.char_end)
        )
        return Entity(
            id=doc.id,
            vector=unit.vector,
            text=doc.text,
            metadata=doc.metadata,
            content_hash=self.identity.digest(doc.record),
            model=self.identity.model,
            truncated=unit.truncated,
            kafka_topic=p.tp.topic,
            kafka_partition=p.tp.partition,
            kafka_offset=p.offset,
            chunk=span,
            metadata_json=doc.metadata_json,
        )

    def _observe_latency(self, work: Work) -> None:
        now_ms = int(time.time() * 1000)
        stamps = [d.position.timestamp_ms for u in work.units for d in u.docs if d.chunk is None or d.chunk.index == 0]
        for ts in stamps:
            if ts and ts > 0:
                metrics.TIME_TO_SEARCHABLE.observe(max(0.0, (now_ms - ts) / 1000.0))
        if self.observer is not None and stamps:
            self.observer.written([Latency(ts, now_ms) for ts in stamps])


def last_chunks(work: Work) -> list[Chunked]:
    """The chunked records whose last unsettled chunk is in this work (each chunk counts once, in
    the work it was planned into, whether it was written or failed)."""
    finished = []
    for doc in work.chunks:
        assert doc.chunk is not None
        progress = doc.chunk.progress
        progress.left -= 1
        if progress.left == 0:
            finished.append(progress)
    return finished


def _chunk_index(row: _Row) -> int:
    assert row.doc.chunk is not None
    return row.doc.chunk.index


def positions(items: list[Parsed]) -> list[Position]:
    out: list[Position] = []
    for item in items:
        out.append(item.position)
        out.extend(item.superseded)
    return out
