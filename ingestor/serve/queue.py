"""The query side's queue: admission by tokens, and the batches the model thread runs. Pure: time
is passed in, never read; the model thread (`model_thread`) holds the lock around it.

Admission counts tokens, not requests: a request is admitted while the tokens queued and its own
fit `max_queued_tokens` (or when nothing waits, so a request larger than the whole budget is
served alone rather than refused for ever), else it is refused with a Retry-After from the rate the
model has been embedding at. A single text and a batch meet the same bound, by their size.

Batches are cut as the daemon cuts them (`batching.BatchWindow` decides when, `batching.cut_batches`
where): texts are collected until a batch's worth of tokens waits or the oldest has waited
`max_wait_ms`, then sorted by length and cut by the token budget. Texts that arrive while the model
runs join the next window; a client's batch larger than one pass is split across passes like any
other texts. One difference: short of a full batch, a window also waits `max_wait_ms` from the end
of the last pass, since the clients that pass answered send their next requests just after it; cut
at once, their texts would ride in a pass of their own, and concurrent clients would split into
cohorts that never share a pass.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

from ingestor.batching import CHARS_PER_TOKEN, BatchLimits, BatchWindow, cut_batches

T = TypeVar("T")

RETRY_AFTER_MAX_S = 60
RATE_SMOOTHING = 0.2  # weight of the latest pass in the embedding rate


class Queue(Generic[T]):
    def __init__(
        self,
        limits: BatchLimits,
        max_wait_ms: int,
        max_window_records: int,
        max_queued_tokens: int,
        tokens: Callable[[T], int],
    ) -> None:
        self.limits = limits
        self.tokens = tokens
        self.max_queued_tokens = max_queued_tokens
        self.window: BatchWindow[T] = BatchWindow(limits, max_wait_ms, max_window_records)
        self.waiting: deque[tuple[T, float]] = deque()  # admitted, beyond a full window
        self.queued_tokens = 0  # admitted and not yet done
        self.queued_texts = 0
        self.tokens_per_s = 0.0  # smoothed rate of the passes so far; 0 before the first
        self.max_wait_s = max_wait_ms / 1000.0
        self.passed_s = float("-inf")  # when the last pass ended

    def admit(self, items: list[T], now_s: float) -> bool:
        """Queue `items` (one request's texts) if they fit the token budget; False refuses them all."""
        need = sum(self.tokens(i) for i in items)
        if self.queued_texts and self.queued_tokens + need > self.max_queued_tokens:
            return False
        self.queued_tokens += need
        self.queued_texts += len(items)
        self.waiting.extend((i, now_s) for i in items)
        self._fill()
        return True

    def _fill(self) -> None:
        while self.waiting and not self.window.full():
            item, arrived = self.waiting.popleft()
            # The window's fill level is in characters: a text's tokens in the characters they stand for.
            self.window.add(item, self.tokens(item) * CHARS_PER_TOKEN, arrived)

    def take(self, now_s: float) -> list[list[T]]:
        """The batches to run now, longest texts first, or [] when the window should wait."""
        self._fill()
        if not self.window.cut_now(now_s, more_waiting=bool(self.waiting)):
            return []
        if not self.window.filled() and now_s < self.passed_s + self.max_wait_s:
            return []
        batches = cut_batches(self.window.take(), self.tokens, self.limits)
        self._fill()
        return batches

    def deadline(self) -> float | None:
        """When the window will have waited long enough (None: nothing waits)."""
        oldest = self.window.deadline()
        return None if oldest is None else max(oldest, self.passed_s + self.max_wait_s)

    def done(self, batch: list[T], seconds: float, now_s: float) -> None:
        """A batch was embedded (or failed) in `seconds`, ending at `now_s`: its tokens leave the budget."""
        self.passed_s = now_s
        spent = sum(self.tokens(i) for i in batch)
        self.queued_tokens -= spent
        self.queued_texts -= len(batch)
        if seconds > 0 and spent:
            rate = spent / seconds
            self.tokens_per_s = (
                rate if not self.tokens_per_s else (RATE_SMOOTHING * rate + (1 - RATE_SMOOTHING) * self.tokens_per_s)
            )

    def retry_after_s(self) -> int:
        """Seconds until the queued tokens are likely embedded, at the rate seen so far (1 to 60)."""
        if not self.tokens_per_s:
            return 1
        return max(1, min(RETRY_AFTER_MAX_S, math.ceil(self.queued_tokens / self.tokens_per_s)))
