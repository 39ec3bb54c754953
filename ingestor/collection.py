"""The collection's set-up at start: create it (or join the one another worker created at the same
moment), build its index, load it, and check that it takes our entities and was written with our
model identity (adopting one from before identities were recorded). `MilvusSink` has these
methods; creating and refusing are here, reads and writes in `sink`."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from ingestor.config import MilvusSettings
from ingestor.errors import StartupError
from ingestor.identity import PROPERTY, ModelIdentity, UnreadableIdentity, from_properties, mismatch
from ingestor.milvus_schema import classify, column_schema, create_schema, verify

log = logging.getLogger("ingestor.sink")  # the set-up is the sink's, and its log lines say so

_INCARNATION_PREFIX = "ingestor:v1:"


class CollectionSetup:
    """What `MilvusSink` sets up its collection with; the attributes are the sink's."""

    settings: MilvusSettings
    collection: str
    fields: Any
    chunked: bool
    dimension: int
    model_identity: str
    namespace: str
    _client: Any
    _schema: dict[str, Any] | None
    _field_types: dict[str, Any]

    def _call(self, op: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError  # the sink's: a call translated and timed

    def exists(self) -> bool:
        raise NotImplementedError  # the sink's

    def ensure_collection(self, dimension: int, model_identity: str, identity: ModelIdentity | None = None) -> None:
        """Create the collection for vectors of `dimension` if missing, recording `identity` in it;
        refuse to start if an existing one does not fit, or was written with another identity (one
        from before identities were recorded is adopted: ours is recorded in it)."""
        self.dimension, self.model_identity = dimension, model_identity
        try:
            if not self._client.has_collection(self.collection, timeout=self.settings.timeout_s):
                self._create_or_join(identity)
            info = self._client.describe_collection(self.collection, timeout=self.settings.timeout_s)
            if identity is not None and self._check_identity(info, identity) is None:
                self._adopt(info, identity)
            self._ensure_index()
            self._client.load_collection(self.collection, timeout=max(self.settings.timeout_s, 60))
        except StartupError:
            raise
        except Exception as exc:
            raise classify(exc) from exc
        self.verify(info, dimension, model_identity)
        self._open(info)

    def open_existing(self, dimension: int, model_identity: str, identity: ModelIdentity | None = None) -> bool:
        """For the read commands and `ingestor serve`: use the collection if it exists and fits
        (StartupError if it does not, or was written with another `identity`), never creating it
        nor writing to it. False when there is none."""
        self.dimension, self.model_identity = dimension, model_identity
        info = self.describe_existing()
        if info is None:
            return False
        if identity is not None and self._check_identity(info, identity) is None:
            log.info(
                "Milvus collection %r records no model identity yet (made before identities were recorded): "
                "reading it as %s; the next `ingestor run` records it",
                self.collection,
                identity.describe(),
            )
        self.verify(info, dimension, model_identity)
        self._call("load", self._client.load_collection, self.collection)
        self._open(info)
        return True

    def describe_existing(self) -> dict[str, Any] | None:
        """The collection's description, or None when there is none; creates nothing."""
        if not self.exists():
            return None
        return dict(self._call("describe", self._client.describe_collection, self.collection))

    def verify(self, info: dict[str, Any], dimension: int, model_identity: str) -> None:
        """StartupError unless the described collection takes this model's entities (`run`'s check)."""
        verify(info, self.fields, self.chunked, dimension, model_identity, self._where())

    def _where(self) -> str:
        return f"{self.collection!r} at {self.settings.uri}"

    def _check_identity(self, info: dict[str, Any], identity: ModelIdentity) -> ModelIdentity | None:
        """The identity the described collection records (None: none yet); StartupError when it is
        not `identity`."""
        try:
            stored = from_properties(info.get("properties"))
        except UnreadableIdentity as exc:
            raise StartupError(f"Milvus collection {self._where()}: {exc}. Use another milvus.collection") from None
        if stored is not None:
            reason = mismatch(stored, identity, self._where())
            if reason is not None:
                try:  # what else does not fit (fields, dimension) says more of what to change
                    self.verify(info, self.dimension, self.model_identity)
                except StartupError as exc:
                    reason = f"{reason}. {exc}"
                raise StartupError(reason)
        return stored

    def _adopt(self, info: dict[str, Any], identity: ModelIdentity) -> None:
        """Record `identity` in a collection from before identities were recorded, once its fields
        are known to fit."""
        self.verify(info, self.dimension, self.model_identity)
        self._client.alter_collection_properties(
            self.collection, {PROPERTY: identity.to_json()}, timeout=self.settings.timeout_s
        )
        log.info(
            "Milvus collection %r recorded no model identity (made before identities were recorded): adopted it as %s",
            self.collection,
            identity.describe(),
        )

    def _open(self, info: dict[str, Any]) -> None:
        self._schema, self._field_types = self._column_schema()
        description = info.get("description") or ""
        incarnation = description.split(_INCARNATION_PREFIX, 1)[1] if _INCARNATION_PREFIX in description else "external"
        self.namespace = f"{self.settings.uri}|{self.settings.db_name or ''}|{self.collection}|{incarnation}"

    def _column_schema(self) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        """The raw schema for column writes, or None to write rows (a collection with fields that
        are not ours, or a pymilvus whose column upsert is not there)."""
        schema, types = column_schema(self._client, self.collection, self.settings.timeout_s)
        return (schema, types) if schema is not None and set(self.fields) <= set(types) else (None, {})

    def _create_or_join(self, identity: ModelIdentity | None = None) -> None:
        """Create the collection; if another worker created it at the same moment, use theirs.

        Workers racing to create it send different descriptions (each its own incarnation id), so
        the server refuses all but the first ("create duplicate collection with different
        parameters"). That refusal is not an outage: what exists now is checked like any existing
        collection."""
        mine = f"{_INCARNATION_PREFIX}{uuid.uuid4().hex}"
        try:
            self._create(mine, identity)
        except Exception:
            if not self._created_meanwhile():
                raise
            info = self._client.describe_collection(self.collection, timeout=self.settings.timeout_s)
            if info.get("description") == mine:
                # Ours, but index or load failed after the create: _ensure_index and the load finish it.
                log.info("Milvus collection %r was created; finishing its set-up", self.collection)
            else:
                log.info("Milvus collection %r was created by another worker meanwhile; using it", self.collection)

    def _created_meanwhile(self, checks: int = 10, pause_s: float = 0.2) -> bool:
        """Whether another worker's collection exists now. Milvus Lite refuses a second create
        while the first is still being made ("File exists"), before the collection shows; so look
        a few times before taking the refusal for an outage."""
        for attempt in range(checks):
            if self._client.has_collection(self.collection, timeout=self.settings.timeout_s):
                return True
            if attempt + 1 < checks:
                time.sleep(pause_s)
        return False

    def _ensure_index(self) -> None:
        """Build the vector index where the collection has none: a create that failed after the
        collection existed, or a worker that joined a race before the creator built it. The same
        index asked for twice is not an error to a Milvus server; Milvus Lite refuses the second
        ("index already exists"), which the worker that lost that race takes as done."""
        if self._has_index():
            return
        try:
            self._client.create_index(self.collection, self._index_params(), timeout=self.settings.timeout_s)
        except Exception:
            if self._has_index():  # built meanwhile by the worker that created the collection
                return
            raise
        log.info("built the vector index of Milvus collection %r", self.collection)

    def _has_index(self) -> bool:
        return bool(self._client.list_indexes(self.collection, field_name="vector", timeout=self.settings.timeout_s))

    def _index_params(self) -> Any:
        index = self._client.prepare_index_params()
        index.add_index(
            "vector",
            index_type=self.settings.index_type,
            metric_type=self.settings.metric_type,
            params=self.settings.index_params,
        )
        return index

    def _create(self, description: str, identity: ModelIdentity | None) -> None:
        self._client.create_collection(
            self.collection,
            schema=create_schema(self.fields, self.dimension, description),
            index_params=self._index_params(),
            consistency_level="Strong",
            timeout=self.settings.timeout_s,
            properties={PROPERTY: identity.to_json()} if identity is not None else None,
        )
        log.info(
            "created Milvus collection %r (dimension %d%s)",
            self.collection,
            self.dimension,
            ", one entity per chunk" if self.chunked else "",
        )
