"""The pipeline's threads and the bounded queues between them; windows are timed by an injected clock.

    intake ─▶ [chunker] ─▶ chunked ─▶ [batcher] ─▶ prepared ─▶ [model] ─▶ embedded ─▶ [writer] ─▶ tracker.done

- chunker (with chunking): cuts each record into its chunks and tokenises them as they arrive
  (`chunking.attach_chunks`); most of that runs in the tokenizer without the GIL, beside the
  other stages' Python;
- batcher: collects a window (`batching.BatchWindow`) and plans its work (`batching.plan`) with
  the resolver (`resolver.Resolver`: skips, cached vectors, texts in flight, one Redis round
  trip), then tokenises and collates what the model runs (`model_stage.ModelStage`);
- model: `model_stage.ModelStage.embed`, the vectors of each work and its texts' dead letters;
- writer: `writer.Writer`, the order of effects (Milvus, dead letters, cache, offsets).

This module builds those and joins them; it holds no rule of its own. The next batch is prepared
while the current one runs on the device. A retriable failure makes its stage retry the same work
with backoff (`retry.Retrier`); the queues fill, the consumer pauses its partitions, and nothing
new is committed until the work lands.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from ingestor import metrics
from ingestor.batching import BatchLimits, BatchWindow, plan, window_chars
from ingestor.cache import Cache
from ingestor.chunking import Splitter, attach_chunks, chunk_all
from ingestor.config import BatchSettings
from ingestor.consistency import Consistency
from ingestor.dedupe import Identity
from ingestor.dlq import DeadLetterQueue
from ingestor.embedder import Embedder
from ingestor.errors import Aborted
from ingestor.in_flight import InFlight
from ingestor.model_stage import ModelStage
from ingestor.observer import Observer
from ingestor.offsets import OffsetTracker
from ingestor.records import Document, Parsed
from ingestor.resolver import Resolver
from ingestor.retry import Backoff, Retrier
from ingestor.sink import MilvusSink
from ingestor.work import Work, joinable, merge
from ingestor.writer import Writer

log = logging.getLogger(__name__)

_STOP = object()
# Works written together when several wait: one Milvus upsert of up to this many rows costs about
# what one of a few dozen does, on the server and in this process.
WRITE_GROUP_ROWS = 1024
WRITE_GROUP_WORKS = 8

__all__ = ["Pipeline"]


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
        observer: Observer | None = None,
        clock: Callable[[], float] = time.monotonic,
        splitter: Splitter | None = None,
    ) -> None:
        """`clock` times the batching windows (a test's fake clock); durations for the metrics
        always use the real one. With a `splitter` every record is written as its chunks."""
        self.clock = clock
        settings = settings.for_device(getattr(embedder, "device", "cpu"))  # a no-op when resolved
        self.settings = settings
        self.tracker = tracker
        self.identity = Identity(embedder.identity, store_text, splitter.layout if splitter else "")
        assert settings.max_batch_records and settings.max_batch_tokens and settings.pass_cost_tokens is not None
        assert settings.max_window_records is not None, "for_device fills every limit in"
        self.window_records = settings.max_window_records
        self.limits = BatchLimits(settings.max_batch_records, settings.max_batch_tokens, settings.pass_cost_tokens)
        self.intake: queue.Queue[Any] = queue.Queue()
        # What the batcher reads: the chunker's output, or with no chunking the intake itself.
        self._chunked: queue.Queue[Any] = queue.Queue() if splitter is not None else self.intake
        self._prepared: queue.Queue[Any] = queue.Queue(maxsize=2)
        # Room for a few works, so that the writer finds several waiting and writes them at once.
        self._embedded: queue.Queue[Any] = queue.Queue(maxsize=WRITE_GROUP_WORKS)
        self._flush = threading.Event()  # cut the window now (shutdown)
        self._abort = threading.Event()  # give up retries (shutdown bound reached)
        self.retrier = Retrier(backoff, self._abort)
        self.in_flight = InFlight()
        # How a record becomes the documents written for it: its chunks, or (None) itself.
        self.splitter = splitter
        self.split: Callable[[list[Document]], list[Document]] | None = (
            None if splitter is None else partial(chunk_all, splitter=splitter)
        )
        self.consistency = Consistency()
        self.resolver = Resolver(cache, sink, self.retrier, self.in_flight, self.identity, self.consistency)
        self.model = ModelStage(embedder)
        self.writer = Writer(
            sink, dlq, cache, tracker, self.retrier, self.in_flight, self.identity, self.consistency, observer
        )
        self._threads: list[threading.Thread] = []
        self.failure: BaseException | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        stages = [("batcher", self._batcher_loop), ("model", self._model_loop), ("writer", self._writer_loop)]
        if self.splitter is not None:
            stages.insert(0, ("chunker", self._chunker_loop))
        for name, target in stages:
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

    # -- stage 1: chunker ------------------------------------------------------------------------

    def _chunker_loop(self) -> None:
        assert self.splitter is not None
        while True:
            items = self.intake.get()
            if items is not _STOP:
                with metrics.stage("plan"):
                    attach_chunks([i for i in items if isinstance(i, Document)], self.splitter)
            self._chunked.put(items)
            if items is _STOP:
                return

    # -- stage 2: batcher ------------------------------------------------------------------------

    def _batcher_loop(self) -> None:
        window: BatchWindow[Parsed] = BatchWindow(self.limits, self.settings.max_wait_ms, self.window_records)
        stopping = False
        while not stopping:
            deadline = window.deadline()
            timeout = None if deadline is None else max(0.0, deadline - self.clock())
            try:
                got = self._chunked.get(timeout=timeout)
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
                    got = self._chunked.get_nowait()
                except queue.Empty:
                    break
            flushing = self._flush.is_set() or stopping
            if window.cut_now(self.clock(), more_waiting=not self._chunked.empty(), flushing=flushing):
                with metrics.stage("plan"):
                    self._emit(window.take())
        self._prepared.put(_STOP)

    def _add_to_window(self, window: BatchWindow[Parsed], items: list[Parsed]) -> None:
        now = self.clock()
        for item in items:
            window.add(item, window_chars(item), now)

    def _emit(self, items: list[Parsed]) -> None:
        started = time.perf_counter()
        for work in plan(items, self.limits, self.resolver, self.model.tokenize, self.split, self._current):
            with metrics.stage("collate"):
                self.model.collate(work)
            waited = time.perf_counter()
            self._put(self._prepared, work)
            started += time.perf_counter() - waited  # a full queue is the model's time, not ours
        metrics.PREPARE_SECONDS.observe(time.perf_counter() - started)

    def _current(self, item: Parsed) -> bool:
        """Still ours? Superseded positions of other partitions count too (they need the write)."""
        return self.tracker.is_current(item.position)

    def _put(self, q: queue.Queue[Any], item: Any) -> None:
        while True:
            try:
                q.put(item, timeout=0.2)
                return
            except queue.Full:
                if self._abort.is_set():
                    raise Aborted() from None

    # -- stage 3: model --------------------------------------------------------------------------

    def _model_loop(self) -> None:
        while True:
            work = self._prepared.get()
            if work is _STOP:
                self._embedded.put(_STOP)
                return
            with metrics.stage("embed"):
                self.model.embed(work)
            self._put(self._embedded, work)

    # -- stage 4: writer -------------------------------------------------------------------------

    def _writer_loop(self) -> None:
        waiting: Any = None  # taken from the queue, not joinable with the group before it
        while True:
            work = waiting if waiting is not None else self._embedded.get()
            waiting = None
            if work is _STOP:
                return
            group, records, rows = [work], work.records(), _rows(work)
            while rows < WRITE_GROUP_ROWS:
                try:
                    waiting = self._embedded.get_nowait()
                except queue.Empty:
                    break
                joined = None if waiting is _STOP else joinable(records, waiting)
                if joined is None:
                    break
                group.append(waiting)
                records, rows, waiting = joined, rows + _rows(waiting), None
            with metrics.stage("write"):
                self.writer.write(merge(group))


def _rows(work: Work) -> int:
    return sum(len(u.docs) for u in work.units)
