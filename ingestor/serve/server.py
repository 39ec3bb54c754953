"""`ingestor serve`: loads the model as `ingestor run` does, checks the collection's identity
(exit 2 on another), starts the model thread and serves the routes of `app` with uvicorn on
serve.host:serve.port until SIGTERM or SIGINT."""

from __future__ import annotations

import logging
import signal
import socket
import time

from ingestor.batching import BatchLimits
from ingestor.cache import Cache
from ingestor.chunking import splitter_for
from ingestor.config import Settings
from ingestor.embedder import Embedder
from ingestor.errors import RetriableError, StartupError
from ingestor.health import MilvusWatch
from ingestor.identity import of_model
from ingestor.memory import tune_gc
from ingestor.model_stage import ModelStage
from ingestor.retry import Backoff
from ingestor.serve import health
from ingestor.serve.app import Service, create_app
from ingestor.serve.embeddings import Embeddings
from ingestor.serve.model_thread import ModelThread
from ingestor.serve.queue import Queue
from ingestor.serve.search import SearchIndex
from ingestor.sink import MilvusSink

log = logging.getLogger(__name__)


def serve(settings: Settings) -> int:
    """Run the server until a signal; the exit code. StartupError (exit 2) for a collection written
    with another identity, settings the model cannot honour, or a port taken."""
    s = settings
    log.info("starting ingestor serve with configuration %s", s.redacted())
    sink = MilvusSink(s.milvus, chunked=s.chunking.enabled)
    sink.start_serving()  # a Milvus Lite child starts while the model loads
    try:
        embedder = Embedder(s.model, s.runtime.torch_threads)
        identity = of_model(embedder, splitter_for(s.chunking, embedder))
        index = SearchIndex(sink, identity, embedder.identity, s.serve.search_consistency, s.milvus.store_text)
        _open(index, settings)
        listening = _listen(s.serve.host, s.serve.port)
        tune_gc(s.runtime.gc_gen0_threshold)
        _run(settings, embedder, index, listening)
    finally:
        sink.close()
    log.info("stopped")
    return 0


def _run(s: Settings, embedder: Embedder, index: SearchIndex, listening: socket.socket) -> None:
    import uvicorn

    batch = s.batch.for_device(embedder.device)
    assert batch.max_batch_records and batch.max_batch_tokens and batch.max_window_records
    limits = BatchLimits(batch.max_batch_records, batch.max_batch_tokens, batch.pass_cost_tokens or 0)
    stage = ModelStage(embedder)
    queue = Queue(limits, s.serve.max_wait_ms, batch.max_window_records, s.serve.max_queued_tokens, ModelThread.tokens)
    thread = ModelThread(stage, queue)
    cache = None
    if s.serve.cache and s.redis.url is not None:
        cache = Cache(s.redis, embedder.identity, "", embedder.dimension)
        if not cache.check_at_start():
            log.warning("redis is not reachable: embedding every query until it is")
    watch = MilvusWatch(index.sink.ping)
    server: uvicorn.Server | None = None

    def vitals() -> health.Vitals:
        return health.Vitals(
            model_thread_alive=thread.alive,
            stopping=server is not None and server.should_exit,
            refused=index.refused,
            milvus_silent_s=watch.clock() - watch.last_ok,
            milvus_ping_interval_s=watch.interval_s,
            milvus_error=watch.last_error,
        )

    service = Service(
        model_name=s.model.name,
        dimension=embedder.dimension,
        normalized=embedder.normalized,
        embeddings=Embeddings(embedder, stage, thread, cache, s.serve),
        index=index,
        limits=s.serve,
        vitals=vitals,
    )
    config = uvicorn.Config(
        create_app(service),
        log_config=None,  # ours (`logs.setup_logging`)
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=int(s.runtime.shutdown_timeout_s),
    )
    server = uvicorn.Server(config)
    thread.start()
    watch.start()
    log.info(
        "serving %s on http://%s:%d (/v1/embeddings, /v1/models, /embed, /search, /metrics, /healthz, /readyz); "
        "passes of up to %d texts and %d tokens, at most %d tokens queued",
        index.identity.describe(),
        s.serve.host,
        listening.getsockname()[1],
        limits.max_records,
        limits.max_tokens,
        s.serve.max_queued_tokens,
    )
    # uvicorn handles SIGTERM and SIGINT while it runs, then raises the signal again for the
    # handler it found: a no-op one lets the clean-up below run and the process exit 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: None)
    try:
        server.run(sockets=[listening])
    finally:
        watch.stop()
        thread.stop()
        if cache is not None:
            cache.close()


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound before uvicorn starts, so that a port taken is a StartupError."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise StartupError(
            f"cannot serve on {host}:{port}: {exc.strerror or exc}; set serve.port (INGESTOR_SERVE__PORT)"
        ) from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _open(index: SearchIndex, settings: Settings) -> None:
    """Check the collection at start, waiting out a Milvus that does not answer yet. A collection
    written with another identity raises StartupError (exit 2); one that does not exist yet is
    checked again at the first search."""
    r = settings.retry
    backoff = Backoff(r.initial_backoff_ms, r.max_backoff_ms, r.multiplier, r.jitter)
    attempt = 0
    while True:
        try:
            index.sink.connect()
            if not index.open():
                log.info(
                    "there is no Milvus collection %r at %s yet: /search answers 503 until `ingestor run` creates it",
                    settings.milvus.collection,
                    settings.milvus.uri,
                )
            return
        except RetriableError as exc:
            delay = backoff.delay_s(attempt)
            log.warning("milvus at %s not ready yet (%s); retrying in %.1fs", settings.milvus.uri, exc, delay)
            attempt += 1
            time.sleep(delay)
