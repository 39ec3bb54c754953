"""Cutting embedding batches by a token budget. Pure logic.

A forward pass costs about `records × longest record` tokens, because every sequence is padded to
the longest one in its batch. Sorting a window of records by length and cutting greedily keeps
padding small: records of similar length share a batch. The record that would push a batch past
`max_tokens` (counting padding) or `max_records` starts the next one; a record longer than the
whole budget gets a batch of its own.

With `pass_cost` > 0 (the fixed cost of one forward pass, in tokens) small windows get the exact
cheapest cut instead: the split of the sorted records that minimises padded tokens plus
`pass_cost` per pass (dynamic programming; a window at low load holds a few records of very
different lengths, where a greedy cut pads a short text to a long one's length). Windows over
`EXACT_CUT_MAX_ITEMS` are cut greedily: under backlog the greedy cut of a large sorted window
comes within a few per cent of the optimum, and the exact cut would cost quadratic time.

`BatchWindow` decides *when* to cut: as soon as a full batch's worth is waiting, or when the
oldest record has waited `max_wait_ms` — so under backlog windows are large (sorting across many
records) and at low load a record waits no longer than `max_wait_ms`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


EXACT_CUT_MAX_ITEMS = 256


@dataclass(frozen=True, slots=True)
class BatchLimits:
    max_records: int
    max_tokens: int
    pass_cost: int = 0  # tokens' worth of fixed cost per forward pass; 0 = always cut greedily

    def __post_init__(self) -> None:
        if self.max_records < 1 or self.max_tokens < 1 or self.pass_cost < 0:
            raise ValueError("batch limits must be positive")


def padded_cost(lengths: Sequence[int]) -> int:
    """Tokens a forward pass processes for these sequence lengths, padding included."""
    return len(lengths) * max(lengths, default=0)


def cut_batches(items: Sequence[T], length: Callable[[T], int], limits: BatchLimits) -> list[list[T]]:
    """Sort by length (longest first) and cut under `limits`: exactly for small windows when
    `limits.pass_cost` is set, greedily otherwise.

    Every item appears in exactly one batch; each batch's padded cost is within `max_tokens`
    unless it holds a single item; no batch exceeds `max_records`.
    """
    ordered = sorted(items, key=length, reverse=True)
    if limits.pass_cost and len(ordered) <= EXACT_CUT_MAX_ITEMS:
        return _cheapest_cut(ordered, [length(i) for i in ordered], limits)
    return _greedy_cut(ordered, length, limits)


def cut_cost(batches: Sequence[Sequence[int]], pass_cost: int) -> int:
    """What a cut costs: padded tokens plus `pass_cost` per forward pass."""
    return sum(padded_cost(b) + pass_cost for b in batches)


def _cheapest_cut(ordered: list[T], lengths: list[int], limits: BatchLimits) -> list[list[T]]:
    """The split of `ordered` (longest first) into consecutive batches of least `cut_cost`.
    Consecutive is enough: some cheapest cut of any set keeps similar lengths together."""
    n = len(ordered)
    best = [0] + [-1] * n  # best[i]: least cost of the first i items
    start = [0] * (n + 1)  # start[i]: where the last batch of that cut begins
    for i in range(1, n + 1):
        # Batch [j, i) is padded to lengths[j]; growing it backwards only makes it dearer, so
        # the first j that breaks a limit ends the search.
        for j in range(i - 1, max(0, i - limits.max_records) - 1, -1):
            size = (i - j) * lengths[j]
            if i - j > 1 and size > limits.max_tokens:
                break
            cost = best[j] + size + limits.pass_cost
            if best[i] < 0 or cost <= best[i]:  # ties: the bigger batch, fewer passes
                best[i], start[i] = cost, j
    batches: list[list[T]] = []
    i = n
    while i > 0:
        batches.append(ordered[start[i]:i])
        i = start[i]
    return batches[::-1]


def _greedy_cut(ordered: list[T], length: Callable[[T], int], limits: BatchLimits) -> list[list[T]]:
    """Fill each batch until the next item would break a limit."""
    batches: list[list[T]] = []
    current: list[T] = []
    longest = 0
    for item in ordered:
        n = length(item)
        width = max(longest, n)
        if current and (len(current) + 1 > limits.max_records or (len(current) + 1) * width > limits.max_tokens):
            batches.append(current)
            current, width = [], n
        current.append(item)
        longest = width
    if current:
        batches.append(current)
    return batches


@dataclass(slots=True)
class _Entry(Generic[T]):
    item: T
    arrived_s: float


class BatchWindow(Generic[T]):
    """Collects records until a batch should be cut. Time is passed in, never read."""

    def __init__(self, limits: BatchLimits, max_wait_ms: int, max_window_records: int) -> None:
        self.limits = limits
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_window_records = max(max_window_records, limits.max_records)
        self._entries: list[_Entry[T]] = []
        self._tokens = 0

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, item: T, tokens: int, now_s: float) -> None:
        self._entries.append(_Entry(item, now_s))
        self._tokens += tokens

    def full(self) -> bool:
        """No more records fit in this window."""
        return len(self._entries) >= self.max_window_records

    def ready(self, now_s: float) -> bool:
        """A batch should be cut now: a full batch is waiting, or the oldest waited long enough."""
        if not self._entries:
            return False
        if len(self._entries) >= self.limits.max_records or self._tokens >= self.limits.max_tokens:
            return True
        return now_s - self._entries[0].arrived_s >= self.max_wait_s

    def deadline(self) -> float | None:
        """When the oldest record's wait runs out (None when empty)."""
        return self._entries[0].arrived_s + self.max_wait_s if self._entries else None

    def take(self) -> list[T]:
        """Everything collected, in arrival order; the window starts empty again."""
        items = [e.item for e in self._entries]
        self._entries.clear()
        self._tokens = 0
        return items
