"""The values that flow through the pipeline. Plain dataclasses: no I/O, no behaviour beyond
what their names promise."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class TopicPartition:
    topic: str
    partition: int

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]"


@dataclass(frozen=True, slots=True)
class Position:
    """Where a record came from, and which ownership of its partition read it.

    `generation` changes every time the partition is (re)assigned to this process; work carrying
    an old generation is never committed (the partition's next owner replays it)."""

    tp: TopicPartition
    offset: int
    leader_epoch: int
    generation: int
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class RawRecord:
    """A record as Kafka delivered it: bytes only, decoded later by `parsing`."""

    position: Position
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(slots=True, kw_only=True)
class Item:
    """What every parsed record carries: its raw record, and the records of the same id it
    supersedes within a batching window (their offsets are done when it is)."""

    raw: RawRecord
    superseded: list[Position] = field(default_factory=list)

    @property
    def position(self) -> Position:
        return self.raw.position


@dataclass(slots=True, kw_only=True)
class Document(Item):
    """A valid record to embed and upsert."""

    id: str
    text: str
    text_sha256: str
    metadata: dict[str, Any]
    # The metadata as the JSON text Milvus stores, serialised once (`parsing.metadata_json`); None
    # where the sink must hand over the dict (nesting only `json` writes).
    metadata_json: str | None = None
    # dedupe.digest of what this record writes, computed once by the pipeline (it is both
    # compared with the Redis marker and written to Milvus).
    digest: str = ""
    # Set on the documents chunking makes of a record: which record, and where in its text.
    chunk: ChunkOf | None = None
    # Set on a record once it is cut into chunks (`chunking.attach_chunks`): its chunk documents.
    parts: list[Document] | None = field(default=None, repr=False)

    @property
    def record(self) -> Document:
        """The record this document settles: itself, or the record it is a chunk of."""
        return self.chunk.progress.record if self.chunk is not None else self


@dataclass(slots=True, kw_only=True)
class Chunked:
    """A record split into chunks, while they are in flight. Its chunks may ride in several
    works; the record settles (offsets, marker, surplus chunks deleted) with the last of them."""

    record: Document
    count: int
    left: int  # chunks not yet written or failed
    failure: tuple[str, str] | None = None  # (reason, error) of the first chunk that failed


@dataclass(frozen=True, slots=True)
class ChunkOf:
    progress: Chunked
    index: int
    char_start: int
    char_end: int
    # Its text's token ids, when the splitter had them (`chunking.Chunk.token_ids`).
    token_ids: list[int] | None = field(default=None, compare=False, repr=False)


@dataclass(slots=True, kw_only=True)
class Delete(Item):
    """A tombstone with a key: delete that id."""

    id: str


@dataclass(slots=True, kw_only=True)
class Rejected(Item):
    """A record that goes to the dead-letter topic, with a short reason code and a message."""

    reason: str
    error: str

    @classmethod
    def of(cls, item: Item, reason: str, error: str) -> Rejected:
        """`item`'s record as a dead letter (the records it superseded are done with it)."""
        return cls(raw=item.raw, reason=reason, error=error, superseded=list(item.superseded))


def fail(doc: Document, reason: str, error: str) -> list[Rejected]:
    """A document that cannot be embedded or written: its dead letter; or, for a chunk, none yet:
    its record is dead-lettered whole, with the first failure, once its last chunk has settled."""
    if doc.chunk is None:
        return [Rejected.of(doc, reason, error)]
    progress = doc.chunk.progress
    if progress.failure is None:
        progress.failure = (reason, f"chunk {doc.chunk.index} of {progress.count}: {error}")
    return []


Parsed = Document | Delete | Rejected
