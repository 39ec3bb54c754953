"""Isolating the records that make a batch operation fail. Pure logic over an injected call.

When a call over a batch fails with a *data* error (one text the model cannot encode, one entity
Milvus rejects), the batch is split in halves and each half retried, down to single records; only
the records that still fail alone are returned as failures. Retriable errors are not handled here:
they propagate, and the caller retries the whole batch later.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


@dataclass(slots=True)
class Isolated(Generic[T, R]):
    results: list[tuple[list[T], R]] = field(default_factory=list)  # (sub-batch, its result)
    failures: list[tuple[T, Exception]] = field(default_factory=list)


def run_isolating(
    items: Sequence[T],
    call: Callable[[list[T]], R],
    splittable: Callable[[Exception], bool],
) -> Isolated[T, R]:
    """Run `call` on `items`; on a splittable error, bisect until single items fail alone."""
    out: Isolated[T, R] = Isolated()
    stack: list[list[T]] = [list(items)] if items else []
    while stack:
        batch = stack.pop()
        try:
            out.results.append((batch, call(batch)))
        except Exception as exc:
            if not splittable(exc):
                raise
            if len(batch) == 1:
                out.failures.append((batch[0], exc))
            else:
                mid = len(batch) // 2
                # Second half pushed first so the first half runs first: keeps input order.
                stack.append(batch[mid:])
                stack.append(batch[:mid])
    return out
