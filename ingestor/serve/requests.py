"""Request bodies of the query side, read and checked: bytes (bounded by serve.max_body_bytes) to
JSON to one typed request per endpoint. Every refusal is an `ApiError` that says what was wrong."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request

from ingestor.serve.errors import ApiError, invalid, too_large

DRAIN_FACTOR = 16  # a body this many times over the limit is not read to its end before the 413


async def read_body(request: Request, limit: int) -> bytes:
    """The body, or 413 once it passes `limit` bytes. A body somewhat over the limit is still read
    to its end, so that the client, still sending, reads the 413 instead of a reset connection."""
    declared = request.headers.get("content-length", "")
    refusal = too_large("body_too_large", f"the body is over {limit} bytes", "serve.max_body_bytes")
    if declared.isdigit() and int(declared) > limit * DRAIN_FACTOR:
        raise refusal
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit * DRAIN_FACTOR:
            break
        if size <= limit:
            chunks.append(chunk)
    if size > limit:
        raise refusal
    return b"".join(chunks)


def parse_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as bad:
            raise ApiError(400, "invalid_encoding", "the body is not UTF-8", f"at byte {bad.start}") from None
        raise ApiError(400, "invalid_json", "the body is not JSON", str(exc)) from None


def _object(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise invalid(f"the body is a JSON object, not {_kind(data)}")
    return data


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


def _texts(value: Any, name: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        if not value:
            raise invalid(f"{name} is an empty list", name)
        bad = next((i for i, v in enumerate(value) if not isinstance(v, str)), None)
        if bad is None:
            return value
        raise invalid(
            f"{name}[{bad}] is {_kind(value[bad])}: {name} is a string or a list of strings (token arrays are "
            "not taken)",
            f"{name}[{bad}]",
        )
    raise invalid(f"{name} is a string or a list of strings, not {_kind(value)}", name)


def _flag(data: dict[str, Any], name: str, default: bool) -> bool:
    value = data.get(name, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise invalid(f"{name} is true or false, not {_kind(value)}", name)
    return value


def _unknown(data: dict[str, Any], known: set[str]) -> None:
    extra = sorted(set(data) - known)
    if extra:
        raise invalid(f"unknown field(s) {', '.join(map(repr, extra))}: expected {', '.join(sorted(known))}", extra[0])


@dataclass(frozen=True, slots=True)
class EmbeddingsRequest:
    """OpenAI's `POST /v1/embeddings`, and `truncate` (default true) as an extension."""

    texts: list[str]
    model: str
    base64: bool
    truncate: bool
    dimensions: int | None


def embeddings_request(data: Any) -> EmbeddingsRequest:
    data = _object(data)
    if "input" not in data:
        raise invalid("input is missing", "input")
    model = data.get("model")
    if not isinstance(model, str):
        raise invalid(f"model is a string, not {_kind(model)}", "model")
    fmt = data.get("encoding_format") or "float"
    if fmt not in ("float", "base64"):
        raise invalid(f"encoding_format is float or base64, not {fmt!r}", "encoding_format")
    dimensions = data.get("dimensions")
    if dimensions is not None and (isinstance(dimensions, bool) or not isinstance(dimensions, int)):
        raise invalid(f"dimensions is an integer, not {_kind(dimensions)}", "dimensions")
    user = data.get("user")
    if user is not None and not isinstance(user, str):
        raise invalid(f"user is a string, not {_kind(user)}", "user")
    return EmbeddingsRequest(
        _texts(data["input"], "input"), model, fmt == "base64", _flag(data, "truncate", True), dimensions
    )


@dataclass(frozen=True, slots=True)
class EmbedRequest:
    """TEI's `POST /embed`."""

    texts: list[str]
    normalize: bool
    truncate: bool


def embed_request(data: Any) -> EmbedRequest:
    data = _object(data)
    _unknown(data, {"inputs", "normalize", "truncate", "truncation_direction", "prompt_name", "dimensions"})
    if "inputs" not in data:
        raise invalid("inputs is missing", "inputs")
    direction = data.get("truncation_direction") or "right"
    if not isinstance(direction, str) or direction.lower() != "right":
        raise invalid("truncation_direction: only Right is supported (as `ingestor run` cuts)", "truncation_direction")
    if data.get("prompt_name") is not None:
        raise invalid("prompt_name is not supported: queries are embedded as ingestion embeds texts", "prompt_name")
    if data.get("dimensions") is not None:
        raise invalid("dimensions is not supported: vectors have the model's dimension", "dimensions")
    return EmbedRequest(_texts(data["inputs"], "inputs"), _flag(data, "normalize", True), _flag(data, "truncate", True))


@dataclass(frozen=True, slots=True)
class SearchRequest:
    query: str
    k: int
    filter: Any  # the structured filter (`filters.build`), or None
    truncate: bool


def search_request(data: Any, max_k: int) -> SearchRequest:
    data = _object(data)
    _unknown(data, {"query", "k", "filter", "truncate"})
    query = data.get("query")
    if not isinstance(query, str):
        raise invalid(f"query is a string, not {_kind(query)}", "query")
    k = data.get("k", 10)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= max_k:
        raise invalid(f"k is an integer from 1 to {max_k} (serve.max_k), not {k!r}", "k")
    return SearchRequest(query, k, data.get("filter"), _flag(data, "truncate", True))
