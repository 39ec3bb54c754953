"""Batching: from a window of parsed records to the work the model and the writer do. Pure logic.

Within one window:
- records of the same id collapse to the latest one read (the others' offsets ride along and are
  done when it is), so a length-sorted batch order can never write an older version last;
- identical texts become one `Unit`, embedded once however many records carry them;
- what is already resolved (skips, cached vectors, texts shared with earlier work) is set aside by
  a resolver the pipeline supplies (`resolver.Resolver`, which does the I/O);
- the units still to embed are cut into batches by a token budget (`cut_batches`).

`plan` composes these steps; the pipeline and the tests both call it.

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
records) and at low load a record waits no longer than `max_wait_ms`. Its fill level is counted
in characters (`window_chars`), against a batch's token budget turned into characters once
(`CHARS_PER_TOKEN`): records are tokenised only once the cache has said which texts need the
model, so at intake a window knows characters, not tokens. Every token count is the tokenizer's;
the cut uses those.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from ingestor.records import Delete, Document, Parsed, Rejected
from ingestor.work import Unit, Window, Work

T = TypeVar("T")


EXACT_CUT_MAX_ITEMS = 256
CHARS_PER_TOKEN = 4  # English prose under WordPiece/BPE; only the window's character budget uses it


def window_chars(item: Parsed) -> int:
    """What a record adds to a window's fill level: its text's characters (a delete or a dead
    letter adds none)."""
    return len(item.text) if isinstance(item, Document) else 0


@dataclass(frozen=True, slots=True)
class BatchLimits:
    max_records: int
    max_tokens: int
    pass_cost: int = 0  # tokens' worth of fixed cost per forward pass; 0 = always cut greedily

    def __post_init__(self) -> None:
        if self.max_records < 1 or self.max_tokens < 1 or self.pass_cost < 0:
            raise ValueError("batch limits must be positive")


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


def _cheapest_cut(ordered: list[T], lengths: list[int], limits: BatchLimits) -> list[list[T]]:
    """The split of `ordered` (longest first) into consecutive batches of least cost: padded
    tokens (a batch's size times its longest length) plus `limits.pass_cost` per batch.
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
        batches.append(ordered[start[i] : i])
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
        # A batch's worth of text: its token budget in characters (the window counts characters).
        self.max_chars = limits.max_tokens * CHARS_PER_TOKEN
        self._entries: list[_Entry[T]] = []
        self._chars = 0

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, item: T, chars: int, now_s: float) -> None:
        """`chars`: what `item` adds to the fill level (`window_chars`)."""
        self._entries.append(_Entry(item, now_s))
        self._chars += chars

    def full(self) -> bool:
        """No more records fit in this window."""
        return len(self._entries) >= self.max_window_records

    def filled(self) -> bool:
        """A full batch's worth is waiting."""
        return len(self._entries) >= self.limits.max_records or self._chars >= self.max_chars

    def ready(self, now_s: float) -> bool:
        """A batch should be cut now: a full batch is waiting, or the oldest waited long enough."""
        if not self._entries:
            return False
        return self.filled() or now_s - self._entries[0].arrived_s >= self.max_wait_s

    def cut_now(self, now_s: float, more_waiting: bool, flushing: bool = False) -> bool:
        """Whether to cut the window now: it is `ready` and either full or nothing more waits to
        join it (under backlog windows grow to `max_window_records`); a flush (shutdown) cuts
        whatever it holds."""
        if not self._entries:
            return False
        return flushing or (self.ready(now_s) and (self.full() or not more_waiting))

    def deadline(self) -> float | None:
        """When the oldest record's wait runs out (None when empty)."""
        return self._entries[0].arrived_s + self.max_wait_s if self._entries else None

    def take(self) -> list[T]:
        """Everything collected, in arrival order; the window starts empty again."""
        items = [e.item for e in self._entries]
        self._entries.clear()
        self._chars = 0
        return items


# -- from a window to work -------------------------------------------------------------------------


def collapse(items: list[Parsed]) -> Window:
    """Keep the latest record per id; earlier ones become `superseded` positions of it."""
    latest: dict[str, Document | Delete] = {}
    rejected: list[Rejected] = []
    for item in items:
        if isinstance(item, Rejected):
            rejected.append(item)
            continue
        previous = latest.pop(item.id, None)  # pop+insert keeps dict order = order of latest
        if previous is not None:
            item.superseded.extend(previous.superseded)
            item.superseded.append(previous.position)
            previous.superseded = []
        latest[item.id] = item
    docs = [i for i in latest.values() if isinstance(i, Document)]
    deletes = [i for i in latest.values() if isinstance(i, Delete)]
    return Window(docs, deletes, rejected)


def group_texts(docs: list[Document]) -> list[Unit]:
    """One unit per distinct text, in order of first appearance."""
    units: dict[str, Unit] = {}
    for doc in docs:
        unit = units.get(doc.text_sha256)
        if unit is None:
            unit = units[doc.text_sha256] = Unit(doc.text, doc.text_sha256, [])
            if doc.chunk is not None:
                unit.token_ids = doc.chunk.token_ids
        unit.docs.append(doc)
    return list(units.values())


def cut_work(todo: list[Unit], ready: Work, limits: BatchLimits) -> list[Work]:
    """Cut the units still to embed into batches; everything already resolved (cached vectors,
    skips, deletes, dead letters) rides with the first one, so no batch is cut half-empty."""
    works = [Work(units=b) for b in cut_batches(todo, lambda u: u.tokens, limits)]
    if not works:
        return [ready] if (ready.units or ready.skipped or ready.deletes or ready.rejected or ready.dropped) else []
    first = works[0]
    first.units = ready.units + first.units
    first.skipped, first.deletes, first.rejected = ready.skipped, ready.deletes, ready.rejected
    first.dropped = ready.dropped
    return works


# Sets aside what needs no forward pass: moves skipped documents, cached vectors and shared texts
# into `ready` and returns the units still to embed. The pipeline's (`resolver.Resolver`) does I/O
# (Redis, Milvus).
SetAside = Callable[[list[Unit], Work], list[Unit]]


def embed_everything(units: list[Unit], ready: Work) -> list[Unit]:
    """The resolver without a cache: every unit goes to the model."""
    return units


def plan(
    items: list[Parsed],
    limits: BatchLimits,
    resolve: SetAside = embed_everything,
    tokenize: Callable[[list[Unit]], None] = lambda units: None,
    split: Callable[[list[Document]], list[Document]] | None = None,
    current: Callable[[Parsed], bool] = lambda item: True,
) -> list[Work]:
    """The work for one window: drop records of partitions no longer ours (`current`: the next
    owner replays them), collapse ids, split records into chunks (with `split`), group texts,
    resolve, tokenise what is left (its token counts decide the cut), cut. Everything already
    resolved rides with the first work; a record's chunks may ride in several."""
    live = [i for i in items if current(i)]
    window = collapse(live)
    docs = window.documents if split is None else split(window.documents)
    units = group_texts(docs)
    ready = Work(deletes=window.deletes, rejected=window.rejected, dropped=len(items) - len(live))
    todo = resolve(units, ready)
    tokenize(todo)
    works = cut_work(todo, ready, limits)
    for work in works:
        work.stored = ready.stored
        # Fixed now: records dead-lettered later (embed or sink failures) leave `work.ids()`.
        work.registered = work.ids()
        work.claimed = [u for u in work.units if u.to_embed]
        work.chunks = [d for u in work.units for d in u.docs if d.chunk is not None]
    return works
