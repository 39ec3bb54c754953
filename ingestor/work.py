"""What flows from the batcher through the model to the writer: a window's distinct texts
(`Unit`) and the work cut from them (`Work`), and how waiting works are written as one. Plain
values: the stages that fill them in are named on each field."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ingestor.records import Delete, Document, Rejected


@dataclass(slots=True)
class Unit:
    """One distinct text of a batch and the documents that carry it."""

    text: str
    text_sha256: str
    docs: list[Document]
    tokens: int = 0  # after truncation; set by the tokenizer before the cut
    truncated: bool = False
    vector: np.ndarray | None = None
    from_cache: bool = False
    encoding: dict[str, list[int]] | None = None
    token_ids: list[int] | None = None  # known from chunking: tokenising turns them into `encoding`
    # The same text in earlier work that is still being embedded: its forward pass serves this one.
    shares: Unit | None = None

    @property
    def to_embed(self) -> bool:
        """Still needs a forward pass of its own."""
        return self.vector is None and self.shares is None


@dataclass(slots=True)
class Work:
    """What flows from the batcher through the model to the writer: filled in by `batching.plan`
    (the resolver's part in `ready`), given vectors by `model_stage`, written by `writer`."""

    units: list[Unit] = field(default_factory=list)
    skipped: list[Document] = field(default_factory=list)
    deletes: list[Delete] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    features: dict[str, Any] | None = None  # padded tensors of the units to embed, in order
    registered: list[str] = field(default_factory=list)  # ids counted as in flight for this work
    # Chunks of records it writes (fixed at planning: one that fails leaves its unit, not this list).
    chunks: list[Document] = field(default_factory=list)
    claimed: list[Unit] = field(default_factory=list)  # units it embeds, which later work may share
    # With chunking: the chunk count Milvus held for each record of its window when it was planned
    # (the resolver's read; one dict shared by the window's works). What a write must trim.
    stored: dict[str, int] = field(default_factory=dict)
    dropped: int = 0  # records of its window whose partition was revoked while they waited

    @property
    def padded_tokens(self) -> int:
        todo = [u.tokens for u in self.units if u.to_embed]
        return len(todo) * max(todo, default=0)

    def ids(self) -> list[str]:
        """Ids of the records it settles for certain. A chunked record's id is not among them: its
        chunks may ride in several works, and it settles with the last (`writer.last_chunks`)."""
        docs = [d.id for u in self.units for d in u.docs if d.chunk is None]
        return docs + [d.id for d in self.skipped] + [d.id for d in self.deletes]

    def records(self) -> dict[str, int]:
        """Every record it carries, by id, with the `id()` of the record object: the works of one
        window share a chunked record's object; another window's version of it is another one."""
        out = {d.record.id: id(d.record) for u in self.units for d in u.docs}
        out.update((d.record.id, id(d.record)) for d in self.chunks)
        out.update((d.id, id(d)) for d in self.skipped)
        out.update((d.id, id(d)) for d in self.deletes)
        return out


def merge(works: list[Work]) -> Work:
    """Works written as one (one upsert for all): each list joined, in order. Only for works that
    hold no two versions of one record (`writer_groups`)."""
    if len(works) == 1:
        return works[0]
    out = Work()
    for w in works:
        out.units += w.units
        out.skipped += w.skipped
        out.deletes += w.deletes
        out.rejected += w.rejected
        out.registered += w.registered
        out.chunks += w.chunks
        out.claimed += w.claimed
        out.stored = {**out.stored, **w.stored}
        out.dropped += w.dropped
    return out


def joinable(group: dict[str, int], work: Work) -> dict[str, int] | None:
    """The records of `group` and `work` together, or None when `work` holds another version of a
    record the group holds (written together, one call could not say which version lands)."""
    records = work.records()
    if any(group.get(i, obj) != obj for i, obj in records.items()):
        return None
    return {**group, **records}


@dataclass(slots=True)
class Window:
    documents: list[Document]
    deletes: list[Delete]
    rejected: list[Rejected]
