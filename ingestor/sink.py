"""Milvus: upserts, deletes, reads (the collection's set-up is `collection`'s). What a collection of ours is, and
how pymilvus and gRPC exceptions become `RetriableError("milvus", …)` or
`DataError("sink_rejected", …)`, is `milvus_schema`'s.

Entities have a deterministic primary key (the record id) and are always written with `upsert`,
never `auto_id`, so a replay overwrites instead of duplicating.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ingestor import hooks, metrics
from ingestor.chunking import chunk_id
from ingestor.collection import CollectionSetup
from ingestor.config import MilvusSettings
from ingestor.errors import DataError, RetriableError, StartupError
from ingestor.expressions import field_in
from ingestor.lite import LiteLock, LiteServer, lite_file_busy
from ingestor.logs import adopt_pymilvus

# ChunkSpan and Entity are what callers hand the sink: the writer imports them from here.
from ingestor.milvus_schema import (  # noqa: F401
    MIN_SERVER_VERSION,
    ChunkSpan,
    Entity,
    classify,
    column_schema,
    create_schema,
    last_write_timestamp,
    refusal,
    same_width,
    schema_fields,
    skip_str_array_check,
    to_columns,
    to_rows,
    too_old,
    upsert_columns,
    verify,
)

log = logging.getLogger(__name__)

SEARCH_CHUNKS_PER_RECORD = 8  # nearest chunks fetched per record asked for, before grouping by record
SEARCH_MAX_HITS = 16_384  # Milvus's cap on one search's limit


@dataclass(frozen=True, slots=True)
class Stored:
    """What Milvus holds for one record: the content hash it was written with, and its entities."""

    content_hash: str
    chunks: int


def chunk_by_bytes(entities: Sequence[Entity], max_bytes: int) -> Iterator[list[Entity]]:
    """Split a write into calls under `max_bytes` (Milvus limits one request's size)."""
    chunk: list[Entity] = []
    size = 0
    for entity in entities:
        n = entity.approx_bytes()
        if chunk and size + n > max_bytes:
            yield chunk
            chunk, size = [], 0
        chunk.append(entity)
        size += n
    if chunk:
        yield chunk


def _best_per_record(hits: Sequence[Any], limit: int, chunked: bool) -> list[dict[str, Any]]:
    """Search hits (best first) as rows, with chunks the first of each record only, up to `limit`."""
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for hit in hits:
        entity = hit.get("entity", {})
        row = {
            "id": hit.get("id", entity.get("id")),
            "score": float(hit.get("distance", 0.0)),
            "text": entity.get("text", ""),
            "truncated": entity.get("truncated", False),
            "metadata": entity.get("metadata"),
        }
        if chunked:
            if entity.get("doc_id") in seen:
                continue
            seen.add(entity.get("doc_id"))
            row.update({k: entity.get(k) for k in ("doc_id", "chunk_index", "char_start", "char_end")})
        out.append(row)
        if len(out) == limit:
            break
    return out


def client_kwargs(settings: MilvusSettings, uri: str) -> dict[str, Any]:
    """MilvusClient's arguments for `uri`: credentials, database and TLS. pymilvus reads the TLS
    files itself: the server's certificate or its CA alone (one-way TLS), or with a client
    certificate and key (mutual TLS)."""
    kwargs: dict[str, Any] = {"uri": uri, "timeout": settings.timeout_s}
    if settings.token is not None:
        kwargs["token"] = settings.token.get_secret_value()
    if settings.user is not None and settings.password is not None:
        kwargs["user"], kwargs["password"] = settings.user, settings.password.get_secret_value()
    if settings.db_name:
        kwargs["db_name"] = settings.db_name
    if uri.startswith("https://"):
        kwargs["secure"] = True
        if settings.certfile is not None and settings.keyfile is not None and settings.ca_file is not None:
            kwargs.update(
                client_pem_path=str(settings.certfile),
                client_key_path=str(settings.keyfile),
                ca_pem_path=str(settings.ca_file),
            )
        elif settings.ca_file is not None:
            kwargs["server_pem_path"] = str(settings.ca_file)
        if settings.server_name:
            kwargs["server_name"] = settings.server_name
    return kwargs


class MilvusSink(CollectionSetup):
    """One Milvus collection. With a Milvus Lite file it also owns the Lite child serving it
    (`start_serving` starts it early, `close` stops it)."""

    def __init__(self, settings: MilvusSettings, max_write_bytes: int = 16 << 20, chunked: bool = False) -> None:
        """`chunked`: one entity per chunk of a record (`chunking.enabled`), with the chunk fields."""
        self.settings = settings
        self.chunked = chunked
        self.fields = schema_fields(chunked)
        self.max_write_bytes = max_write_bytes
        self.collection = settings.collection
        self.dimension = 0  # set by ensure_collection
        self.model_identity = ""
        self._lock = LiteLock(settings.uri) if settings.is_lite else None
        self._lite = LiteServer(settings.uri) if settings.lite_child else None
        self._client: Any = None
        self.server_version = ""
        self.namespace = ""
        self._schema: dict[str, Any] | None = None  # for column writes; None: rows
        self._covering = 0  # `covering_timestamp`
        self._field_types: dict[str, Any] = {}

    def start_serving(self) -> None:
        """Start the Milvus Lite child now, if there is one, so that its start overlaps the
        caller's (the model load); `connect` waits for it."""
        if self._lite is not None:
            self._lite.spawn()

    # -- start-up --------------------------------------------------------------------------------

    def connect(self) -> None:
        """Open the client and make a real call (creating a client is not a health check). Before
        the first success a refusal (login, certificate) is a StartupError: retrying cannot fix a
        setting."""
        from pymilvus import MilvusClient

        adopt_pymilvus()
        skip_str_array_check()
        if self._lock is not None and not self._lock.held:
            self._lock.acquire()
        kwargs = client_kwargs(self.settings, self._serving_uri())  # a Lite child that cannot start raises here
        try:
            self._client = MilvusClient(**kwargs)
            self._client.list_collections(timeout=self.settings.timeout_s)
            version = str(self._client.get_server_version(timeout=self.settings.timeout_s))
        except Exception as exc:
            self._client = None
            if self._lock is not None and lite_file_busy(exc):
                raise StartupError(self._lock.busy_message()) from exc
            reason = refusal(exc)
            if reason is not None and not self.server_version:
                raise StartupError(reason) from None
            raise classify(exc) from exc
        if too_old(version):
            raise StartupError(
                f"the Milvus server at {self.settings.uri} is {version}: ingestor writes with upsert, which Milvus "
                f"supports from {'.'.join(map(str, MIN_SERVER_VERSION))}; upgrade the server"
            )
        if version != self.server_version:
            log.info("connected to Milvus %s at %s", version, self.settings.uri)
            self.server_version = version

    def _serving_uri(self) -> str:
        """Where the client connects: the configured URI, or the Lite child serving its file."""
        if self._lite is None:
            return self.settings.uri
        was_serving = bool(self._lite.uri)
        try:
            uri = self._lite.start()  # again, if it died: a crash of Lite must not stop the daemon
        except StartupError as exc:
            if self._lock is not None and "lock" in str(exc).lower():
                raise StartupError(self._lock.busy_message()) from exc
            if was_serving:  # it served before: treat like any outage, retried with backoff
                raise RetriableError("milvus", str(exc)) from exc
            raise
        return uri

    def is_loaded(self) -> bool:
        """Whether the collection is loaded (a query needs it), asked without loading it."""
        state = self._call("load state", self._client.get_load_state, self.collection).get("state")
        return getattr(state, "name", str(state)) == "Loaded"

    def stored_model(self) -> str | None:
        """The model identity one stored entity was embedded with, or None when it holds none (or
        it is not loaded: reading it would load it)."""
        rows = self._call("query", self._client.query, self.collection, filter="", output_fields=["model"], limit=1)
        return str(rows[0]["model"]) if rows else None

    def collection_names(self) -> list[str]:
        return sorted(self._call("list", self._client.list_collections))

    # -- writes and reads ------------------------------------------------------------------------

    def _client_for_call(self) -> Any:
        if self._client is None:
            self.connect()
        return self._client

    def _call(self, op: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if self._client is None:
            self.connect()
        started = time.perf_counter()
        try:
            result = fn(*args, timeout=self.settings.timeout_s, **kwargs)
        except Exception as exc:
            error = classify(exc)
            if isinstance(error, RetriableError):
                metrics.DEPENDENCY_ERRORS.labels("milvus", type(exc).__name__).inc()
                if self._lite is not None and not self._lite.alive:
                    log.warning("the Milvus Lite child process is gone; restarting it")
                    self._client = None  # the next call starts it again, on a new port
            if any(m in str(exc).lower() for m in ("not loaded", "state 'released'", "call load()")):
                # A restarted Milvus server comes back with collections released.
                self._reload()
                error = RetriableError("milvus", f"collection {self.collection!r} was not loaded; reloaded it")
            raise error from exc
        metrics.WRITE_SECONDS.labels(op).observe(time.perf_counter() - started)
        return result

    def _reload(self) -> None:
        try:
            self._client.load_collection(self.collection, timeout=max(self.settings.timeout_s, 60))
        except Exception as exc:  # the retry of the original call will tell
            log.warning("reloading collection %r failed: %s", self.collection, exc)

    def upsert(self, entities: Sequence[Entity]) -> int:
        """Write entities; returns the number written. Raises RetriableError or DataError."""
        if self._client is None:
            self.connect()
        now_ms = int(time.time() * 1000)
        written = 0
        for chunk in chunk_by_bytes(entities, max_bytes=self.max_write_bytes):
            with metrics.stage("columns"):
                columns = hooks.current.columns(to_columns(chunk, self.settings.store_text, now_ms, self.chunked))
            with metrics.stage("upsert"):
                self._call("upsert", self._write_columns, columns)
            written += len(chunk)
            self._covering = self._last_timestamp()
        return written

    def _write_columns(self, columns: dict[str, list[Any]], timeout: float) -> None:
        if self._schema is None or not same_width(columns["vector"]):
            self._client.upsert(self.collection, to_rows(columns), timeout=timeout)
            return
        upsert_columns(self._client, self.collection, columns, self._schema, self._field_types, timeout)

    def delete(self, ids: Sequence[str]) -> None:
        """Delete entities by primary key (with chunking, chunk ids): a server applies that at
        once, where a delete by any other expression first waits for its next time tick."""
        if ids:
            before = self._last_timestamp()
            self._call("delete", self._client_for_call().delete, self.collection, filter=field_in("id", ids))
            after = self._last_timestamp()
            self._covering = after if after > before else 0

    def covering_timestamp(self) -> int:
        """A Milvus timestamp at or after every write this sink made, or 0 where none is known: a
        Milvus 2.3 server answers a delete with timestamp 0 (so only the next upsert covers it),
        and Milvus Lite gives none at all."""
        return self._covering

    def _last_timestamp(self) -> int:
        """The timestamp pymilvus keeps of this client's last write to the collection (the one a
        Session read waits for), 0 where there is none."""
        return last_write_timestamp(self._client_for_call(), self.collection, self.settings.db_name or "")

    def stored(self, record_ids: Sequence[str], guarantee: int | None = None) -> dict[str, Stored]:
        """What Milvus holds for each of these records that exists: its content hash and, with
        chunks, its chunk count, read from its first chunk (`writer` keeps every chunk of a record
        below that count). Strongly consistent; given a `guarantee` timestamp, everything written
        up to it (`consistency` says when that is enough)."""
        if not record_ids:
            return {}
        read: dict[str, Any] = {"consistency_level": "Strong"}
        if guarantee is not None:
            read = {"consistency_level": "Customized", "guarantee_timestamp": guarantee}
        if not self.chunked:
            return {r["id"]: Stored(r["content_hash"], 1) for r in self.get(record_ids, ["id", "content_hash"], **read)}
        first = {chunk_id(i, 0): i for i in record_ids}
        rows = self.get(list(first), ["id", "content_hash", "chunk_count"], **read)
        return {first[r["id"]]: Stored(r["content_hash"], int(r["chunk_count"])) for r in rows}

    def content_hashes(self, record_ids: Sequence[str]) -> dict[str, str]:
        """The content_hash Milvus holds for each of these records that exists (strongly
        consistent)."""
        return {i: s.content_hash for i, s in self.stored(record_ids).items()}

    def get(
        self, ids: Sequence[str], fields: Sequence[str], consistency_level: str = "Strong", **read: Any
    ) -> list[dict[str, Any]]:
        """The entities of exactly `ids` that exist (strongly consistent unless told otherwise)."""
        if not ids:
            return []
        return list(
            self._call(
                "query",
                self._client_for_call().query,
                self.collection,
                filter=field_in("id", ids),
                output_fields=list(fields),
                consistency_level=consistency_level,
                **read,
            )
        )

    def exists(self) -> bool:
        if self._client is None:
            self.connect()
        return bool(self._call("has", self._client.has_collection, self.collection))

    def count(self) -> int:
        """Entities in the collection (0 when there is none), strongly consistent."""
        if not self.exists():
            return 0
        rows = self._call(
            "query",
            self._client.query,
            self.collection,
            filter="",
            output_fields=["count(*)"],
            consistency_level="Strong",
        )
        return int(rows[0]["count(*)"])

    def search(
        self, vector: Sequence[float], limit: int, filter: str = "", consistency_level: str = "Strong"
    ) -> list[dict[str, Any]]:
        """The `limit` nearest records, best first, among the entities `filter` (an expression of
        `expressions`) keeps. With chunks, one hit per record: its best chunk, with the chunk's span
        (`char_start`, `char_end`) in the record's text and the record's id as `doc_id`."""
        if self._client is None:
            self.connect()
        fields = ["id", "text", "truncated", "metadata"] + (
            ["doc_id", "chunk_index", "char_start", "char_end"] if self.chunked else []
        )
        # A record's chunks may crowd the nearest hits: ask for more, keep each record's best, and
        # ask for more again while too few records came back from a full page.
        wanted = min(limit * SEARCH_CHUNKS_PER_RECORD, SEARCH_MAX_HITS) if self.chunked else limit
        while True:
            hits = self._call(
                "search",
                self._client.search,
                self.collection,
                data=[list(map(float, vector))],
                limit=wanted,
                filter=filter,
                output_fields=fields,
                consistency_level=consistency_level,
                search_params={"metric_type": self.settings.metric_type},
            )[0]
            out = _best_per_record(hits, limit, self.chunked)
            if len(out) == limit or len(hits) < wanted or wanted >= SEARCH_MAX_HITS:
                return out
            wanted = min(wanted * 4, SEARCH_MAX_HITS)

    def ping(self) -> str:
        """A real call: "" when Milvus answered, else why not (what /readyz says)."""
        try:
            if self._client is None:
                self.connect()
            self._call("ping", self._client.has_collection, self.collection)
            return ""
        except (RetriableError, DataError) as exc:
            return str(exc)

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except Exception:  # closing a dead connection must not mask the real outcome
                pass
            self._client = None
        if self._lite is not None:
            self._lite.stop()
        if self._lock is not None:
            self._lock.release()
