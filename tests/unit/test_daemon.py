"""Daemon's start-up and shutdown, over scripted collaborators and a fake clock: the wiring of
`start`, waiting for a dependency with backoff (and giving up cleanly on a signal), the drain
bound, and the order of the goodbyes."""

from __future__ import annotations

import functools
import logging
import threading
import time
from typing import Any

import pytest
from kafka import TopicPartition as KTP

from ingestor import daemon as daemon_module
from ingestor.config import ChunkingSettings, KafkaSettings, MetricsSettings, RuntimeSettings, Settings
from ingestor.daemon import CLOSE_RESERVE_S, Daemon
from ingestor.errors import RetriableError
from ingestor.identity import ModelIdentity
from ingestor.retry import Backoff
from ingestor.source import KafkaSource
from tests.support.fakes import Clock, FakeConsumer, FakeEmbedder, FakeSink, Log

# A poll of the scripted source moves the fake clock on by this much (exact in binary).
POLL_S = 0.5


def _daemon(shutdown_timeout_s: float = 30.0) -> Daemon:
    d = Daemon(Settings(runtime=RuntimeSettings(shutdown_timeout_s=shutdown_timeout_s)), clock=Clock())
    d.backoff = Backoff(initial_ms=1, max_ms=2, jitter=0.0)
    return d


class _Tracker:
    def __init__(self, in_flight: list[int]) -> None:
        self.script = in_flight  # in flight at each check; the last value repeats

    def in_flight(self) -> int:
        return self.script.pop(0) if len(self.script) > 1 else self.script[0]


class _Part:
    """Records the calls made on it, in one log shared by all the parts."""

    def __init__(self, name: str, calls: list[str]) -> None:
        self.name, self.calls = name, calls

    def __getattr__(self, attr: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> None:
            self.calls.append(f"{self.name}.{attr}")

        return call


class _Source(_Part):
    def __init__(self, calls: list[str], clock: Clock) -> None:
        super().__init__("source", calls)
        self.clock = clock
        self.stopping = threading.Event()
        self.caught_up = threading.Event()
        self.polls = 0

    def poll_once(self) -> None:
        self.polls += 1
        self.clock.now += POLL_S


class _Pipeline(_Part):
    def __init__(self, calls: list[str], healthy: bool = True) -> None:
        super().__init__("pipeline", calls)
        self._healthy = healthy

    def healthy(self) -> bool:
        return self._healthy


def _wired(d: Daemon, in_flight: list[int], healthy: bool = True) -> list[str]:
    calls: list[str] = []
    d.tracker = _Tracker(in_flight)  # type: ignore[assignment]
    d.source = _Source(calls, d.clock)  # type: ignore[arg-type,assignment]
    d.pipeline = _Pipeline(calls, healthy)  # type: ignore[assignment]
    d.sink = _Part("sink", calls)  # type: ignore[assignment]
    d.dlq = _Part("dlq", calls)  # type: ignore[assignment]
    d.cache = _Part("cache", calls)  # type: ignore[assignment]
    return calls


# -- start-up ---------------------------------------------------------------------------------------


class _Sink(FakeSink):
    """Milvus as `start` sees it: refuses the first `down` connects (not up yet), then answers."""

    namespace = "test"

    def __init__(self, calls: list[str], down: int) -> None:
        super().__init__(Log())
        self.calls, self.down = calls, down

    def start_serving(self) -> None:
        self.calls.append("sink.start_serving")

    def connect(self) -> None:
        self.calls.append("sink.connect")
        if self.down:
            self.down -= 1
            raise RetriableError("milvus", "not up yet")

    def ensure_collection(self, dimension: int, identity: str, model: ModelIdentity | None = None) -> None:
        self.calls.append(f"sink.ensure_collection({dimension}, {identity})")
        self.model = model

    def ping(self) -> str:
        return ""

    def close(self) -> None:
        self.calls.append("sink.close")


def test_start_waits_for_milvus_and_wires_one_tracker_and_one_clock_through_source_and_pipeline(monkeypatch):
    calls: list[str] = []
    sink = _Sink(calls, down=1)
    consumer = FakeConsumer([KTP("docs", 0)])
    monkeypatch.setattr(daemon_module, "MilvusSink", lambda *args, **kwargs: sink)
    monkeypatch.setattr(daemon_module, "KafkaSource", functools.partial(KafkaSource, consumer=consumer))
    monkeypatch.setattr(daemon_module, "tune_gc", lambda threshold: None)  # process-wide: not in a test
    clock = Clock()
    # No metrics port, no redis.url: nothing is served and no cache is opened. The fake model has
    # no tokenizer to chunk with (the splitter's wiring is the integration suite's).
    d = Daemon(
        Settings(
            kafka=KafkaSettings(topics=["docs"]),
            metrics=MetricsSettings(port=0),
            chunking=ChunkingSettings(enabled=False),
        ),
        embedder=FakeEmbedder(Log()),
        clock=clock,
    )  # type: ignore[arg-type]
    d.backoff = Backoff(initial_ms=1, max_ms=2, jitter=0.0)
    assert not d.vitals().started
    d.start()
    try:
        assert calls == ["sink.start_serving", "sink.connect", "sink.connect", "sink.ensure_collection(4, fake@fp32)"]
        assert sink.model is not None and (sink.model.dimension, sink.model.chunking) == (4, "off")
        assert d.vitals().started and d.model_loaded
        assert d.source is not None and d.pipeline is not None and d.milvus_watch is not None
        assert d.source.tracker is d.tracker and d.pipeline.tracker is d.tracker
        assert d.source.hold == d.pipeline.is_retrying  # no late injection: the source is built with it
        assert d.source.clock is clock and d.pipeline.clock is clock and d.milvus_watch.clock is clock
        assert consumer.listener is not None  # subscribed
        assert not d.cache.enabled  # type: ignore[union-attr]
    finally:
        assert d.close(graceful=True) is True  # nothing in flight: drained at once
    assert calls[-1] == "sink.close"


def test_until_up_retries_a_retriable_error_with_backoff_and_returns_the_result(caplog):
    d = _daemon()
    attempts = {"n": 0}

    def flaky() -> str:
        attempts["n"] += 1
        if attempts["n"] < 3:
            raise RetriableError("kafka", "no broker")
        return "connected"

    with caplog.at_level("WARNING", logger="ingestor.daemon"):
        assert d.until_up("kafka at x", flaky, state="not reachable yet") == "connected"
    waits = [r.getMessage() for r in caplog.records]
    assert len(waits) == 2 and all("kafka at x not reachable yet (kafka: no broker); retrying in" in w for w in waits)


def test_until_up_lets_any_other_error_through_at_once():
    d = _daemon()

    def broken() -> None:
        raise ValueError("a bug")

    with pytest.raises(ValueError):
        d.until_up("milvus", broken)


def test_a_signal_while_waiting_for_a_dependency_exits_0_without_waiting_out_the_backoff():
    d = _daemon()
    d.backoff = Backoff(initial_ms=60_000, max_ms=60_000, jitter=0.0)
    threading.Timer(0.05, d.stop_requested.set).start()
    started = time.monotonic()
    with pytest.raises(SystemExit) as exited:
        d.until_up("milvus", lambda: (_ for _ in ()).throw(RetriableError("milvus", "down")))
    assert exited.value.code == 0
    assert time.monotonic() - started < 5


# -- shutdown ---------------------------------------------------------------------------------------


def test_the_drain_ends_early_enough_for_the_goodbyes_to_fit_the_bound():
    d = _daemon(shutdown_timeout_s=30.0)
    d.clock.now = 970.0  # type: ignore[attr-defined]
    d.request_stop()  # the bound counts from here, whenever the drain starts
    d.clock.now = 990.0  # type: ignore[attr-defined]
    assert d.drain_deadline() == 1_000.0 - CLOSE_RESERVE_S
    short = _daemon(shutdown_timeout_s=4.0)
    short.clock.now = 996.0  # type: ignore[attr-defined]
    short.request_stop()
    assert short.drain_deadline() == 1_000.0 - 2.0  # half of a short bound
    unasked = _daemon(shutdown_timeout_s=30.0)  # closing without a stop request: the bound counts from now
    assert unasked.drain_deadline() == unasked.clock() + 30.0 - CLOSE_RESERVE_S


def test_a_graceful_close_polls_until_nothing_is_in_flight_then_says_goodbye_in_order():
    d = _daemon()
    calls = _wired(d, in_flight=[3, 2, 0])
    assert d.close(graceful=True) is True
    assert d.source.polls == 2  # type: ignore[union-attr]
    assert d.source.stopping.is_set()  # type: ignore[union-attr]
    assert calls == ["pipeline.flush", "source.close", "pipeline.stop", "dlq.close", "cache.close", "sink.close"]


def test_work_still_in_flight_at_the_bound_is_abandoned_to_replay(caplog):
    d = _daemon(shutdown_timeout_s=4.0)  # the drain gets half of it: 2 s of fake time, 4 polls' worth
    calls = _wired(d, in_flight=[5])
    started = time.monotonic()
    with caplog.at_level("WARNING", logger="ingestor.daemon"):
        assert d.close(graceful=True) is False
    assert time.monotonic() - started < 2
    assert d.source.polls > 0  # type: ignore[union-attr]  # the membership stayed alive meanwhile
    assert d.source.polls == 5  # type: ignore[union-attr]  # polled at 0, 0.5, ... 2.0 s; past the bound at 2.5
    assert calls[:3] == ["pipeline.flush", "pipeline.abort", "source.close"]  # closed, not abandoned
    assert any("shutdown bound reached with 5 record(s) in flight" in r.getMessage() for r in caplog.records)


def test_a_failed_stage_closes_without_draining_or_committing():
    d = _daemon()
    calls = _wired(d, in_flight=[5], healthy=False)
    d.start = lambda: None  # type: ignore[method-assign]
    assert d.run() == 1
    assert "pipeline.flush" not in calls and "source.close" not in calls
    assert calls[:2] == ["pipeline.abort", "source.abandon"]


def test_a_signal_ends_the_loop_and_exits_0_even_if_the_drain_did_not_finish():
    d = _daemon(shutdown_timeout_s=0.2)
    _wired(d, in_flight=[5])
    d.start = lambda: None  # type: ignore[method-assign]
    d.request_stop()
    logging.getLogger("ingestor.daemon").setLevel(logging.ERROR)
    try:
        assert d.run() == 0
    finally:
        logging.getLogger("ingestor.daemon").setLevel(logging.NOTSET)
