"""Health for operators, on `metrics.port`: `/metrics` (Prometheus), `/healthz` and `/readyz`.
Non-200 answers carry a short JSON reason. The rules are pure (`liveness`, `readiness` over the
daemon's `Vitals`); the HTTP server only serves them.

- alive: every pipeline stage runs, and the consumer loop turned within the last minute (a
  restart would help);
- ready: alive, the model is loaded, Milvus answered a real call recently, the brokers have not
  refused a login or certificate recently, no partition is blocked by a batch it cannot decode,
  and the process is not stopping. A Redis that refuses us leaves it ready (the cache is an
  optimisation; records go on at full cost) and is named in the reason.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ingestor.errors import StartupError

log = logging.getLogger(__name__)


CONSUMER_STALL_S = 60.0  # a consumer loop this long without a turn is stuck: not alive
MILVUS_MISSED_PINGS = 3  # this many ping intervals without an answer: not ready


@dataclass(frozen=True, slots=True)
class Status:
    ok: bool
    reason: str


@dataclass(frozen=True, slots=True)
class Vitals:
    """What the daemon knows of itself at one moment."""

    model_loaded: bool = False
    started: bool = False  # source, pipeline and the Milvus watch exist
    stopping: bool = False
    pipeline_healthy: bool = True
    consumer_idle_s: float = 0.0  # since the consumer loop last turned
    milvus_silent_s: float = 0.0  # since Milvus last answered a ping
    milvus_ping_interval_s: float = 5.0
    milvus_error: str = ""
    blocked: str | None = None  # why a partition cannot progress (an undecodable batch)
    kafka_refused: str | None = None  # the brokers refused a connection of ours recently: what to fix
    redis_refused: str = ""  # Redis refuses us: what to fix
    partitions: int = 0


def liveness(v: Vitals) -> Status:
    if not v.pipeline_healthy:
        return Status(False, "a pipeline stage stopped")
    if v.consumer_idle_s > CONSUMER_STALL_S:
        return Status(False, f"the consumer loop has not run for {CONSUMER_STALL_S:.0f}s")
    return Status(True, "alive")


def readiness(v: Vitals) -> Status:
    if not v.model_loaded:
        return Status(False, "model loading")
    if not v.started:
        return Status(False, "starting")
    if v.stopping:
        return Status(False, "shutting down")
    alive = liveness(v)
    if not alive.ok:
        return alive
    if v.milvus_silent_s > MILVUS_MISSED_PINGS * v.milvus_ping_interval_s:
        return Status(False, v.milvus_error or "milvus did not answer recently")
    if v.kafka_refused is not None:
        return Status(False, v.kafka_refused)
    if v.blocked is not None:
        return Status(False, v.blocked)
    reason = f"{v.partitions} partition(s) assigned" if v.partitions else "waiting for partitions"
    if v.redis_refused:
        reason += f"; without the cache: {v.redis_refused}"
    return Status(True, reason)


class HealthServer:
    def __init__(self, host: str, port: int, vitals: Callable[[], Vitals]) -> None:
        self.vitals = vitals
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(), CONTENT_TYPE_LATEST)
                elif path in ("/healthz", "/readyz"):
                    status = (liveness if path == "/healthz" else readiness)(owner.vitals())
                    body = json.dumps({"status": "ok" if status.ok else "fail", "reason": status.reason})
                    self._send(200 if status.ok else 503, body.encode(), "application/json")
                else:
                    self._send(404, b'{"status":"fail","reason":"not found"}', "application/json")

            def _send(self, code: int, body: bytes, content_type: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: object) -> None:  # probes every few seconds: keep quiet
                pass

        try:
            self.server = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            raise StartupError(
                f"cannot serve metrics and health on {host}:{port}: {exc.strerror or exc}. Each ingestor on "
                f"one host needs its own metrics.port (INGESTOR_METRICS__PORT), or 0 to turn the endpoint off"
            ) from None
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="ingestor-http", daemon=True)

    def start(self) -> None:
        self._thread.start()
        log.info("metrics and health on http://%s:%d (/metrics, /healthz, /readyz)", *self.server.server_address[:2])

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class MilvusWatch:
    """Pings Milvus with a real call every `interval_s` on its own thread, so readiness reflects
    an outage even while no batch is being written, and the consumer thread never waits on it."""

    def __init__(
        self, ping: Callable[[], str], interval_s: float = 5.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        # ping: "" when Milvus answered, else why not; clock: what `last_ok` is read on (the daemon's)
        self.ping = ping
        self.interval_s = interval_s
        self.clock = clock
        self.last_ok = clock()
        self.last_error = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ingestor-milvus-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def check_once(self) -> None:
        error = self.ping()
        if not error:
            self.last_ok = self.clock()
        self.last_error = error

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.check_once()

    def stop(self) -> None:
        self._stop.set()
