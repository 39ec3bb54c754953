"""Retrying: exponential backoff with ±jitter and a cap (`Backoff`, pure: randomness is injected),
and `Retrier`, which retries one call while it raises `RetriableError`."""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from ingestor import metrics
from ingestor.errors import Aborted, RetriableError

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Backoff:
    initial_ms: int = 200
    max_ms: int = 30_000
    multiplier: float = 2.0
    jitter: float = 0.2

    def delay_s(self, attempt: int, rng: random.Random | None = None) -> float:
        """Delay before retry number `attempt` (0-based): grows geometrically up to the cap, with
        ±`jitter` spread so that many workers do not retry in lockstep."""
        # The exponent stops growing at the cap: an outage of hours must not overflow a float.
        exponent = min(max(attempt, 0), 64)
        base = min(float(self.max_ms), self.initial_ms * self.multiplier**exponent)
        spread = (rng or random).uniform(-self.jitter, self.jitter)
        return max(0.0, base * (1.0 + spread)) / 1000.0


class Retrier:
    """Retries a call while it raises `RetriableError`, with `backoff` between attempts, until it
    succeeds or `abort` is set (then `Aborted`: shutdown gave up). Knows which threads are retrying
    which dependency: while any is, the consumer keeps its partitions paused."""

    def __init__(self, backoff: Backoff, abort: threading.Event, rng: random.Random | None = None) -> None:
        self.backoff = backoff
        self.abort = abort  # its wait() is the sleep between attempts, so an abort ends it at once
        self._rng = rng or random.Random()
        self._retrying: dict[str, str] = {}  # thread name -> dependency

    def active(self) -> bool:
        return bool(self._retrying)

    def run(self, dependency: str, call: Callable[[], T]) -> T:
        attempt = 0
        me = threading.current_thread().name
        while True:
            try:
                result = call()
            except RetriableError as exc:
                if self.abort.is_set():
                    raise Aborted() from exc
                self._retrying[me] = dependency
                delay = self.backoff.delay_s(attempt, self._rng)
                metrics.RETRIES.labels(exc.dependency).inc()
                log.warning("%s unavailable, retry %d in %.1fs: %s", exc.dependency, attempt + 1, delay, exc)
                attempt += 1
                if self.abort.wait(delay):
                    raise Aborted() from exc
                continue
            if attempt:
                log.info("%s recovered after %d retr%s", dependency, attempt, "y" if attempt == 1 else "ies")
            self._retrying.pop(me, None)
            return result
