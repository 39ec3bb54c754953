"""Milvus Lite in a child process.

Milvus Lite 3 is a pure-Python gRPC server: given a file URI, pymilvus starts it on threads of
*this* process, where validating and logging each upserted row holds the GIL (about 100 µs a row
here, more than the rest of the pipeline's Python per record). On a GPU that is time the model
thread waits to launch its kernels. So by default the daemon runs the same server, on the same
data directory, in a child process and talks to it over the same loopback gRPC it would have used
anyway (`milvus.lite_in_process=true` restores pymilvus's own behaviour).

The child serves until it is told to stop (SIGTERM or SIGINT: it drains and closes the database)
or until its parent is gone (it polls; a parent killed with SIGKILL leaves no orphan holding the
data directory). It lives in its own session, so a Ctrl-C at the terminal reaches the daemon only,
which still needs Milvus to finish its in-flight batches before it stops the child.
"""

from __future__ import annotations

import argparse
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ingestor.errors import StartupError

log = logging.getLogger(__name__)

READY = "ingestor-lite-ready"
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 15.0


def data_dir(uri: str) -> str:
    """The directory pymilvus would hand Milvus Lite for this URI (the same data either way)."""
    return os.path.abspath(os.path.expanduser(uri))


class LiteServer:
    """One child `python -m ingestor.lite` serving one data directory on a free loopback port."""

    def __init__(self, uri: str) -> None:
        self.data_dir = data_dir(uri)
        self._proc: subprocess.Popen[str] | None = None
        self.uri = ""

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> str:
        """Start the child and wait until it serves; returns its `http://127.0.0.1:port`."""
        if self.alive:
            return self.uri
        Path(self.data_dir).parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "ingestor.lite", "--data-dir", self.data_dir, "--parent-pid", str(os.getpid())]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                text=True, start_new_session=True)
        self._proc = proc
        port = _await_ready(proc, START_TIMEOUT_S)
        if port is None:
            error = _tail(proc)
            self.stop()
            raise StartupError(f"Milvus Lite could not start on {self.data_dir}: {error or 'no reason given'}")
        self.uri = f"http://127.0.0.1:{port}"
        # Its log lines are Milvus Lite's own; drain them so the child never blocks on a full pipe.
        threading.Thread(target=_drain, args=(proc,), name="ingestor-lite-log", daemon=True).start()
        log.info("Milvus Lite serving %s from a child process (pid %d)", self.data_dir, proc.pid)
        return self.uri

    def stop(self) -> None:
        """Ask the child to drain and close the database; kill it if it does not within the bound."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log.warning("Milvus Lite (pid %d) did not stop in %.0f s; killing it", proc.pid, STOP_TIMEOUT_S)
            proc.kill()
            proc.wait()


@contextmanager
def milvus_client(uri: str) -> Iterator[Any]:
    """A MilvusClient for `uri`; a Lite file is served by a child for just this long, so the file
    is free again afterwards (pymilvus's in-process server would hold it until this process exits)."""
    from pymilvus import MilvusClient

    lite = LiteServer(uri) if not uri.startswith(("http://", "https://", "tcp://", "grpc://")) else None
    client = MilvusClient(uri=lite.start() if lite is not None else uri)
    try:
        yield client
    finally:
        client.close()
        if lite is not None:
            lite.stop()


def _await_ready(proc: subprocess.Popen[str], timeout_s: float) -> int | None:
    """The port the child announces on stdout, or None if it exits or stays silent too long."""
    found: queue.Queue[int | None] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:  # a line before the announcement (a library's notice) is skipped
            if line.startswith(READY):
                found.put(int(line.split()[1]))
                return
        found.put(None)

    threading.Thread(target=read, name="ingestor-lite-start", daemon=True).start()
    try:
        return found.get(timeout=timeout_s)
    except queue.Empty:
        return None


def _tail(proc: subprocess.Popen[str]) -> str:
    try:
        _, err = proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        return "it did not answer in time"
    lines = [line for line in (err or "").strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _drain(proc: subprocess.Popen[str]) -> None:
    for stream in (proc.stderr,):
        if stream is not None:
            for line in stream:
                log.debug("milvus-lite: %s", line.rstrip())


# -- the child ----------------------------------------------------------------------------------


def serve(directory: str, parent_pid: int) -> int:
    from milvus_lite.adapter.grpc.server import start_server_in_thread

    try:
        server, db, port = start_server_in_thread(data_dir=directory, host="127.0.0.1", port=0)
    except Exception as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"{READY} {port}", flush=True)
    while not stop.wait(0.5):
        if os.getppid() != parent_pid:
            break
    server.stop(grace=5).wait()
    db.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ingestor.lite", description="Milvus Lite for one ingestor process")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--parent-pid", type=int, required=True)
    args = parser.parse_args(argv)
    return serve(args.data_dir, args.parent_pid)


if __name__ == "__main__":
    sys.exit(main())
