"""The one thread that runs the model for the query side. Requests hand it their texts as
`work.Unit`s, tokenised already (`ModelStage.tokenize`); it takes the batches `queue.Queue` cuts,
runs each through the daemon's model stage (`ModelStage.collate` and `embed`: the same padding,
forward pass and bisection of a failing pass), and tells each request when its last text is done.
A text the model cannot encode is done without a vector."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ingestor import metrics
from ingestor.model_stage import ModelStage
from ingestor.serve.queue import Queue
from ingestor.work import Unit, Work

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Request:
    """One request's texts in the queue; `done` is called once, on the model thread, when all are."""

    units: list[Unit]
    done: Callable[[], None]
    left: int = field(init=False)
    failed: bool = False  # a pass of its texts raised: not the texts' fault

    def __post_init__(self) -> None:
        self.left = len(self.units)


@dataclass(slots=True)
class Entry:
    unit: Unit
    request: Request


class ModelThread:
    def __init__(self, stage: ModelStage, queue: Queue[Entry], clock: Callable[[], float] = time.monotonic) -> None:
        self.stage = stage
        self.queue = queue
        self.clock = clock
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="ingestor-serve-model", daemon=True)

    @staticmethod
    def tokens(entry: Entry) -> int:
        return entry.unit.tokens

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def submit(self, request: Request) -> bool:
        """Queue the request's texts; False when the token budget refuses them (nothing queued)."""
        entries = [Entry(u, request) for u in request.units]
        with self._cond:
            if not self.queue.admit(entries, self.clock()):
                return False
            self._gauges()
            self._cond.notify()
        return True

    def retry_after_s(self) -> int:
        with self._cond:
            return self.queue.retry_after_s()

    def stop(self, timeout_s: float = 5.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(timeout_s)

    def _gauges(self) -> None:
        metrics.SERVE_QUEUED_TOKENS.set(self.queue.queued_tokens)
        metrics.SERVE_QUEUED_TEXTS.set(self.queue.queued_texts)

    def _next(self) -> list[list[Entry]] | None:
        """The next batches, waiting for them; None once stopped."""
        with self._cond:
            while not self._stop:
                now = self.clock()
                batches = self.queue.take(now)
                if batches:
                    return batches
                deadline = self.queue.deadline()
                self._cond.wait(None if deadline is None else max(0.0, deadline - now))
        return None

    def _run(self) -> None:
        while (batches := self._next()) is not None:
            for batch in batches:
                started = time.perf_counter()
                self._embed(batch)
                elapsed = time.perf_counter() - started
                with self._cond:
                    self.queue.done(batch, elapsed, self.clock())
                    self._gauges()
                for entry in batch:
                    entry.request.left -= 1
                    if entry.request.left == 0:
                        entry.request.done()

    def _embed(self, batch: list[Entry]) -> None:
        units = [e.unit for e in batch]
        work = Work(units=list(units), claimed=list(units))
        try:
            self.stage.collate(work)
            self.stage.embed(work)
        except Exception:  # the thread must outlive any one batch: its requests answer 500
            log.exception("a forward pass of %d texts failed", len(units))
            for entry in batch:
                entry.unit.vector = None
                entry.request.failed = True
