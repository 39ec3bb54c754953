"""`ingestor run`: wires source → pipeline → sink, owns start-up, signals and shutdown.

The main thread is the consumer thread (Kafka only); the pipeline stages run on their own
threads. Shutdown has two speeds: the first SIGTERM/SIGINT stops fetching, lets in-flight work
finish within `runtime.shutdown_timeout_s`, commits what is done and exits 0; a second signal
exits at once — nothing is lost, uncommitted records replay on the next start.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from ingestor import hooks, metrics
from ingestor.cache import Cache
from ingestor.chunking import splitter_for
from ingestor.config import Settings
from ingestor.dlq import DeadLetterQueue
from ingestor.embedder import Embedder
from ingestor.errors import RetriableError
from ingestor.health import HealthServer, MilvusWatch, Vitals
from ingestor.identity import of_model
from ingestor.kafka_common import recent_refusal
from ingestor.memory import tune_gc
from ingestor.observer import Observer
from ingestor.offsets import OffsetTracker
from ingestor.pipeline import Pipeline
from ingestor.records import Parsed
from ingestor.retry import Backoff
from ingestor.sink import MilvusSink
from ingestor.source import KafkaSource

log = logging.getLogger(__name__)
T = TypeVar("T")

# Of the shutdown bound, what the final commit, leaving the group and closing the clients may take.
CLOSE_RESERVE_S = 10.0


_PROBE_TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Return a new list containing all items from the iterable in ascending order.",
    "Offsets are committed only after the vectors are written.",
    "Kafka consumer groups spread partitions across processes and machines.",
    "A short one.",
    "Embeddings map text to vectors so that similar meanings lie close together in space.",
    "Raise ValueError if the value is not present.",
    "How do I read a file line by line in Python?",
]


def backoff_from(settings: Settings) -> Backoff:
    r = settings.retry
    return Backoff(r.initial_backoff_ms, r.max_backoff_ms, r.multiplier, r.jitter)


class Daemon:
    def __init__(
        self,
        settings: Settings,
        until_caught_up: bool = False,
        *,
        embedder: Embedder | None = None,
        observer: Observer | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`embedder`: a model loaded already (an `Embedder`, or an object with its interface),
        used instead of loading the one `settings.model` names, which is then not read: for a
        program that holds the model itself, or runs daemons one after another on one model.
        `observer` is told of records as they arrive and as they land (`ingestor.observer`).
        `clock` times the shutdown bound, the progress line and readiness, and is handed to the
        source, the pipeline and the Milvus watch (a test's fake clock); the backoff waits and the
        signal's watchdog are real time."""
        self.settings = settings
        self.clock = clock
        self.until_caught_up = until_caught_up
        self.embedder = embedder
        self.observer = observer
        self.stop_requested = threading.Event()
        self._signals = 0
        self._stop_deadline: float | None = None  # set by request_stop (the first signal)
        self.backoff = backoff_from(settings)
        # Shared by the source (assignments, what is handed on) and the writer (what is done): the
        # daemon reads in-flight work and owned partitions here.
        self.tracker = OffsetTracker()
        self.sink: MilvusSink | None = None
        self.cache: Cache | None = None
        self.dlq: DeadLetterQueue | None = None
        self.source: KafkaSource | None = None
        self.pipeline: Pipeline | None = None
        self.http: HealthServer | None = None
        self.milvus_watch: MilvusWatch | None = None
        self.model_loaded = False

    # -- signals ---------------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def request_stop(self) -> None:
        """Stop fetching, and finish within `runtime.shutdown_timeout_s` from now: the first
        signal's effect, without its watchdog."""
        self._stop_deadline = self.clock() + self.settings.runtime.shutdown_timeout_s
        self.stop_requested.set()

    def _on_signal(self, signum: int, _frame: object) -> None:
        self._signals += 1
        if self._signals > 1:
            log.warning("second signal: exiting now; uncommitted records will replay")
            os._exit(1)
        bound = self.settings.runtime.shutdown_timeout_s
        log.info(
            "%s received: finishing in-flight work (at most %.0fs), then exiting", signal.Signals(signum).name, bound
        )
        self.request_stop()
        # The bound holds in every state, even one where some call does not return (a dependency
        # that hangs): past it the process exits, and what was not committed replays.
        watchdog = threading.Timer(bound, self._overdue)
        watchdog.daemon = True
        watchdog.start()

    def _overdue(self) -> None:
        log.warning(
            "shutdown bound of %.0fs reached before the shutdown finished: exiting now; uncommitted "
            "records will replay",
            self.settings.runtime.shutdown_timeout_s,
        )
        logging.shutdown()
        os._exit(0)

    # -- start-up --------------------------------------------------------------------------------

    def until_up(self, what: str, call: Callable[[], T], state: str = "not ready yet") -> T:
        """Retry `call` with backoff while it raises RetriableError; `state` words the wait truly
        (a Milvus that refuses a request answered: it is not ready, not unreachable)."""
        attempt = 0
        while True:
            try:
                return call()
            except RetriableError as exc:
                delay = self.backoff.delay_s(attempt)
                log.warning("%s %s (%s); retrying in %.1fs", what, state, exc, delay)
                attempt += 1
                if self.stop_requested.wait(delay):
                    raise SystemExit(0) from None

    # -- health ----------------------------------------------------------------------------------

    def vitals(self) -> Vitals:
        source, pipeline, watch = self.source, self.pipeline, self.milvus_watch
        now = self.clock()
        return Vitals(
            model_loaded=self.model_loaded,
            started=source is not None and pipeline is not None and watch is not None,
            stopping=self.stop_requested.is_set(),
            pipeline_healthy=pipeline is None or pipeline.healthy(),
            consumer_idle_s=now - source.alive_monotonic if source is not None else 0.0,
            milvus_silent_s=now - watch.last_ok if watch is not None else 0.0,
            milvus_ping_interval_s=watch.interval_s if watch is not None else 5.0,
            milvus_error=watch.last_error if watch is not None else "",
            blocked=source.blocked_reason() if source is not None else None,
            kafka_refused=recent_refusal(),
            redis_refused=self.cache.refused if self.cache is not None else "",
            partitions=len(self.tracker.owned()),
        )

    def _start_http(self) -> None:
        m = self.settings.metrics
        if m.port and self.http is None:
            self.http = HealthServer(m.host, m.port, self.vitals)
            self.http.start()

    def start(self) -> None:
        s = self.settings
        log.info("starting ingestor with configuration %s", s.redacted())
        self._start_http()  # /healthz answers during the model load; /readyz says why not yet
        sink = self.sink = MilvusSink(s.milvus, s.batch.max_write_bytes, chunked=s.chunking.enabled)
        sink.start_serving()  # a Milvus Lite child starts while the model loads
        try:
            if self.embedder is None:
                self.embedder = hooks.current.model(s.model) or Embedder(s.model, s.runtime.torch_threads)
                if not self.embedder.is_reference:  # what the setting costs in accuracy, once, at start
                    self.embedder.precision_report(_PROBE_TEXTS)
        except BaseException:
            sink.close()
            raise
        embedder = self.embedder
        splitter = splitter_for(s.chunking, embedder)  # settings the model cannot honour stop here, exit 2
        self.model_loaded = True
        tune_gc(s.runtime.gc_gen0_threshold)
        batch = s.batch.for_device(embedder.device)
        in_flight = batch.max_in_flight_records
        assert in_flight is not None, "for_device fills every limit in"
        log.info(
            "batching on %s: up to %d records and %d tokens per pass (pass cost %d tokens), windows of %d, "
            "%d in flight",
            embedder.device,
            batch.max_batch_records,
            batch.max_batch_tokens,
            batch.pass_cost_tokens,
            batch.max_window_records,
            batch.max_in_flight_records,
        )

        def open_milvus() -> None:
            sink.connect()
            sink.ensure_collection(embedder.dimension, embedder.identity, of_model(embedder, splitter))

        self.until_up(f"milvus at {s.milvus.uri}", open_milvus)
        cache = self.cache = Cache(s.redis, embedder.identity, sink.namespace, embedder.dimension)
        if cache.enabled and not cache.check_at_start():
            log.warning("redis is not reachable: running with cache misses until it is")
        elif not cache.enabled:
            log.info("no redis.url configured: running without a cache")
        tracker = self.tracker
        dlq = self.dlq = DeadLetterQueue(s.kafka, s.dlq)
        pipeline = self.pipeline = Pipeline(
            batch,
            tracker,
            embedder,
            cache,
            sink,
            dlq,
            self.backoff,
            s.milvus.store_text,
            self.observer,
            clock=self.clock,
            splitter=splitter,
        )
        deliver = pipeline.submit if self.observer is None else _observed(self.observer, pipeline.submit)

        self.source = self.until_up(
            f"kafka at {s.kafka.bootstrap_servers}",
            lambda: KafkaSource(
                s.kafka,
                tracker,
                deliver,
                in_flight,
                self.until_caught_up,
                self.backoff,
                hold=pipeline.is_retrying,
                clock=self.clock,
            ),
            state="not reachable yet",
        )
        self.until_up(f"kafka at {s.kafka.bootstrap_servers}", self.source.start, state="not reachable yet")
        self.pipeline.start()
        self.milvus_watch = MilvusWatch(sink.ping, clock=self.clock)
        self.milvus_watch.start()

    # -- main loop -------------------------------------------------------------------------------

    def run(self) -> int:
        """Run until a signal, until caught up (if asked), or until a stage fails. Exit code."""
        self.start()
        assert self.source is not None and self.pipeline is not None
        source, pipeline = self.source, self.pipeline
        progress = _Progress(self.settings.runtime.progress_interval_s, self.clock)
        while not self.stop_requested.is_set() and not source.caught_up.is_set():
            source.poll_once()
            if not pipeline.healthy():
                log.error("a pipeline stage stopped: exiting; uncommitted records will replay")
                self.close(graceful=False)
                return 1
            progress.maybe_log(self.tracker)
        drained = self.close(graceful=True)
        # Work abandoned at the shutdown bound after a signal replays on the next start: exit 0.
        return 0 if drained or self.stop_requested.is_set() else 1

    def drain_deadline(self) -> float:
        """When draining ends (on `clock`): early enough for the final commit and the goodbyes to
        fit the bound too, counted from `request_stop`, else from now."""
        bound = self.settings.runtime.shutdown_timeout_s
        end = self._stop_deadline if self._stop_deadline is not None else self.clock() + bound
        return end - min(CLOSE_RESERVE_S, bound / 2)

    def close(self, graceful: bool) -> bool:
        """Release everything after `start`. Graceful: drain within the bound, commit what is
        done, leave the group; else abandon the work in flight (it replays). True if drained."""
        assert self.source is not None and self.pipeline is not None and self.sink is not None
        source, pipeline = self.source, self.pipeline
        source.stopping.set()
        drained = True
        if graceful:
            pipeline.flush()
            deadline = self.drain_deadline()
            while self.tracker.in_flight() > 0 and pipeline.healthy():
                if self.clock() > deadline:
                    log.warning(
                        "shutdown bound reached with %d record(s) in flight: they will replay", self.tracker.in_flight()
                    )
                    drained = False
                    break
                source.poll_once()  # keeps the membership alive and commits as work lands
            pipeline.abort() if not drained else None
            source.close()
        else:
            pipeline.abort()
            source.abandon()
        pipeline.stop(timeout_s=5.0)
        if self.dlq is not None:
            self.dlq.close()
        if self.cache is not None:
            self.cache.close()
        if self.milvus_watch is not None:
            self.milvus_watch.stop()
        self.sink.close()
        if self.http is not None:
            self.http.stop()
        log.info("stopped: %s", summary())
        return drained or not graceful


def _observed(observer: Observer, submit: Callable[[list[Parsed]], None]) -> Callable[[list[Parsed]], None]:
    def deliver(items: list[Parsed]) -> None:
        observer.delivered(items)
        submit(items)

    return deliver


def summary() -> str:
    """Totals since start, one line (the tests read it; operators like it): the work done, then
    every outcome, which add up to `consumed` (see `metrics.RecordLedger`)."""
    totals = metrics.RECORDS.totals()
    work = (
        f"consumed={totals.pop('consumed')} embedded={int(metrics.total(metrics.RECORDS_EMBEDDED))} "
        f"cache_hits={int(metrics.total(metrics.RECORDS_CACHE_HIT))}"
    )
    return " ".join([work] + [f"{k}={v}" for k, v in totals.items()])


class _Progress:
    """A periodic INFO line: throughput, in-flight, cache hits. Never texts or vectors."""

    def __init__(self, interval_s: float, clock: Callable[[], float]) -> None:
        self.interval_s = interval_s
        self.clock = clock
        self.last = clock()
        self.last_consumed = 0.0

    def maybe_log(self, tracker: OffsetTracker) -> None:
        now = self.clock()
        if now - self.last < self.interval_s:
            return
        consumed = metrics.RECORDS.totals()["consumed"]
        rate = (consumed - self.last_consumed) / (now - self.last)
        embedded = metrics.total(metrics.RECORDS_EMBEDDED)
        hits = metrics.total(metrics.RECORDS_CACHE_HIT)
        hit_rate = hits / (hits + embedded) if hits + embedded else 0.0
        log.info(
            "progress: %.1f records/s, %d in flight, %d partition(s), cache hit rate %.0f%%",
            rate,
            tracker.in_flight(),
            len(tracker.owned()),
            100 * hit_rate,
        )
        self.last, self.last_consumed = now, consumed
