"""The HTTP side for operators, on `metrics.port`: `/metrics` (Prometheus), `/healthz` (the
process loop is alive) and `/readyz` (model loaded, Milvus answered a real call recently,
partitions assigned or the group is assigning them). Non-200 answers carry a short JSON reason."""

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


@dataclass(frozen=True, slots=True)
class Status:
    ok: bool
    reason: str


class HealthServer:
    def __init__(self, host: str, port: int, live: Callable[[], Status], ready: Callable[[], Status]) -> None:
        self.live = live
        self.ready = ready
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(), CONTENT_TYPE_LATEST)
                elif path in ("/healthz", "/readyz"):
                    status = (owner.live if path == "/healthz" else owner.ready)()
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

    def __init__(self, ping: Callable[[], bool], interval_s: float = 5.0) -> None:
        self.ping = ping
        self.interval_s = interval_s
        self.last_ok = time.monotonic()
        self.last_error = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ingestor-milvus-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            if self.ping():
                self.last_ok = time.monotonic()
                self.last_error = ""
            else:
                self.last_error = "milvus did not answer"

    def stop(self) -> None:
        self._stop.set()
