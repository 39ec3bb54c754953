"""Decode one Kafka record into a Document, a Delete or a Rejected. Pure: no I/O, no clock.

The message contract (also in the README):

- value format ``json``: a UTF-8 JSON object with ``text`` (non-blank string), optional ``id``
  (string or integer) and optional ``metadata`` (object); field names are configurable.
- value format ``text``: the whole value is the text.
- id = the JSON id, else the Kafka key, else the SHA-256 of the text.
- a null value (tombstone) with a key deletes that id.
- anything else is Rejected with one of the reason codes in `Reason`.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Literal, Protocol

import orjson

from ingestor.errors import Reason
from ingestor.records import Delete, Document, Parsed, RawRecord, Rejected

MAX_ID_BYTES = 512
_LONG_DIGITS = re.compile(r"\d{19}")  # 18 digits always fit in 64 bits


class MessageFormat(Protocol):
    """What parsing needs to know of the message format (`config.KafkaSettings` is one)."""

    @property
    def value_format(self) -> Literal["json", "text"]: ...
    @property
    def text_field(self) -> str: ...
    @property
    def id_field(self) -> str: ...
    @property
    def metadata_field(self) -> str: ...
    @property
    def max_record_bytes(self) -> int: ...


class _Reject(Exception):
    def __init__(self, reason: Reason, error: str) -> None:
        self.reason = reason
        self.error = error


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def json_bytes(value: Any, sort_keys: bool = False) -> bytes:
    """Compact JSON as UTF-8: orjson, or `json` for what nests deeper than orjson goes (254 levels;
    pymilvus falls back the same way)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS if sort_keys else None)
    except orjson.JSONEncodeError:
        return json.dumps(value, sort_keys=sort_keys, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def unstorable(metadata: dict[str, Any]) -> str | None:
    """Why this parsed metadata cannot be stored in a Milvus JSON field, or None."""
    return metadata_json(metadata)[1]


def metadata_json(metadata: dict[str, Any]) -> tuple[str | None, str | None]:
    """(The metadata as the JSON text Milvus stores, why it cannot be stored). pymilvus serialises
    JSON with orjson, which refuses lone surrogates (\\ud800 parses as JSON) and integers beyond 64
    bits; refused here, such a record is dead-lettered with its reason instead of failing a whole
    write later. Serialised once per record, the text is what the sink hands over; None where only
    `json` can write it (nesting deeper than orjson goes), which pymilvus then does itself."""
    try:
        return orjson.dumps(metadata).decode("utf-8"), None
    except orjson.JSONEncodeError as exc:
        if "surrogates" in str(exc):
            return None, "is not valid Unicode"
        if "Recursion" not in str(exc):
            return None, f"cannot be stored as JSON ({exc})"
    try:  # deeper than orjson nests: pymilvus falls back to json, and so does this check
        json.dumps(metadata, ensure_ascii=False).encode("utf-8")
        return None, None
    except (UnicodeEncodeError, ValueError, RecursionError):
        return None, "is not valid Unicode"


def parse_record(raw: RawRecord, options: MessageFormat) -> Parsed:
    """Turn raw bytes into what the pipeline does with them. Never raises."""
    try:
        if raw.value is None:
            return _tombstone(raw)
        if len(raw.value) > options.max_record_bytes:
            raise _Reject(
                Reason.TOO_LARGE,
                f"value is {len(raw.value)} bytes, over max_record_bytes={options.max_record_bytes}",
            )
        text = _decode_utf8(raw.value, "value")
        if options.value_format == "text":
            return _document(raw, _check_text(text), None, {}, "{}")
        return _from_json(raw, text, options)
    except _Reject as rejection:
        return Rejected(raw=raw, reason=rejection.reason.value, error=rejection.error)


def _tombstone(raw: RawRecord) -> Parsed:
    if not raw.key:
        raise _Reject(Reason.TOMBSTONE_WITHOUT_KEY, "null value without a key: nothing to delete")
    return Delete(id=_check_id(_decode_key(raw.key)), raw=raw)


def _json_loads(decoded: str) -> Any:
    try:
        return json.loads(decoded, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise _Reject(Reason.INVALID_JSON, f"invalid JSON: {exc.msg} at position {exc.pos}") from None
    except (ValueError, RecursionError) as exc:  # NaN, huge integers, absurd nesting
        raise _Reject(Reason.INVALID_JSON, f"invalid JSON: {type(exc).__name__}: {str(exc)[:80]}") from None


def _reject_constant(name: str) -> Any:
    # Python accepts NaN/Infinity, JSON does not, and Milvus would store them as null: refuse.
    raise ValueError(f"{name} is not JSON")


def _from_json(raw: RawRecord, decoded: str, options: MessageFormat) -> Document:
    # orjson reads what `json` reads, the same, except integers past 64 bits (it makes them floats):
    # a value that may hold one (19 digits in a row), and whatever orjson refuses (NaN, lone
    # surrogates, absurd nesting), goes to `json` for the verdict.
    if _LONG_DIGITS.search(decoded):
        obj = _json_loads(decoded)
    else:
        try:
            obj = orjson.loads(decoded)
        except orjson.JSONDecodeError:
            obj = _json_loads(decoded)
    if not isinstance(obj, dict):
        raise _Reject(Reason.NOT_AN_OBJECT, f"JSON value is a {type(obj).__name__}, not an object")
    if options.text_field not in obj:
        raise _Reject(Reason.MISSING_TEXT, f"field {options.text_field!r} is missing")
    text = obj[options.text_field]
    if not isinstance(text, str):
        raise _Reject(Reason.TEXT_NOT_STRING, f"field {options.text_field!r} is a {type(text).__name__}, not a string")
    text = _check_text(text)
    record_id = _json_id(obj.get(options.id_field), options.id_field)
    metadata = obj.get(options.metadata_field)
    if metadata is None:
        metadata = {}
    elif not isinstance(metadata, dict):
        raise _Reject(
            Reason.INVALID_METADATA,
            f"field {options.metadata_field!r} is a {type(metadata).__name__}, not an object",
        )
    serialised, problem = metadata_json(metadata)
    if problem is not None:
        raise _Reject(Reason.INVALID_METADATA, f"field {options.metadata_field!r} {problem}")
    return _document(raw, text, record_id, metadata, serialised)


def _document(
    raw: RawRecord, text: str, record_id: str | None, metadata: dict[str, Any], serialised: str | None
) -> Document:
    text_sha = sha256_hex(text)
    if record_id is None:
        record_id = _check_id(_decode_key(raw.key)) if raw.key is not None else text_sha
    return Document(id=record_id, text=text, text_sha256=text_sha, metadata=metadata, raw=raw, metadata_json=serialised)


def _check_text(text: str) -> str:
    if not text.strip():
        raise _Reject(Reason.BLANK_TEXT, "text is empty or blank")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        # JSON may carry lone surrogates (\ud800) that no UTF-8 consumer downstream accepts.
        raise _Reject(Reason.INVALID_UTF8, f"text is not valid Unicode: {exc.reason}") from None
    return text


def _json_id(value: object, id_field: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _Reject(Reason.INVALID_ID, f"field {id_field!r} is a {type(value).__name__}, not a string or integer")
    return _check_id(str(value))


def _check_id(record_id: str) -> str:
    if not record_id.strip():
        raise _Reject(Reason.INVALID_ID, "id is empty or blank")
    try:
        size = len(record_id.encode("utf-8"))
    except UnicodeEncodeError:
        raise _Reject(Reason.INVALID_ID, "id is not valid Unicode") from None
    if size > MAX_ID_BYTES:
        raise _Reject(Reason.ID_TOO_LONG, f"id is {size} bytes, over {MAX_ID_BYTES}")
    return record_id


def _decode_key(key: bytes) -> str:
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Reject(Reason.INVALID_KEY, f"key is not valid UTF-8 at byte {exc.start}") from None


def _decode_utf8(value: bytes, what: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Reject(Reason.INVALID_UTF8, f"{what} is not valid UTF-8 at byte {exc.start}") from None
