"""The processing stages, each on its own thread, joined by bounded queues:

    intake ─▶ [batcher] ─▶ prepared ─▶ [model] ─▶ embedded ─▶ [writer] ─▶ tracker.done

- batcher: collects a window (`batching.BatchWindow`) and plans its work (`batching.plan`),
  resolving skips, cached vectors and texts in flight (`dedupe`) in one Redis round trip;
- model: the forward pass; a batch that fails is bisected, one that runs out of memory split
  (`embedder.encode_all`, where the model's failures are translated);
- writer: `writer.Writer`, the order of effects (Milvus, dead letters, cache, offsets).

The next batch is prepared while the current one runs on the device. A retriable failure makes
its stage retry the same work with backoff (`retry.Retrier`); the queues fill, the consumer pauses
its partitions, and nothing new is committed until the work lands.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from ingestor import metrics
from ingestor.batching import BatchLimits, BatchWindow, Unit, Work, estimated_tokens, plan
from ingestor.cache import Cache
from ingestor.config import BatchSettings
from ingestor.chunking import Splitter, chunk_documents
from ingestor.dedupe import CachedVector, IdsInFlight, Identity, SharedTexts, unchanged
from ingestor.dlq import DeadLetterQueue
from ingestor.embedder import Embedder, encode_all
from ingestor.errors import Aborted
from ingestor.faults import crash_point, model_point, slow_point
from ingestor.offsets import OffsetTracker
from ingestor.records import Document, Parsed, fail
from ingestor.retry import Backoff, Retrier
from ingestor.sink import MilvusSink
from ingestor.writer import Latency, Writer

log = logging.getLogger(__name__)

_STOP = object()

__all__ = ["Latency", "Pipeline"]


class Pipeline:
    def __init__(
        self,
        settings: BatchSettings,
        tracker: OffsetTracker,
        embedder: Embedder,
        cache: Cache,
        sink: MilvusSink,
        dlq: DeadLetterQueue,
        backoff: Backoff,
        store_text: bool,
        record_latency: Callable[[list[Latency]], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        splitter: Splitter | None = None,
    ) -> None:
        """`clock` times the batching windows (a test's fake clock); durations for the metrics
        always use the real one. With a `splitter` every record is written as its chunks."""
        self.clock = clock
        settings = settings.for_device(getattr(embedder, "device", "cpu"))  # a no-op when resolved
        self.settings = settings
        self.tracker = tracker
        self.embedder = embedder
        self.cache = cache
        self.sink = sink
        self.dlq = dlq
        self.splitter = splitter
        self.identity = Identity(embedder.identity, store_text, splitter.layout if splitter else "")
        assert settings.max_batch_records and settings.max_batch_tokens and settings.pass_cost_tokens is not None
        self.limits = BatchLimits(settings.max_batch_records, settings.max_batch_tokens, settings.pass_cost_tokens)
        self.intake: queue.Queue[Any] = queue.Queue()
        self._prepared: queue.Queue[Any] = queue.Queue(maxsize=2)
        self._embedded: queue.Queue[Any] = queue.Queue(maxsize=2)
        self._flush = threading.Event()  # cut the window now (shutdown)
        self._abort = threading.Event()  # give up retries (shutdown bound reached)
        self.retrier = Retrier(backoff, self._abort)
        self.ids = IdsInFlight()
        self.shared = SharedTexts(settings.max_in_flight_records or 0)
        self.writer = Writer(sink, dlq, cache, tracker, self.retrier, self.ids, self.shared, self.identity,
                             record_latency)
        self._threads: list[threading.Thread] = []
        self.failure: BaseException | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        for name, target in (("batcher", self._batcher_loop), ("model", self._model_loop), ("writer", self._writer_loop)):
            thread = threading.Thread(target=self._guard(target), name=f"ingestor-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _guard(self, target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except Aborted:
                pass
            except BaseException as exc:  # a bug: stop the daemon; uncommitted work replays
                log.exception("pipeline stage %s failed", threading.current_thread().name)
                self.failure = exc
        return run

    def submit(self, items: list[Parsed]) -> None:
        """Called by the consumer thread; never blocks (the consumer bounds what is in flight)."""
        self.intake.put(items)

    def is_retrying(self) -> bool:
        return self.retrier.active()

    def flush(self) -> None:
        """Stop waiting for batches to fill: shutdown drains what was read."""
        self._flush.set()
        self.intake.put([])

    def abort(self) -> None:
        self._abort.set()
        self._flush.set()
        self.intake.put([])

    def stop(self, timeout_s: float = 5.0) -> None:
        self.intake.put(_STOP)
        for thread in self._threads:
            thread.join(timeout=timeout_s)

    def healthy(self) -> bool:
        return self.failure is None and all(t.is_alive() for t in self._threads)

    # -- stage 1: batcher ------------------------------------------------------------------------

    def _batcher_loop(self) -> None:
        window: BatchWindow[Parsed] = BatchWindow(self.limits, self.settings.max_wait_ms, self.settings.max_window_records)
        stopping = False
        while not stopping:
            deadline = window.deadline()
            timeout = None if deadline is None else max(0.0, deadline - self.clock())
            try:
                got = self.intake.get(timeout=timeout)
            except queue.Empty:
                got = []
            # Then whatever else is already waiting, until the window is full: under backlog
            # windows are as large as max_window_records allows (plus at most one delivery).
            while True:
                if got is _STOP:
                    stopping = True
                    break
                self._add_to_window(window, got)
                if window.full():
                    break
                try:
                    got = self.intake.get_nowait()
                except queue.Empty:
                    break
            now = self.clock()
            if window and (window.ready(now) and (window.full() or self.intake.empty()) or self._flush.is_set() or stopping):
                self._emit(window.take())
        self._prepared.put(_STOP)

    def _add_to_window(self, window: BatchWindow[Parsed], items: list[Parsed]) -> None:
        now = self.clock()
        for item in items:
            window.add(item, estimated_tokens(item), now)

    def _emit(self, items: list[Parsed]) -> None:
        started = time.perf_counter()
        live = [i for i in items if self._current(i)]
        if len(live) < len(items):
            metrics.RECORDS.settled("dropped", len(items) - len(live))
        for work in plan(live, self.limits, self._resolve, self._tokenize, self._split()):
            if work.claimed:
                work.features = self.embedder.collate([u.encoding for u in work.claimed])
            waited = time.perf_counter()
            self._put(self._prepared, work)
            started += time.perf_counter() - waited  # a full queue is the model's time, not ours
        metrics.PREPARE_SECONDS.observe(time.perf_counter() - started)

    def _split(self) -> Callable[[Document], list[Document]] | None:
        """How a record becomes the documents written for it: its chunks, or (None) itself."""
        return None if self.splitter is None else partial(chunk_documents, splitter=self.splitter)

    def _current(self, item: Parsed) -> bool:
        """Still ours? Superseded positions of other partitions count too (they need the write)."""
        return self.tracker.is_current(item.position)

    def _tokenize(self, units: list[Unit]) -> None:
        for unit, prepared in zip(units, self.embedder.prepare([u.text for u in units])):
            unit.tokens, unit.truncated, unit.encoding = prepared.tokens, prepared.truncated, prepared.encoding

    def _resolve(self, units: list[Unit], ready: Work) -> list[Unit]:
        """The pipeline's resolver (see `batching.plan`): skip unchanged records, share the passes of
        texts still in flight, and fill cached vectors, in one Redis round trip. Resolved units go
        into `ready`; returns the units still to embed (claimed, so that later windows share
        their passes).

        In-flight texts are looked up before Redis: their entries are released only after their
        vectors are in the cache, so a text missing from one is found in the other."""
        # Skips are per record (a chunked record's chunks are skipped together, on its marker).
        records = list({id(d.record): d.record for u in units for d in u.docs}.values())
        self.ids.add([r.id for r in records] + [d.id for d in ready.deletes])
        self.shared.share(units)
        skip: set[int] = set()
        vectors: list[CachedVector | None] = [None] * len(units)
        if self.cache.enabled and records:
            unshared = [i for i, u in enumerate(units) if u.shares is None]
            markers, found = self.cache.lookup([r.id for r in records], [units[i].text_sha256 for i in unshared])
            for i, vector in zip(unshared, found):
                vectors[i] = vector
            for record in records:
                self.identity.digest(record)
            skip = unchanged(records, markers, self.ids.busy(),
                             lambda ids: self.retrier.run("milvus", lambda: self.sink.content_hashes(ids)))
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
        self.shared.claim(todo)
        return todo

    def _put(self, q: queue.Queue[Any], item: Any) -> None:
        while True:
            try:
                q.put(item, timeout=0.2)
                return
            except queue.Full:
                if self._abort.is_set():
                    raise Aborted()

    # -- stage 2: model --------------------------------------------------------------------------

    def _model_loop(self) -> None:
        while True:
            work = self._prepared.get()
            if work is _STOP:
                self._embedded.put(_STOP)
                return
            self.embed(work)
            self._put(self._embedded, work)

    def embed(self, work: Work) -> None:
        """One work through the model (what the model thread does with each): vectors for its
        units, dead letters for the texts the model cannot encode."""
        if any(u.from_cache for u in work.units):
            metrics.RECORDS_CACHE_HIT.inc(sum(len(u.docs) for u in work.units if u.from_cache))
        late = self._take_shared(work)
        todo = [u for u in work.units if u.to_embed]
        if not todo and not late:
            return
        started = time.perf_counter()
        if todo:
            metrics.BATCH_RECORDS.observe(len(todo))
            metrics.BATCH_TOKENS.observe(work.padded_tokens)
            slow_point()
            features = work.features

            def forward() -> np.ndarray:
                model_point([u.text for u in todo])
                return self.embedder.forward(features)

            self._take_vectors(work, todo, forward if features is not None else None)
        self._take_vectors(work, late, None)
        work.features = None
        work.units = [u for u in work.units if u.vector is not None]
        metrics.EMBED_SECONDS.observe(time.perf_counter() - started)
        metrics.RECORDS_EMBEDDED.inc(len(todo) + len(late))
        metrics.RECORDS_TRUNCATED.inc(sum(len(u.docs) for u in todo + late if u.truncated))
        crash_point("after_embed")

    def _take_shared(self, work: Work) -> list[Unit]:
        """Units sharing an earlier pass take its vector; returns those whose pass failed, to be
        embedded here (tokenised now: the batcher skipped them)."""
        late: list[Unit] = []
        for unit in work.units:
            source = unit.shares
            if source is None or unit.vector is not None:
                continue
            unit.shares = None
            if source.vector is not None:
                unit.vector, unit.truncated = source.vector, source.truncated
            else:
                late.append(unit)
        if late:
            for unit, prepared in zip(late, self.embedder.prepare([u.text for u in late])):
                unit.tokens, unit.truncated = prepared.tokens, prepared.truncated
        return late

    def _take_vectors(self, work: Work, units: list[Unit], forward: Callable[[], np.ndarray] | None) -> None:
        """Vectors for `units` (see `embedder.encode_all`); the records of a text the model cannot
        encode become the work's dead letters."""
        if not units:
            return

        def encode(texts: list[str]) -> np.ndarray:
            model_point(texts)
            return self.embedder.encode(texts)

        encoded = encode_all([u.text for u in units], encode, forward)
        for unit, vector in zip(units, encoded.vectors):
            unit.vector = vector
        for i, error in encoded.errors.items():
            for doc in units[i].docs:
                work.rejected += fail(doc, error.reason, str(error))

    # -- stage 3: writer -------------------------------------------------------------------------

    def _writer_loop(self) -> None:
        while True:
            work = self._embedded.get()
            if work is _STOP:
                return
            self.writer.write(work)
