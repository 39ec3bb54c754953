"""The writer: the order of effects for one unit of work, always the same.

    1. deletes      the Redis marker first, then the entity: no marker outlives its entity
    2. upserts      Milvus; an entity it refuses is isolated (bisection) and dead-lettered alone
    3. dead letters acknowledged by the broker, or retried: only then is a bad record done
    4. cache        vectors and markers, only for what Milvus acknowledged
    5. offsets      every record of the work (and those it superseded) becomes done

A retriable failure at any step retries that step (nothing after it happens meanwhile); a crash
between steps replays the work, which the order makes harmless: Milvus is never behind a marker
or a commit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from ingestor import metrics
from ingestor.batching import Unit, Work
from ingestor.cache import Cache
from ingestor.dedupe import CachedVector, IdsInFlight, SharedTexts, digest
from ingestor.dlq import DeadLetterQueue
from ingestor.errors import DataError, Reason
from ingestor.faults import crash_point
from ingestor.isolate import run_isolating
from ingestor.offsets import OffsetTracker
from ingestor.records import Document, Parsed, Position, Rejected
from ingestor.retry import Retrier
from ingestor.sink import Entity, MilvusSink

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Latency:
    """Kafka record timestamp to acknowledged Milvus write, for the benchmark."""

    timestamp_ms: int
    written_ms: int


class Writer:
    def __init__(self, sink: MilvusSink, dlq: DeadLetterQueue, cache: Cache, tracker: OffsetTracker,
                 retrier: Retrier, ids: IdsInFlight, shared: SharedTexts, model_identity: str, store_text: bool,
                 record_latency: Callable[[list[Latency]], None] | None = None) -> None:
        self.sink = sink
        self.dlq = dlq
        self.cache = cache
        self.tracker = tracker
        self.retrier = retrier
        self.ids = ids
        self.shared = shared
        self.model_identity = model_identity
        self.store_text = store_text
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
            metrics.RECORDS.settled("upserted", len(written))
        crash_point("after_upsert")
        # 3. dead letters: only acknowledged ones become done.
        if work.rejected:
            self.retrier.run("dlq", lambda: self.dlq.send(work.rejected))
        # 4. cache, only for what Milvus acknowledged.
        if self.cache.enabled and written:
            written_ids = {e.id for e in written}
            vectors = {u.text_sha256: CachedVector(u.vector, u.truncated) for u in work.claimed
                       if u.vector is not None and any(d.id in written_ids for d in u.docs)}
            self.cache.store(vectors, {e.id: e.content_hash for e in written})
        self.shared.release(work.claimed)
        # 5. offsets.
        items = settled(work)
        metrics.RECORDS.settled("skipped", len(work.skipped))
        metrics.RECORDS.settled("superseded", sum(len(item.superseded) for item in items))
        self.tracker.done(positions(items))
        self.ids.remove(work.registered)
        self._observe_latency(work)

    def _entity(self, doc: Document, unit: Unit) -> Entity:
        p = doc.position
        assert unit.vector is not None
        return Entity(
            id=doc.id, vector=unit.vector, text=doc.text, metadata=doc.metadata,
            content_hash=digest(doc, self.model_identity, self.store_text),
            model=self.model_identity, truncated=unit.truncated,
            kafka_topic=p.tp.topic, kafka_partition=p.tp.partition, kafka_offset=p.offset,
        )

    @staticmethod
    def _refused(work: Work, record_id: str, error: str) -> None:
        """The document Milvus refused leaves its unit and becomes a dead letter: it settles once."""
        for unit in work.units:
            for doc in unit.docs:
                if doc.id == record_id:
                    work.rejected.append(Rejected(raw=doc.raw, reason=Reason.SINK_REJECTED.value, error=error,
                                                  superseded=list(doc.superseded)))
                    unit.docs = [d for d in unit.docs if d is not doc]
                    return
        raise KeyError(record_id)

    def _observe_latency(self, work: Work) -> None:
        now_ms = int(time.time() * 1000)
        stamps = [d.position.timestamp_ms for u in work.units for d in u.docs]
        for ts in stamps:
            if ts and ts > 0:
                metrics.TIME_TO_SEARCHABLE.observe(max(0.0, (now_ms - ts) / 1000.0))
        if self.record_latency is not None and stamps:
            self.record_latency([Latency(ts, now_ms) for ts in stamps])


def settled(work: Work) -> list[Parsed]:
    """Every record a work settles (each with the records it superseded)."""
    return [d for u in work.units for d in u.docs] + work.skipped + work.deletes + work.rejected


def positions(items: list[Parsed]) -> list[Position]:
    out: list[Position] = []
    for item in items:
        out.append(item.position)
        out.extend(item.superseded)
    return out
