"""The collection the query side searches: opened (its identity checked against ours, nothing
written) at start, or at the first search after `ingestor run` created it; and the search itself,
one result per record, in `/search`'s shape."""

from __future__ import annotations

import logging
import threading
from typing import Any

from ingestor.errors import DataError, RetriableError, StartupError
from ingestor.identity import ModelIdentity
from ingestor.serve.errors import ApiError
from ingestor.sink import MilvusSink

log = logging.getLogger(__name__)


class SearchIndex:
    def __init__(
        self, sink: MilvusSink, identity: ModelIdentity, model_identity: str, consistency_level: str, store_text: bool
    ) -> None:
        self.sink = sink
        self.identity = identity
        self.model_identity = model_identity
        self.consistency_level = consistency_level
        self.store_text = store_text
        self.opened = False
        self.refused = ""  # why the collection cannot be searched with our identity, once found
        self._lock = threading.Lock()

    @property
    def chunked(self) -> bool:
        return self.sink.chunked

    def open(self) -> bool:
        """Whether the collection exists and takes our queries. StartupError when it was written
        with another identity; RetriableError while Milvus does not answer."""
        with self._lock:
            if not self.opened:
                self.opened = self.sink.open_existing(self.identity.dimension, self.model_identity, self.identity)
            return self.opened

    def _ready(self) -> None:
        if self.refused:
            raise ApiError(503, "identity_mismatch", "this server cannot search the collection", self.refused)
        try:
            if self.open():
                return
        except StartupError as exc:  # found after start: refuse every search, say it once
            self.refused = str(exc)
            log.error("%s", exc)
            raise ApiError(503, "identity_mismatch", "this server cannot search the collection", str(exc)) from None
        except RetriableError as exc:
            raise ApiError(503, "milvus_unavailable", "Milvus does not answer", str(exc)) from None
        raise ApiError(
            503,
            "collection_missing",
            f"there is no collection {self.sink.collection!r} yet",
            "`ingestor run` creates it with its first write",
        )

    def search(self, vector: Any, k: int, expression: str) -> list[dict[str, Any]]:
        """The `k` best records for `vector` among those `expression` keeps (blocking)."""
        self._ready()
        try:
            hits = self.sink.search(vector, k, expression, self.consistency_level)
        except RetriableError as exc:
            raise ApiError(503, "milvus_unavailable", "Milvus does not answer", str(exc)) from None
        except DataError as exc:  # an expression Milvus refuses: ours to fix, not the caller's
            raise ApiError(500, "search_refused", "Milvus refused the search", str(exc)) from None
        return [self._result(h) for h in hits]

    def _result(self, hit: dict[str, Any]) -> dict[str, Any]:
        chunked = self.chunked
        out = {
            "id": hit["doc_id"] if chunked else hit["id"],
            "score": hit["score"],
            "text": hit["text"] if self.store_text else None,
            "metadata": hit.get("metadata") or {},
            "chunk_index": hit.get("chunk_index") if chunked else None,
            "char_start": hit.get("char_start") if chunked else None,
            "char_end": hit.get("char_end") if chunked else None,
        }
        return out
