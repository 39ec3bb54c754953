"""The HTTP routes of `ingestor serve` (Starlette): each reads its request (`requests`), calls the
embeddings or the search, and writes the answer in its API's shape. Errors answer
`{"error", "type", "detail"}` (`errors.ApiError`); anything unexpected answers 500 and is logged."""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ingestor import metrics
from ingestor.config import ServeSettings
from ingestor.serve import filters, health
from ingestor.serve.embeddings import Embedded, Embeddings
from ingestor.serve.errors import ApiError
from ingestor.serve.requests import embed_request, embeddings_request, parse_json, read_body, search_request
from ingestor.serve.search import SearchIndex

log = logging.getLogger(__name__)

TRUNCATED_HEADER = "X-Ingestor-Truncated-Inputs"  # how many inputs the model saw only the start of


class JsonResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


@dataclass
class Service:
    """What the routes need."""

    model_name: str
    dimension: int
    normalized: bool  # the model's own output is unit length
    embeddings: Embeddings
    index: SearchIndex
    limits: ServeSettings
    vitals: Callable[[], health.Vitals]

    def accepts(self, model: str) -> bool:
        """A request naming our model, by its full name or its last part."""
        return model in (self.model_name, self.model_name.rstrip("/").rsplit("/", 1)[-1])


Handler = Callable[[Request], Awaitable[Response]]


def create_app(service: Service) -> Starlette:
    def route(path: str, endpoint: Callable[[Service, Request], Awaitable[Response]], method: str) -> Route:
        return Route(path, _answering(path, lambda request: endpoint(service, request)), methods=[method])

    return Starlette(
        exception_handlers={HTTPException: _http_error},
        routes=[
            route("/v1/embeddings", openai_embeddings, "POST"),
            route("/v1/models", openai_models, "GET"),
            route("/embed", tei_embed, "POST"),
            route("/search", search, "POST"),
            Route("/healthz", lambda request: _status(health.liveness(service.vitals())), methods=["GET"]),
            Route("/readyz", lambda request: _status(health.readiness(service.vitals())), methods=["GET"]),
            Route("/metrics", _metrics, methods=["GET"]),
        ],
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no such path, another method) in our error's shape."""
    assert isinstance(exc, HTTPException)
    kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    body = {"error": str(exc.detail), "type": kind, "detail": f"{request.method} {request.url.path}"}
    return JsonResponse(body, status_code=exc.status_code, headers=exc.headers)


def _answering(endpoint: str, handler: Handler) -> Handler:
    """`handler`, with its errors answered as JSON and every answer counted and timed."""

    async def answer(request: Request) -> Response:
        started = time.perf_counter()
        try:
            response = await handler(request)
        except ApiError as exc:
            response = JsonResponse(exc.body(), status_code=exc.status, headers=exc.headers)
        except Exception:
            log.exception("%s failed", endpoint)
            response = JsonResponse(
                {"error": "internal error", "type": "internal", "detail": "see the server's log"}, status_code=500
            )
        metrics.SERVE_REQUESTS.labels(endpoint, str(response.status_code)).inc()
        metrics.SERVE_SECONDS.labels(endpoint).observe(time.perf_counter() - started)
        return response

    return answer


async def _json(service: Service, request: Request) -> Any:
    return parse_json(await read_body(request, service.limits.max_body_bytes))


def _truncation(embedded: Embedded) -> dict[str, str]:
    return {TRUNCATED_HEADER: str(embedded.truncated)}


async def openai_embeddings(service: Service, request: Request) -> Response:
    body = embeddings_request(await _json(service, request))
    if not service.accepts(body.model):
        raise ApiError(
            404, "model_not_found", f"this server embeds with {service.model_name}, not {body.model}", "model"
        )
    if body.dimensions is not None and body.dimensions != service.dimension:
        raise ApiError(422, "invalid_request", f"vectors have {service.dimension} dimensions", "dimensions")
    embedded = await service.embeddings.embed(body.texts, body.truncate)
    data = [
        {"object": "embedding", "index": i, "embedding": _base64(v) if body.base64 else v}
        for i, v in enumerate(embedded.vectors)
    ]
    tokens = sum(embedded.tokens)
    usage = {"prompt_tokens": tokens, "total_tokens": tokens, "truncated_inputs": embedded.truncated}
    return JsonResponse(
        {"object": "list", "data": data, "model": body.model, "usage": usage}, headers=_truncation(embedded)
    )


def _base64(vector: np.ndarray) -> str:
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


async def openai_models(service: Service, request: Request) -> Response:
    model = {"id": service.model_name, "object": "model", "created": 0, "owned_by": "ingestor"}
    return JsonResponse({"object": "list", "data": [{**model, "dimension": service.dimension}]})


async def tei_embed(service: Service, request: Request) -> Response:
    body = embed_request(await _json(service, request))
    embedded = await service.embeddings.embed(body.texts, body.truncate)
    vectors = embedded.vectors
    if body.normalize and not service.normalized:
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return JsonResponse(vectors, headers=_truncation(embedded))


async def search(service: Service, request: Request) -> Response:
    body = search_request(await _json(service, request), service.limits.max_k)
    expression = "" if body.filter is None else filters.build(body.filter, service.index.chunked)
    embedded = await service.embeddings.embed([body.query], body.truncate)
    results = await run_in_threadpool(service.index.search, embedded.vectors[0], body.k, expression)
    return JsonResponse({"results": results}, headers=_truncation(embedded))


def _status(status: Any) -> Response:
    body = {"status": "ok" if status.ok else "fail", "reason": status.reason}
    return JsonResponse(body, status_code=200 if status.ok else 503)


async def _metrics(request: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
