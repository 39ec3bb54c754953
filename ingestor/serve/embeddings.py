"""Texts to vectors for the query side, as `ingestor run` would embed them: the request limits,
tokenising (which says what the model cuts), the Redis cache under ingestion's key scheme, then
the model thread's queue, whose admission may refuse the request (429 with Retry-After)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import numpy as np
from starlette.concurrency import run_in_threadpool

from ingestor import metrics
from ingestor.cache import Cache
from ingestor.config import ServeSettings
from ingestor.dedupe import CachedVector
from ingestor.embedder import Embedder
from ingestor.model_stage import ModelStage
from ingestor.parsing import sha256_hex
from ingestor.serve.errors import ApiError, invalid, too_large
from ingestor.serve.model_thread import ModelThread, Request
from ingestor.work import Unit

log = logging.getLogger(__name__)

INLINE_CHARS = 16_384  # tokenised on the event loop below this many characters, on a worker thread above


@dataclass(frozen=True, slots=True)
class Embedded:
    vectors: np.ndarray  # float32 (n, dimension), in the order of the texts
    tokens: list[int]  # what the model saw of each text, special tokens included
    truncated: int  # texts cut at the model's limit


class Embeddings:
    def __init__(
        self, embedder: Embedder, stage: ModelStage, thread: ModelThread, cache: Cache | None, limits: ServeSettings
    ) -> None:
        self.embedder = embedder
        self.stage = stage
        self.thread = thread
        self.cache = cache if cache is not None and cache.enabled else None
        self.limits = limits

    def check(self, texts: list[str]) -> None:
        """The request limits, before any work: 413 or 422 naming the input at fault."""
        if not texts:
            raise invalid("no input: send at least one text")
        if len(texts) > self.limits.max_inputs_per_request:
            raise too_large(
                "too_many_inputs",
                f"{len(texts)} inputs; at most {self.limits.max_inputs_per_request} per request",
                "serve.max_inputs_per_request",
            )
        for i, text in enumerate(texts):
            if not text:
                raise invalid(f"input {i} is empty", f"input[{i}]")
            if len(text) > self.limits.max_input_chars:
                raise too_large(
                    "input_too_long",
                    f"input {i} has {len(text)} characters; at most {self.limits.max_input_chars}",
                    "serve.max_input_chars",
                )

    async def embed(self, texts: list[str], truncate: bool = True) -> Embedded:
        """Vectors of `texts` (checked with `check` first). Inputs over the model's limit are cut
        as `ingestor run` cuts them; with `truncate` false they are refused (413)."""
        self.check(texts)
        units: dict[str, Unit] = {}
        order = []
        for text in texts:
            sha = sha256_hex(text)
            units.setdefault(sha, Unit(text, sha, []))
            order.append(units[sha])
        distinct = list(units.values())
        if sum(len(t) for t in texts) <= INLINE_CHARS:
            self.stage.tokenize(distinct)
        else:
            await run_in_threadpool(self.stage.tokenize, distinct)
        cut = [u for u in distinct if u.truncated]
        if cut and not truncate:
            first, limit = texts.index(cut[0].text), self.embedder.max_seq_length
            raise too_large(
                "input_too_long",
                f"input {first} has {self.embedder.tokenizer.count(cut[0].text)} tokens; the model takes at most "
                f"{limit} (send truncate=true to embed its first {limit})",
                f"input[{first}]",
            )
        todo = await self._from_cache(distinct)
        if todo:
            await self._from_model(todo)
            if self.cache is not None:
                stored = {u.text_sha256: CachedVector(u.vector, u.truncated) for u in todo if u.vector is not None}
                asyncio.get_running_loop().run_in_executor(None, self.cache.store, stored, {})
        metrics.SERVE_TEXTS.labels("model").inc(len(todo))
        metrics.SERVE_TEXTS.labels("cache").inc(len(distinct) - len(todo))
        truncated = sum(1 for u in order if u.truncated)
        metrics.SERVE_TRUNCATED.inc(truncated)
        vectors = np.stack([np.asarray(u.vector, dtype=np.float32) for u in order])
        return Embedded(vectors, [u.tokens for u in order], truncated)

    async def _from_cache(self, units: list[Unit]) -> list[Unit]:
        """Give units their cached vectors; the units still to embed."""
        if self.cache is None:
            return units
        _, found = await run_in_threadpool(self.cache.lookup, [], [u.text_sha256 for u in units])
        todo = []
        for unit, cached in zip(units, found):
            if cached is None:
                todo.append(unit)
            else:
                unit.vector, unit.from_cache = cached.vector, True
        return todo

    async def _from_model(self, units: list[Unit]) -> None:
        loop = asyncio.get_running_loop()
        finished = loop.create_future()

        def finish() -> None:
            if not finished.done():
                finished.set_result(None)

        def done() -> None:  # on the model thread
            loop.call_soon_threadsafe(finish)

        request = Request(units, done)
        if not self.thread.submit(request):
            wait = self.thread.retry_after_s()
            raise ApiError(
                429,
                "overloaded",
                "the model's queue is full: retry later",
                f"{sum(u.tokens for u in units)} tokens do not fit serve.max_queued_tokens now",
                headers={"Retry-After": str(wait)},
            )
        await finished
        if request.failed:
            raise ApiError(500, "model_failed", "the model failed on this batch; retry", "see the server's log")
        failed = [u for u in units if u.vector is None]
        if failed:
            raise ApiError(
                422, "embed_failed", f"the model cannot encode {len(failed)} of the inputs", "the texts fail alone"
            )
