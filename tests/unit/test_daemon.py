"""Daemon's start-up retries and shutdown, over scripted collaborators: waiting for a dependency
with backoff (and giving up cleanly on a signal), the drain bound, and the order of the goodbyes."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest

from ingestor.config import RuntimeSettings, Settings
from ingestor.daemon import CLOSE_RESERVE_S, Daemon
from ingestor.errors import RetriableError
from ingestor.retry import Backoff


def _daemon(shutdown_timeout_s: float = 30.0) -> Daemon:
    d = Daemon(Settings(runtime=RuntimeSettings(shutdown_timeout_s=shutdown_timeout_s)))
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
    def __init__(self, calls: list[str], in_flight: list[int]) -> None:
        super().__init__("source", calls)
        self.tracker = _Tracker(in_flight)
        self.stopping = threading.Event()
        self.caught_up = threading.Event()
        self.polls = 0

    def poll_once(self) -> None:
        self.polls += 1


class _Pipeline(_Part):
    def __init__(self, calls: list[str], healthy: bool = True) -> None:
        super().__init__("pipeline", calls)
        self._healthy = healthy

    def healthy(self) -> bool:
        return self._healthy


def _wired(d: Daemon, in_flight: list[int], healthy: bool = True) -> list[str]:
    calls: list[str] = []
    d.source = _Source(calls, in_flight)  # type: ignore[assignment]
    d.pipeline = _Pipeline(calls, healthy)  # type: ignore[assignment]
    d.sink = _Part("sink", calls)  # type: ignore[assignment]
    d.dlq = _Part("dlq", calls)  # type: ignore[assignment]
    d.cache = _Part("cache", calls)  # type: ignore[assignment]
    return calls


# -- start-up ---------------------------------------------------------------------------------------


def test_until_up_retries_a_retriable_error_with_backoff_and_returns_the_result(caplog):
    d = _daemon()
    attempts = {"n": 0}

    def flaky() -> str:
        attempts["n"] += 1
        if attempts["n"] < 3:
            raise RetriableError("kafka", "no broker")
        return "connected"

    with caplog.at_level("WARNING", logger="ingestor.daemon"):
        assert d._until_up("kafka at x", flaky, state="not reachable yet") == "connected"
    waits = [r.getMessage() for r in caplog.records]
    assert len(waits) == 2 and all("kafka at x not reachable yet (kafka: no broker); retrying in" in w for w in waits)


def test_until_up_lets_any_other_error_through_at_once():
    d = _daemon()

    def broken() -> None:
        raise ValueError("a bug")

    with pytest.raises(ValueError):
        d._until_up("milvus", broken)


def test_a_signal_while_waiting_for_a_dependency_exits_0_without_waiting_out_the_backoff():
    d = _daemon()
    d.backoff = Backoff(initial_ms=60_000, max_ms=60_000, jitter=0.0)
    threading.Timer(0.05, d.stop_requested.set).start()
    started = time.monotonic()
    with pytest.raises(SystemExit) as exited:
        d._until_up("milvus", lambda: (_ for _ in ()).throw(RetriableError("milvus", "down")))
    assert exited.value.code == 0
    assert time.monotonic() - started < 5


# -- shutdown ---------------------------------------------------------------------------------------


def test_the_drain_ends_early_enough_for_the_goodbyes_to_fit_the_bound():
    d = _daemon(shutdown_timeout_s=30.0)
    d._stop_deadline = 1_000.0
    assert d._drain_deadline() == 1_000.0 - CLOSE_RESERVE_S
    short = _daemon(shutdown_timeout_s=4.0)
    short._stop_deadline = 1_000.0
    assert short._drain_deadline() == 1_000.0 - 2.0  # half of a short bound


def test_a_graceful_close_polls_until_nothing_is_in_flight_then_says_goodbye_in_order():
    d = _daemon()
    calls = _wired(d, in_flight=[3, 2, 0])
    assert d._close(graceful=True) is True
    assert d.source.polls == 2  # type: ignore[union-attr]
    assert d.source.stopping.is_set()  # type: ignore[union-attr]
    assert calls == ["pipeline.flush", "source.close", "pipeline.stop", "dlq.close", "cache.close", "sink.close"]


def test_work_still_in_flight_at_the_bound_is_abandoned_to_replay(caplog):
    d = _daemon(shutdown_timeout_s=0.2)  # the drain gets half of it
    calls = _wired(d, in_flight=[5])
    started = time.monotonic()
    with caplog.at_level("WARNING", logger="ingestor.daemon"):
        assert d._close(graceful=True) is False
    assert time.monotonic() - started < 2
    assert d.source.polls > 0  # type: ignore[union-attr]  # the membership stayed alive meanwhile
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
    d.stop_requested.set()
    d._stop_deadline = time.monotonic() + 0.2
    logging.getLogger("ingestor.daemon").setLevel(logging.ERROR)
    try:
        assert d.run() == 0
    finally:
        logging.getLogger("ingestor.daemon").setLevel(logging.NOTSET)
