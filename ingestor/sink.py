"""Milvus: the collection, upserts, deletes, reads. The one boundary where pymilvus and gRPC
exceptions become `RetriableError("milvus", …)` or `DataError("sink_rejected", …)`.

Entities have a deterministic primary key (the record id) and are always written with `upsert`,
never `auto_id`, so a replay overwrites instead of duplicating.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ingestor import hooks, metrics
from ingestor.config import MilvusSettings
from ingestor.errors import DataError, Reason, RetriableError, StartupError, chain
from ingestor.chunking import chunk_id
from ingestor.expressions import field_in
from ingestor.lite import LiteServer
from ingestor.logs import adopt_pymilvus
from ingestor.parsing import json_bytes

log = logging.getLogger(__name__)

TEXT_MAX_BYTES = 65_535
_INCARNATION_PREFIX = "ingestor:v1:"

# name -> (pymilvus DataType name, params) for every field we own; `vector` gets its dim at run time.
SCHEMA_FIELDS: dict[str, tuple[str, dict[str, Any]]] = {
    "id": ("VARCHAR", {"max_length": 512}),
    "vector": ("FLOAT_VECTOR", {}),
    "text": ("VARCHAR", {"max_length": TEXT_MAX_BYTES}),
    "metadata": ("JSON", {}),
    "content_hash": ("VARCHAR", {"max_length": 64}),
    "model": ("VARCHAR", {"max_length": 512}),
    "truncated": ("BOOL", {}),
    "kafka_topic": ("VARCHAR", {"max_length": 255}),
    "kafka_partition": ("INT32", {}),
    "kafka_offset": ("INT64", {}),
    "ingested_at": ("INT64", {}),
}

# With chunking, one entity per chunk: `id` is `<record id>#<chunk index>` (so a little longer than
# any record id), and these say which record and where in its text.
CHUNK_FIELDS: dict[str, tuple[str, dict[str, Any]]] = {
    "doc_id": ("VARCHAR", {"max_length": 512}),
    "chunk_index": ("INT32", {}),
    "chunk_count": ("INT32", {}),
    "char_start": ("INT64", {}),
    "char_end": ("INT64", {}),
}
CHUNK_ID_MAX_BYTES = 512 + 16
SEARCH_CHUNKS_PER_RECORD = 8  # nearest chunks fetched per record asked for, before grouping by record
SEARCH_MAX_HITS = 16_384  # Milvus's cap on one search's limit


def schema_fields(chunked: bool) -> dict[str, tuple[str, dict[str, Any]]]:
    """Every field of a collection of ours, in order."""
    if not chunked:
        return SCHEMA_FIELDS
    return {**SCHEMA_FIELDS, "id": ("VARCHAR", {"max_length": CHUNK_ID_MAX_BYTES}), **CHUNK_FIELDS}

# What a Milvus server says of one bad row when its error code does not (2.3.5 sends a dimension
# mismatch as code 65535, "the length(3) of float data should divide the dim(4)").
_DATA_HINTS = ("should divide the dim", "dimension", "exceeds max length", "invalid parameter", "type mismatch")

_RETRIABLE_HINTS = (
    "deny to write", "quota", "rate limit", "ratelimit", "timeout", "timed out", "deadline",
    "unavailable", "connect", "connection", "not ready", "service", "closed", "broken pipe",
    "server is shutting", "no available", "eof",
)


def refusal(exc: BaseException) -> str | None:
    """What to fix when Milvus refused us for good, or None for an outage: wrong credentials or an
    untrusted certificate do not heal by retrying. pymilvus wraps both in a generic "Fail connecting"
    error; the gRPC status underneath says which. Names the setting, never its value."""
    import grpc

    for seen in chain(exc):
        code = seen.code() if isinstance(seen, grpc.RpcError) and callable(getattr(seen, "code", None)) else None
        text = str(seen)
        if code == grpc.StatusCode.UNAUTHENTICATED or "auth check failure" in text:
            return ("milvus refused the login: check milvus.user and milvus.password (or milvus.password_file), "
                    "or milvus.token (or milvus.token_file)")
        if code == grpc.StatusCode.PERMISSION_DENIED:
            return "milvus denied the request: grant the milvus.user a role with privileges on the collection"
        if "CERTIFICATE_VERIFY_FAIL" in text:
            return "the Milvus server's certificate is not trusted: check milvus.ca_file (and milvus.server_name)"
    return None


def classify(exc: BaseException) -> RetriableError | DataError:
    """Map a pymilvus/gRPC failure to the delivery contract. Unknown errors count as retriable:
    a stalled batch is visible and heals; a wrongly dead-lettered one is silent damage. A refusal
    is retriable too once running (credentials may be rotated back), with what to fix as its text."""
    import grpc
    from pymilvus.exceptions import (
        DataNotMatchException, DataTypeNotMatchException, MilvusException, MilvusUnavailableException,
        ParamError, PrimaryKeyException,
    )

    reason = refusal(exc)
    if reason is not None:
        return RetriableError("milvus", reason.removeprefix("milvus "))
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, grpc.RpcError):
        return RetriableError("milvus", text)
    if isinstance(exc, (ParamError, DataNotMatchException, DataTypeNotMatchException, PrimaryKeyException)):
        return DataError(Reason.SINK_REJECTED.value, text)
    if isinstance(exc, MilvusUnavailableException):
        return RetriableError("milvus", text)
    if isinstance(exc, MilvusException):
        message = (exc.message or "").lower()
        if exc.retriable or exc.code in (2, 8, 9) or any(h in message for h in _RETRIABLE_HINTS):
            return RetriableError("milvus", text)
        if exc.is_input_error or exc.code in (5, 6, 1100) or any(h in message for h in _DATA_HINTS):
            return DataError(Reason.SINK_REJECTED.value, text)
    if isinstance(exc, (ConnectionError, TimeoutError, OSError)):
        return RetriableError("milvus", text)
    return RetriableError("milvus", text)


@dataclass(frozen=True, slots=True)
class Stored:
    """What Milvus holds for one record: the content hash it was written with, and its entities."""

    content_hash: str
    chunks: int


@dataclass(frozen=True, slots=True)
class ChunkSpan:
    """Where a chunk entity lies in its record."""

    doc_id: str
    index: int
    count: int
    char_start: int
    char_end: int


@dataclass(frozen=True, slots=True)
class Entity:
    id: str
    vector: Sequence[float]
    text: str
    metadata: dict[str, Any]
    content_hash: str
    model: str
    truncated: bool
    kafka_topic: str
    kafka_partition: int
    kafka_offset: int
    chunk: ChunkSpan | None = None
    metadata_json: str | None = None  # `metadata` serialised already (`records.Document.metadata_json`)

    def approx_bytes(self) -> int:
        meta = self.metadata_json.encode("utf-8") if self.metadata_json is not None else json_bytes(self.metadata)
        return 4 * len(self.vector) + len(self.text.encode("utf-8")) + len(meta) + 256


def to_columns(entities: Sequence[Entity], store_text: bool, now_ms: int, chunked: bool = False) -> dict[str, list[Any]]:
    """One list per field, in schema order: pymilvus packs a column in one call, where a row
    costs it a type lookup per field (37 vs 12 µs of GIL per row, measured)."""
    columns = {
        "id": [e.id for e in entities],
        "vector": _vector_lists(entities),
        "text": [clip_utf8(e.text, TEXT_MAX_BYTES) if store_text else "" for e in entities],
        # JSON text where it was serialised already: pymilvus then only validates it.
        "metadata": [e.metadata if e.metadata_json is None else e.metadata_json for e in entities],
        "content_hash": [e.content_hash for e in entities],
        "model": [e.model for e in entities],
        "truncated": [e.truncated for e in entities],
        "kafka_topic": [e.kafka_topic for e in entities],
        "kafka_partition": [e.kafka_partition for e in entities],
        "kafka_offset": [e.kafka_offset for e in entities],
        "ingested_at": [now_ms] * len(entities),
    }
    if chunked:
        spans = [e.chunk for e in entities]
        if any(span is None for span in spans):
            raise ValueError("a collection of chunks takes chunk entities only")
        columns.update({
            "doc_id": [s.doc_id for s in spans], "chunk_index": [s.index for s in spans],
            "chunk_count": [s.count for s in spans], "char_start": [s.char_start for s in spans],
            "char_end": [s.char_end for s in spans],
        })
    return columns


def _vector_lists(entities: Sequence[Entity]) -> list[list[float]]:
    """Python float lists (what pymilvus packs), made in one C call where the widths agree."""
    vectors = [np.asarray(e.vector, dtype=np.float32) for e in entities]
    if vectors and all(v.shape == vectors[0].shape for v in vectors):
        return np.stack(vectors).tolist()
    return [v.tolist() for v in vectors]


def to_rows(columns: dict[str, list[Any]]) -> list[dict[str, Any]]:
    names = list(columns)
    return [dict(zip(names, values)) for values in zip(*columns.values())]


def same_width(vectors: list[list[float]]) -> bool:
    """A column write flattens the vectors and takes the width from the first: vectors of mixed
    widths would shift into each other's rows, so those go row by row (Milvus then judges each)."""
    return len({len(v) for v in vectors}) <= 1


def clip_utf8(text: str, max_bytes: int) -> str:
    """At most `max_bytes` of UTF-8, cut on a character boundary (unencodable characters → '?')."""
    data = text.encode("utf-8", "replace")
    if len(data) <= max_bytes:
        return data.decode("utf-8")
    return data[:max_bytes].decode("utf-8", "ignore")


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


MIN_SERVER_VERSION = (2, 3, 0)  # the first Milvus with upsert


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
            kwargs.update(client_pem_path=str(settings.certfile), client_key_path=str(settings.keyfile),
                          ca_pem_path=str(settings.ca_file))
        elif settings.ca_file is not None:
            kwargs["server_pem_path"] = str(settings.ca_file)
        if settings.server_name:
            kwargs["server_name"] = settings.server_name
    return kwargs


def too_old(version: str) -> bool:
    """Whether a Milvus server reporting `version` (`v2.3.5`, `2.4.0-rc1`, `milvus_lite-3.2.2`)
    predates upsert. Milvus Lite and versions we cannot read are given the benefit of the doubt:
    their first upsert would say so."""
    if version.startswith("milvus_lite"):
        return False
    found = re.match(r"v?(\d+)\.(\d+)\.(\d+)", version.strip())
    return found is not None and tuple(int(x) for x in found.groups()) < MIN_SERVER_VERSION


def _lite_file_busy(exc: BaseException) -> bool:
    """Milvus Lite's own lock (a process that is not ingestor holds the file)."""
    if any(type(seen).__name__ == "DataDirLockedError" or "holds the lock" in str(seen) for seen in chain(exc)):
        return True
    return "open local milvus failed" in str(exc).lower()


class LiteLock:
    """Milvus Lite serves one process per data file; a second one must refuse to start clearly."""

    def __init__(self, db_path: str) -> None:
        self.path = Path(db_path).expanduser().resolve()
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StartupError(self.busy_message()) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def busy_message(self) -> str:
        return (
            f"another process is using the Milvus Lite file {self.path}. Milvus Lite admits one process "
            "per file: for several workers run a Milvus server (or serve the file to all of them with "
            "`python -m ingestor.lite --data-dir DIR --port 19540`) and set milvus.uri to its http:// address."
        )

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class MilvusSink:
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
        from pymilvus.client import entity_helper

        adopt_pymilvus()
        # pymilvus checks each VARCHAR of a row by iterating over it character by character (a
        # check meant for arrays of strings): with stored texts, half the client's CPU per upsert,
        # all of it holding the GIL. The server enforces max_length itself (a refusal is a data
        # error, isolated like any other), and we clip texts and cap ids before writing.
        entity_helper.CHECK_STR_ARRAY = False
        if self._lock is not None and not self._lock.held:
            self._lock.acquire()
        kwargs = client_kwargs(self.settings, self._serving_uri())  # a Lite child that cannot start raises here
        try:
            self._client = MilvusClient(**kwargs)
            self._client.list_collections(timeout=self.settings.timeout_s)
            version = str(self._client.get_server_version(timeout=self.settings.timeout_s))
        except Exception as exc:
            self._client = None
            if self._lock is not None and _lite_file_busy(exc):
                raise StartupError(self._lock.busy_message()) from exc
            reason = refusal(exc)
            if reason is not None and not self.server_version:
                raise StartupError(reason) from None
            raise classify(exc) from exc
        if too_old(version):
            raise StartupError(
                f"the Milvus server at {self.settings.uri} is {version}: ingestor writes with upsert, which Milvus "
                f"supports from {'.'.join(map(str, MIN_SERVER_VERSION))}; upgrade the server")
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

    def ensure_collection(self, dimension: int, model_identity: str) -> None:
        """Create the collection for vectors of `dimension` if missing; refuse to start if an
        existing one does not fit."""
        self.dimension, self.model_identity = dimension, model_identity
        try:
            if not self._client.has_collection(self.collection, timeout=self.settings.timeout_s):
                self._create_or_join()
            info = self._client.describe_collection(self.collection, timeout=self.settings.timeout_s)
            self._ensure_index()
            self._client.load_collection(self.collection, timeout=max(self.settings.timeout_s, 60))
        except StartupError:
            raise
        except Exception as exc:
            raise classify(exc) from exc
        self._verify(info)
        self._schema, self._field_types = self._column_schema()
        description = info.get("description") or ""
        incarnation = description.split(_INCARNATION_PREFIX, 1)[1] if _INCARNATION_PREFIX in description else "external"
        self.namespace = f"{self.settings.uri}|{self.settings.db_name or ''}|{self.collection}|{incarnation}"

    def _column_schema(self) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        """The raw schema pymilvus's column upsert packs against (fetched once: without it, it
        describes the collection on every call), or None to write rows."""
        try:
            schema = self._client._get_connection().describe_collection(self.collection, timeout=self.settings.timeout_s)
            types = {f["name"]: f["type"] for f in schema["fields"]}
        except Exception as exc:  # an older or newer pymilvus: rows still work
            log.debug("writing rows, not columns: %s", exc)
            return None, {}
        return (schema, types) if set(self.fields) <= set(types) else (None, {})

    def _create_or_join(self) -> None:
        """Create the collection; if another worker created it at the same moment, use theirs.

        Workers racing to create it send different descriptions (each its own incarnation id), so
        the server refuses all but the first ("create duplicate collection with different
        parameters"). That refusal is not an outage: what exists now is checked like any existing
        collection."""
        mine = f"{_INCARNATION_PREFIX}{uuid.uuid4().hex}"
        try:
            self._create(mine)
        except Exception:
            if not self._client.has_collection(self.collection, timeout=self.settings.timeout_s):
                raise
            info = self._client.describe_collection(self.collection, timeout=self.settings.timeout_s)
            if info.get("description") == mine:
                # Ours, but index or load failed after the create: _ensure_index and the load finish it.
                log.info("Milvus collection %r was created; finishing its set-up", self.collection)
            else:
                log.info("Milvus collection %r was created by another worker meanwhile; using it", self.collection)

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
            "vector", index_type=self.settings.index_type, metric_type=self.settings.metric_type,
            params=self.settings.index_params,
        )
        return index

    def _create(self, description: str) -> None:
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False, description=description)
        for name, (type_name, params) in self.fields.items():
            extra = dict(params)
            if name == "vector":
                extra["dim"] = self.dimension
            schema.add_field(name, getattr(DataType, type_name), is_primary=(name == "id"), **extra)
        self._client.create_collection(
            self.collection, schema=schema, index_params=self._index_params(), consistency_level="Strong",
            timeout=self.settings.timeout_s,
        )
        log.info("created Milvus collection %r (dimension %d%s)", self.collection, self.dimension,
                 ", one entity per chunk" if self.chunked else "")

    def _verify(self, info: dict[str, Any]) -> None:
        fields = {f["name"]: f for f in info.get("fields", [])}
        problems = []
        has_chunks = "doc_id" in fields
        if has_chunks != self.chunked:
            problems.append(
                "it holds one entity per chunk (chunking.enabled was true when it was made), and chunking is off "
                "(set INGESTOR_CHUNKING__ENABLED=true to write it)"
                if has_chunks else
                "it holds one entity per record (chunking.enabled was false when it was made), and chunking is on "
                "(set INGESTOR_CHUNKING__ENABLED=false to write it as before)")
        for name, (type_name, _params) in self.fields.items():
            field = fields.get(name)
            if field is None:
                if not (name in CHUNK_FIELDS and not has_chunks):  # said once, above
                    problems.append(f"field {name!r} is missing")
                continue
            actual = getattr(field.get("type"), "name", str(field.get("type")))
            if actual != type_name:
                problems.append(f"field {name!r} is {actual}, expected {type_name}")
        vector = fields.get("vector")
        if vector is not None:
            dim = int(vector.get("params", {}).get("dim", -1))
            if dim != self.dimension:
                problems.append(
                    f"vector dimension is {dim} but model {self.model_identity} produces {self.dimension}"
                )
        if info.get("auto_id"):
            problems.append("auto_id is on; ingestor needs deterministic primary keys")
        if problems:
            raise StartupError(
                f"Milvus collection {self.collection!r} at {self.settings.uri} does not fit: "
                + "; ".join(problems)
                + ". Use another milvus.collection, or drop this one."
            )

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
            columns = hooks.current.columns(to_columns(chunk, self.settings.store_text, now_ms, self.chunked))
            self._call("upsert", self._write_columns, columns)
            written += len(chunk)
            self._covering = self._last_timestamp()
        return written

    def _write_columns(self, columns: dict[str, list[Any]], timeout: float) -> None:
        writer = getattr(self._client._get_connection(), "upsert", None) if self._schema else None
        if writer is None or not same_width(columns["vector"]):
            self._client.upsert(self.collection, to_rows(columns), timeout=timeout)
            return
        # pymilvus's column upsert (what its ORM `Collection.upsert` calls): the public
        # MilvusClient.upsert takes rows only.
        entities = [{"name": name, "type": self._field_types[name], "values": values}
                    for name, values in columns.items()]
        writer(self.collection, entities, timeout=timeout, schema=self._schema)

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
        from pymilvus.client import ts_utils

        conn = self._client_for_call()._get_connection()
        return int(ts_utils.get_collection_ts(self.collection, conn.server_address, self.settings.db_name or "") or 0)

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

    def get(self, ids: Sequence[str], fields: Sequence[str], consistency_level: str = "Strong",
            **read: Any) -> list[dict[str, Any]]:
        """The entities of exactly `ids` that exist (strongly consistent unless told otherwise)."""
        if not ids:
            return []
        return list(self._call("query", self._client_for_call().query, self.collection, filter=field_in("id", ids),
                               output_fields=list(fields), consistency_level=consistency_level, **read))

    def exists(self) -> bool:
        if self._client is None:
            self.connect()
        return bool(self._call("has", self._client.has_collection, self.collection))

    def count(self) -> int:
        """Entities in the collection (0 when there is none), strongly consistent."""
        if not self.exists():
            return 0
        rows = self._call("query", self._client.query, self.collection, filter="",
                          output_fields=["count(*)"], consistency_level="Strong")
        return int(rows[0]["count(*)"])

    def search(self, vector: Sequence[float], limit: int) -> list[dict[str, Any]]:
        """The `limit` nearest records, best first. With chunks, one hit per record: its best
        chunk, with the chunk's span (`char_start`, `char_end`) in the record's text."""
        if self._client is None:
            self.connect()
        fields = ["id", "text", "truncated"] + (["doc_id", "chunk_index", "char_start", "char_end"] if self.chunked else [])
        # A record's chunks may crowd the nearest hits: ask for more, keep each record's best.
        wanted = min(limit * SEARCH_CHUNKS_PER_RECORD, SEARCH_MAX_HITS) if self.chunked else limit
        hits = self._call(
            "search", self._client.search, self.collection, data=[list(map(float, vector))], limit=wanted,
            output_fields=fields, consistency_level="Strong",
            search_params={"metric_type": self.settings.metric_type},
        )
        out: list[dict[str, Any]] = []
        seen: set[str] = set()
        for hit in hits[0]:
            entity = hit.get("entity", {})
            row = {"id": hit.get("id", entity.get("id")), "score": float(hit.get("distance", 0.0)),
                   "text": entity.get("text", ""), "truncated": entity.get("truncated", False)}
            if self.chunked:
                if entity.get("doc_id") in seen:
                    continue
                seen.add(entity.get("doc_id"))
                row.update({k: entity.get(k) for k in ("doc_id", "chunk_index", "char_start", "char_end")})
            out.append(row)
            if len(out) == limit:
                break
        return out

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
