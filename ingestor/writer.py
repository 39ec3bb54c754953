"""The writer: the order of effects for one unit of work, always the same.

    1. deletes      the Redis marker first, then the entity: no marker outlives its entity
    2. upserts      Milvus; an entity it refuses is isolated (bisection) and dead-lettered alone
    3. surplus      with chunking, for each record whose last chunk this work carries: its chunks
                    past its new count (an earlier, longer version's), deleted only now, after
                    the new ones landed, so the record never vanishes from search
    4. dead letters acknowledged by the broker, or retried: only then is a bad record done
    5. cache        vectors and markers, only for what Milvus acknowledged
    6. offsets      every record the work settles (and those it superseded) becomes done

A record's chunks may ride in several works (the batch cut is by tokens); the record settles, in
steps 3 to 6, with the work that carries the last of them.

A retriable failure at any step retries that step (nothing after it happens meanwhile); a crash
between steps replays the work, which the order makes harmless: Milvus is never behind a marker
or a commit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ingestor import metrics
from ingestor.batching import Unit, Work
from ingestor.cache import Cache
from ingestor.dedupe import CachedVector, IdsInFlight, Identity, SharedTexts
from ingestor.dlq import DeadLetterQueue
from ingestor.errors import DataError, Reason
from ingestor.faults import crash_point
from ingestor.isolate import run_isolating
from ingestor.offsets import OffsetTracker
from ingestor.records import Chunked, Document, Parsed, Position, Rejected, fail
from ingestor.retry import Retrier
from ingestor.sink import ChunkSpan, Entity, MilvusSink

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Latency:
    """Kafka record timestamp to acknowledged Milvus write, for the benchmark."""

    timestamp_ms: int
    written_ms: int


class Writer:
    def __init__(self, sink: MilvusSink, dlq: DeadLetterQueue, cache: Cache, tracker: OffsetTracker,
                 retrier: Retrier, ids: IdsInFlight, shared: SharedTexts, identity: Identity,
                 record_latency: Callable[[list[Latency]], None] | None = None) -> None:
        self.sink = sink
        self.dlq = dlq
        self.cache = cache
        self.tracker = tracker
        self.retrier = retrier
        self.ids = ids
        self.shared = shared
        self.identity = identity
        self.record_latency = record_latency

    def write(self, work: Work) -> None:
        entities = [self._entity(doc, unit) for unit in work.units for doc in unit.docs]
        # 1. deletes: the marker goes first, so no marker outlives its entity.
        if work.deletes:
            ids = [d.id for d in work.deletes]
            self.cache.forget(ids)
            self.retrier.run("milvus", lambda: self.sink.delete(ids))
            metrics.RECORDS.settled("deleted", len(ids))
        # 2. upserts, isolating any entity Milvus refuses.
        written: list[Entity] = []
        if entities:
            outcome = self.retrier.run("milvus", lambda: run_isolating(
                entities, self.sink.upsert, splittable=lambda exc: isinstance(exc, DataError)))
            written = [e for batch, _ in outcome.results for e in batch]
            for entity, exc in outcome.failures:
                log.warning("Milvus refused id %r; dead-lettering it: %s", entity.id, exc)
                self._refused(work, entity.id, str(exc))
            metrics.CHUNKS_UPSERTED.inc(sum(1 for e in written if e.chunk is not None))
        crash_point("after_upsert")
        # 3. records whose last chunk is here: their surplus chunks go, or they become dead letters.
        finished = last_chunks(work)
        whole = [p for p in finished if p.failure is None]
        if whole:
            counts = {p.record.id: p.count for p in whole}
            self.retrier.run("milvus", lambda: self.sink.delete_surplus(counts))
        work.rejected += [Rejected.of(p.record, *p.failure) for p in finished if p.failure is not None]
        metrics.RECORDS.settled("upserted", sum(1 for e in written if e.chunk is None) + len(whole))
        # 4. dead letters: only acknowledged ones become done.
        if work.rejected:
            self.retrier.run("dlq", lambda: self.dlq.send(work.rejected))
        # 5. cache, only for what Milvus acknowledged.
        if self.cache.enabled and (written or whole):
            written_ids = {e.id for e in written}
            vectors = {u.text_sha256: CachedVector(u.vector, u.truncated) for u in work.claimed
                       if u.vector is not None and any(d.id in written_ids for d in u.docs)}
            markers = {e.id: e.content_hash for e in written if e.chunk is None}
            markers.update((p.record.id, p.record.digest) for p in whole)
            self.cache.store(vectors, markers)
        self.shared.release(work.claimed)
        # 6. offsets.
        items = settled(work, whole)
        metrics.RECORDS.settled("skipped", len(work.skipped))
        metrics.RECORDS.settled("superseded", sum(len(item.superseded) for item in items))
        self.tracker.done(positions(items))
        self.ids.remove(work.registered + [p.record.id for p in finished])
        self._observe_latency(work)

    def _entity(self, doc: Document, unit: Unit) -> Entity:
        p = doc.position
        assert unit.vector is not None
        chunk = doc.chunk
        span = None if chunk is None else ChunkSpan(doc.record.id, chunk.index, chunk.progress.count,
                                                    chunk.char_start, chunk.char_end)
        return Entity(
            id=doc.id, vector=unit.vector, text=doc.text, metadata=doc.metadata,
            content_hash=self.identity.digest(doc.record), model=self.identity.model, truncated=unit.truncated,
            kafka_topic=p.tp.topic, kafka_partition=p.tp.partition, kafka_offset=p.offset, chunk=span,
        )

    @staticmethod
    def _refused(work: Work, entity_id: str, error: str) -> None:
        """The document Milvus refused leaves its unit and fails (a dead letter; for a chunk, its
        record's, once): it settles once."""
        for unit in work.units:
            for doc in unit.docs:
                if doc.id == entity_id:
                    work.rejected += fail(doc, Reason.SINK_REJECTED.value, error)
                    unit.docs = [d for d in unit.docs if d is not doc]
                    return
        raise KeyError(entity_id)

    def _observe_latency(self, work: Work) -> None:
        now_ms = int(time.time() * 1000)
        stamps = [d.position.timestamp_ms for u in work.units for d in u.docs if d.chunk is None or d.chunk.index == 0]
        for ts in stamps:
            if ts and ts > 0:
                metrics.TIME_TO_SEARCHABLE.observe(max(0.0, (now_ms - ts) / 1000.0))
        if self.record_latency is not None and stamps:
            self.record_latency([Latency(ts, now_ms) for ts in stamps])


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


def settled(work: Work, whole: Sequence[Chunked] = ()) -> list[Parsed]:
    """Every record a work settles (each with the records it superseded): its written records,
    the chunked records it completed, its skips, deletes and dead letters."""
    written = [d for u in work.units for d in u.docs if d.chunk is None]
    return written + [p.record for p in whole] + work.skipped + work.deletes + work.rejected


def positions(items: list[Parsed]) -> list[Position]:
    out: list[Position] = []
    for item in items:
        out.append(item.position)
        out.extend(item.superseded)
    return out
