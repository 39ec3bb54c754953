"""The naive query server the serve bench compares with, (n): what teams write by hand, a
per-request `encode` behind a web framework, on the same ASGI stack as `ingestor serve` (Starlette
on uvicorn). `python -m bench.naive_server --port P [--model M] [--device D]`, answering TEI's
`POST /embed` shape."""

from __future__ import annotations

import argparse
import logging

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def app_for(model: object) -> Starlette:
    async def embed(request: Request) -> Response:
        from starlette.concurrency import run_in_threadpool

        body = orjson.loads(await request.body())
        texts = body["inputs"] if isinstance(body["inputs"], list) else [body["inputs"]]
        vectors = await run_in_threadpool(model.encode, texts)  # type: ignore[attr-defined]
        return Response(orjson.dumps(vectors, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")

    async def healthz(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    return Starlette(routes=[Route("/embed", embed, methods=["POST"]), Route("/healthz", healthz)])


def main() -> None:
    import uvicorn
    from sentence_transformers import SentenceTransformer

    from ingestor.config import DEFAULT_MODEL
    from ingestor.embedder import resolve_model_path

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    model = SentenceTransformer(resolve_model_path(args.model), device=args.device)
    uvicorn.run(app_for(model), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
