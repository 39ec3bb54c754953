"""Deduplication, pure: what identifies a text's vector and a record's last write, and when work
can be skipped or shared.

- **Vectors** are cached by model identity and the text's SHA-256 (`embedding_key`), with the flag
  saying whether the model cut the text (`pack_vector`).
- **Markers** record, per id, the content hash of what was last written (`content_hash`: text,
  metadata, model, storage options) under the collection's incarnation (`marker_key`), so a model
  change or a re-created collection starts cold instead of inheriting stale claims.
- **The skip rule** (`unchanged`): a record is skipped only when its marker matches *and* Milvus
  holds an entity with that same content hash (read so that it sees every write before it:
  `consistency`), and no earlier, unwritten work carries the same id. A marker alone can cost a
  query, never a wrong skip.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from ingestor.parsing import json_bytes
from ingestor.records import Document


def _h(text: str, n: int = 32) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:n]


@lru_cache(maxsize=64)
def _scope(name: str) -> str:
    """A model identity's or a namespace's short hash: a few per process, asked once per key."""
    return _h(name, 16)


def embedding_key(prefix: str, model_identity: str, text_sha256: str) -> str:
    return f"{prefix}:emb:{_scope(model_identity)}:{text_sha256}"


def marker_key(prefix: str, namespace: str, record_id: str) -> str:
    return f"{prefix}:doc:{_scope(namespace)}:{_h(record_id)}"


@dataclass(frozen=True, slots=True)
class CachedVector:
    """A text's vector, and whether the model cut the text to compute it (the entity says so)."""

    vector: np.ndarray
    truncated: bool


def pack_vector(vector: np.ndarray, truncated: bool) -> bytes:
    """float32 bytes, then one flag byte (a value of any other length is a miss: older entries)."""
    return np.asarray(vector, dtype=np.float32).tobytes() + (b"\x01" if truncated else b"\x00")


def unpack_vector(raw: bytes | None, dimension: int) -> CachedVector | None:
    if raw is None or len(raw) != dimension * 4 + 1:
        return None
    return CachedVector(np.frombuffer(raw, dtype=np.float32, count=dimension), raw[-1:] == b"\x01")


def content_hash(
    model_identity: str, text_sha256: str, metadata: Mapping[str, Any], store_text: bool, layout: str = ""
) -> str:
    """What a marker records: everything that determines the entities we wrote for an id (with
    chunking, `layout` names the chunk settings; empty otherwise, which keeps older hashes)."""
    parts: list[Any] = [model_identity, text_sha256, metadata, store_text]
    if layout:
        parts.append(layout)
    return hashlib.sha256(json_bytes(parts, sort_keys=True)).hexdigest()


@dataclass(frozen=True, slots=True)
class Identity:
    """What besides a record's own content decides what is written for it."""

    model: str
    store_text: bool
    layout: str = ""  # ChunkingSettings.layout

    def digest(self, doc: Document) -> str:
        """`doc`'s content hash, computed once (compared with the marker and written to Milvus)."""
        if not doc.digest:
            doc.digest = content_hash(self.model, doc.text_sha256, doc.metadata, self.store_text, self.layout)
        return doc.digest


def unchanged(
    docs: Sequence[Document],
    markers: Sequence[str | None],
    busy: Callable[[list[str]], set[str]],
    held: Callable[[list[str]], Mapping[str, str]],
) -> set[int]:
    """The documents (by `id()`) to skip: their marker equals their digest, no earlier unwritten
    work carries their id (`busy`: Milvus does not hold yet what that work will write), and Milvus
    holds that same content hash (`held`). Both are asked only for the candidates."""
    candidates = [d for d, m in zip(docs, markers) if m is not None and m == d.digest]
    if candidates:
        taken = busy([d.id for d in candidates])
        candidates = [d for d in candidates if d.id not in taken]
    if not candidates:
        return set()
    stored = held([d.id for d in candidates])
    return {id(d) for d in candidates if stored.get(d.id) == d.digest}
