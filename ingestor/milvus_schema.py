"""What a collection of ours is, and what Milvus's answers mean: the fields, creating and checking
a collection, the entities and their packing into columns (with the private pymilvus parts that
packing uses), the server versions that can take them, and the one translation of pymilvus and
gRPC exceptions into `RetriableError("milvus", …)` or `DataError("sink_rejected", …)` (`classify`,
`refusal`). `sink` reads and writes with all of it."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ingestor.errors import DataError, Reason, RetriableError, StartupError, chain
from ingestor.parsing import json_bytes
from ingestor.patches import fingerprint, not_applied
from ingestor.text import clip_utf8

TEXT_MAX_BYTES = 65_535

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


def schema_fields(chunked: bool) -> dict[str, tuple[str, dict[str, Any]]]:
    """Every field of a collection of ours, in order."""
    if not chunked:
        return SCHEMA_FIELDS
    return {**SCHEMA_FIELDS, "id": ("VARCHAR", {"max_length": CHUNK_ID_MAX_BYTES}), **CHUNK_FIELDS}


def create_schema(fields: dict[str, tuple[str, dict[str, Any]]], dimension: int, description: str) -> Any:
    """The pymilvus schema of a new collection of ours: `id` its primary key, never auto_id."""
    from pymilvus import DataType, MilvusClient

    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False, description=description)
    for name, (type_name, params) in fields.items():
        extra = dict(params)
        if name == "vector":
            extra["dim"] = dimension
        schema.add_field(name, getattr(DataType, type_name), is_primary=(name == "id"), **extra)
    return schema


def verify(
    info: dict[str, Any],
    fields: dict[str, tuple[str, dict[str, Any]]],
    chunked: bool,
    dimension: int,
    model_identity: str,
    where: str,
) -> None:
    """Refuse to start (StartupError) unless the described collection `where` (its name and URI)
    takes our entities: every field with its type, the model's dimension, no auto_id."""
    found = {f["name"]: f for f in info.get("fields", [])}
    problems = []
    has_chunks = "doc_id" in found
    if has_chunks != chunked:
        problems.append(
            "it holds one entity per chunk (chunking.enabled was true when it was made), and chunking is off "
            "(set INGESTOR_CHUNKING__ENABLED=true to write it)"
            if has_chunks
            else "it holds one entity per record (chunking.enabled was false when it was made), and chunking is on "
            "(set INGESTOR_CHUNKING__ENABLED=false to write it as before)"
        )
    for name, (type_name, _params) in fields.items():
        field = found.get(name)
        if field is None:
            if not (name in CHUNK_FIELDS and not has_chunks):  # said once, above
                problems.append(f"field {name!r} is missing")
            continue
        actual = getattr(field.get("type"), "name", str(field.get("type")))
        if actual != type_name:
            problems.append(f"field {name!r} is {actual}, expected {type_name}")
    vector = found.get("vector")
    if vector is not None:
        dim = int(vector.get("params", {}).get("dim", -1))
        if dim != dimension:
            problems.append(f"vector dimension is {dim} but model {model_identity} produces {dimension}")
    if info.get("auto_id"):
        problems.append("auto_id is on; ingestor needs deterministic primary keys")
    if problems:
        raise StartupError(
            f"Milvus collection {where} does not fit: "
            + "; ".join(problems)
            + ". Use another milvus.collection, or drop this one."
        )


MIN_SERVER_VERSION = (2, 3, 0)  # the first Milvus with upsert


def too_old(version: str) -> bool:
    """Whether a Milvus server reporting `version` (`v2.3.5`, `2.4.0-rc1`, `milvus_lite-3.2.2`)
    predates upsert. Milvus Lite and versions we cannot read are given the benefit of the doubt:
    their first upsert would say so."""
    if version.startswith("milvus_lite"):
        return False
    found = re.match(r"v?(\d+)\.(\d+)\.(\d+)", version.strip())
    return found is not None and tuple(int(x) for x in found.groups()) < MIN_SERVER_VERSION


# -- entities and their columns ---------------------------------------------------------------------


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
    vector: np.ndarray | Sequence[float]
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


def to_columns(
    entities: Sequence[Entity], store_text: bool, now_ms: int, chunked: bool = False
) -> dict[str, list[Any]]:
    """One list per field, in schema order: pymilvus packs a column in one call, where a row costs
    it a type lookup per field, about three times the CPU (and GIL) per entity."""
    columns: dict[str, list[Any]] = {
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
        spans = [e.chunk for e in entities if e.chunk is not None]
        if len(spans) < len(entities):
            raise ValueError("a collection of chunks takes chunk entities only")
        columns.update(
            {
                "doc_id": [s.doc_id for s in spans],
                "chunk_index": [s.index for s in spans],
                "chunk_count": [s.count for s in spans],
                "char_start": [s.char_start for s in spans],
                "char_end": [s.char_end for s in spans],
            }
        )
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


# -- pymilvus's private parts ------------------------------------------------------------------------
# Each is checked where it is used; test_patches compares these fingerprints with the installed code.

# pymilvus 3.0.2's VARCHAR conversion, which CHECK_STR_ARRAY switches between checked and not.
STR_ARRAY_FINGERPRINT = "2df41448a508677a"
NO_STR_CHECK = "pymilvus entity_helper.CHECK_STR_ARRAY"


def skip_str_array_check() -> None:
    """pymilvus checks each VARCHAR of a row by iterating over it character by character (a check
    meant for arrays of strings): with stored texts, half the client's CPU per upsert, all of it
    holding the GIL. The server enforces max_length itself (a refusal is a data error, isolated like
    any other), and we clip texts and cap ids before writing. Set only where the flag still gates
    the conversion it was read against: a flag set on changed code might mean something else."""
    from pymilvus.client import entity_helper

    if (
        not hasattr(entity_helper, "CHECK_STR_ARRAY")
        or fingerprint(getattr(entity_helper, "convert_to_str_array", None)) != STR_ARRAY_FINGERPRINT
    ):
        not_applied(
            NO_STR_CHECK,
            "this pymilvus's VARCHAR conversion is not the one it was read against",
            "pymilvus checks every stored text character by character: about half the client's CPU "
            "per upsert, holding the GIL",
        )
        return
    entity_helper.CHECK_STR_ARRAY = False


COLUMN_WRITES = "pymilvus's column upsert (a connection's upsert with schema=)"
ROWS_INSTEAD = "writing rows instead: about three times pymilvus's CPU per entity, holding the GIL"


def column_schema(client: Any, collection: str, timeout: float) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """The raw schema pymilvus's column upsert packs against (fetched once: without it, it
    describes the collection on every call) and each field's type; or (None, {}) to write rows,
    said at WARNING. The column upsert is what pymilvus's ORM `Collection.upsert` calls: the
    public MilvusClient.upsert takes rows only."""
    try:
        connection = client._get_connection()
        if not callable(getattr(connection, "upsert", None)):
            raise AttributeError("the connection has no upsert")
        schema = connection.describe_collection(collection, timeout=timeout)
        types = {f["name"]: f["type"] for f in schema["fields"]}
    except Exception as exc:  # an older or newer pymilvus (or an outage at that moment): rows still work
        not_applied(COLUMN_WRITES, f"{type(exc).__name__}: {exc}", ROWS_INSTEAD)
        return None, {}
    return schema, types


def upsert_columns(
    client: Any,
    collection: str,
    columns: dict[str, list[Any]],
    schema: dict[str, Any],
    types: dict[str, Any],
    timeout: float,
) -> None:
    """One column upsert through the client's current connection (a reconnect makes a new one)."""
    entities = [{"name": name, "type": types[name], "values": values} for name, values in columns.items()]
    client._get_connection().upsert(collection, entities, timeout=timeout, schema=schema)


WRITE_TIMESTAMPS = "pymilvus ts_utils.get_collection_ts"


def last_write_timestamp(client: Any, collection: str, db_name: str) -> int:
    """The timestamp pymilvus keeps of this client's last write to the collection (the one a
    Session read waits for), 0 where there is none, or where this pymilvus keeps none where it was
    read (said at WARNING: the reads that check what Milvus holds then go Strong)."""
    try:
        from pymilvus.client import ts_utils

        address = client._get_connection().server_address
        return int(ts_utils.get_collection_ts(collection, address, db_name) or 0)
    except (ImportError, AttributeError, TypeError) as exc:  # a pymilvus without them: no timestamps
        not_applied(
            WRITE_TIMESTAMPS,
            f"{type(exc).__name__}: {exc}",
            "no write has a timestamp to read at: every read of what Milvus holds goes Strong and waits "
            "for the server's next time tick (about 200 ms)",
        )
        return 0


# -- Milvus's errors ----------------------------------------------------------------------------------

# What a Milvus server says of one bad row when its error code does not (2.3.5 sends a dimension
# mismatch as code 65535, "the length(3) of float data should divide the dim(4)").
_DATA_HINTS = ("should divide the dim", "dimension", "exceeds max length", "invalid parameter", "type mismatch")

_RETRIABLE_HINTS = (
    "deny to write",
    "quota",
    "rate limit",
    "ratelimit",
    "timeout",
    "timed out",
    "deadline",
    "unavailable",
    "connect",
    "connection",
    "not ready",
    "service",
    "closed",
    "broken pipe",
    "server is shutting",
    "no available",
    "eof",
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
            return (
                "milvus refused the login: check milvus.user and milvus.password (or milvus.password_file), "
                "or milvus.token (or milvus.token_file)"
            )
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
        DataNotMatchException,
        DataTypeNotMatchException,
        MilvusException,
        MilvusUnavailableException,
        ParamError,
        PrimaryKeyException,
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
