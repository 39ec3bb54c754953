"""Milvus Lite in a child process.

Milvus Lite 3 is a pure-Python gRPC server: given a file URI, pymilvus starts it on threads of
*this* process, where validating and logging each upserted row holds the GIL (more CPU per
record than the rest of the pipeline's Python). On a GPU that is time the model
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
import collections
import fcntl
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ingestor.config import GC_GEN0_THRESHOLD
from ingestor.errors import StartupError, chain
from ingestor.memory import tune_gc
from ingestor.patches import fingerprint

log = logging.getLogger(__name__)

READY = "ingestor-lite-ready"
WARNING = "ingestor-lite-warning"
WIRE_FLOATS_LOSS = (
    "Milvus Lite type-checks every element of every vector it is sent: about a third of its CPU per upserted row"
)
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 15.0


def data_dir(uri: str) -> str:
    """The directory pymilvus would hand Milvus Lite for this URI (the same data either way)."""
    return os.path.abspath(os.path.expanduser(uri))


class LiteLock:
    """Milvus Lite serves one process per data file; a second one must refuse to start clearly."""

    def __init__(self, db_path: str) -> None:
        self.path = Path(db_path).expanduser().resolve()
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StartupError(self.busy_message()) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def busy_message(self) -> str:
        return (
            f"another process is using the Milvus Lite file {self.path}. Milvus Lite admits one process "
            "per file: for several workers run a Milvus server (or serve the file to all of them with "
            "`python -m ingestor.lite --data-dir DIR --port 19540`) and set milvus.uri to its http:// address."
        )

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def lite_file_busy(exc: BaseException) -> bool:
    """Milvus Lite's own lock (a process that is not ingestor holds the file)."""
    if any(type(seen).__name__ == "DataDirLockedError" or "holds the lock" in str(seen) for seen in chain(exc)):
        return True
    return "open local milvus failed" in str(exc).lower()


class LiteServer:
    """One child `python -m ingestor.lite` serving one data directory on a free loopback port."""

    def __init__(self, uri: str) -> None:
        self.data_dir = data_dir(uri)
        self._proc: subprocess.Popen[str] | None = None
        self._port: queue.Queue[int | None] = queue.Queue()
        self._errors: collections.deque[str] = collections.deque(maxlen=20)
        self._guard = threading.RLock()  # the writer and the health watch may both reconnect
        self.uri = ""

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def spawn(self) -> None:
        """Start the child without waiting for it (its ~2 s start can overlap the model load)."""
        with self._guard:
            self._spawn()

    def _spawn(self) -> None:
        if self.alive:
            return
        Path(self.data_dir).parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "ingestor.lite", "--data-dir", self.data_dir, "--parent-pid", str(os.getpid())]
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        self._proc, self.uri, self._port = proc, "", queue.Queue()
        self._errors.clear()
        # Both pipes are read to the end, so the child never blocks on a full one.
        threading.Thread(target=_read_stdout, args=(proc, self._port), name="ingestor-lite-out", daemon=True).start()
        self._stderr = threading.Thread(
            target=_read_stderr, args=(proc, self._errors), name="ingestor-lite-err", daemon=True
        )
        self._stderr.start()

    def start(self) -> str:
        """Spawn the child if it is not running, wait until it serves; returns `http://127.0.0.1:port`."""
        with self._guard:
            return self._start()

    def _start(self) -> str:
        if self.alive and self.uri:
            return self.uri
        self._spawn()
        assert self._proc is not None
        try:
            port = self._port.get(timeout=START_TIMEOUT_S)
        except queue.Empty:
            port = None
        if port is None:
            self._stop()
            self._stderr.join(timeout=2)  # its last words
            reason = self._errors[-1] if self._errors else "no reason given"
            raise StartupError(f"Milvus Lite could not start on {self.data_dir}: {reason}")
        self.uri = f"http://127.0.0.1:{port}"
        log.info("Milvus Lite serving %s from a child process (pid %d)", self.data_dir, self._proc.pid)
        return self.uri

    def stop(self) -> None:
        """Ask the child to drain and close the database; kill it if it does not within the bound."""
        with self._guard:
            self._stop()

    def _stop(self) -> None:
        proc, self._proc, self.uri = self._proc, None, ""
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log.warning("Milvus Lite (pid %d) did not stop in %.0f s; killing it", proc.pid, STOP_TIMEOUT_S)
            proc.kill()
            proc.wait()


def _read_stdout(proc: subprocess.Popen[str], port: queue.Queue[int | None]) -> None:
    """Hands over the port the child announces (None if it ends first), then drains."""
    assert proc.stdout is not None
    announced = False
    for line in proc.stdout:  # a line before the announcement (a library's notice) is skipped
        if not announced and line.startswith(READY):
            port.put(int(line.split()[1]))
            announced = True
        elif line.startswith(WARNING):
            log.warning("milvus-lite: %s", line.removeprefix(WARNING).strip())
        else:
            log.debug("milvus-lite: %s", line.rstrip())
    if not announced:
        port.put(None)


def _read_stderr(proc: subprocess.Popen[str], errors: collections.deque[str]) -> None:
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.strip():
            errors.append(line.strip())
            log.debug("milvus-lite: %s", line.rstrip())


# -- the child ----------------------------------------------------------------------------------


class _WireFloats(list[float]):
    """A float vector as it came off the wire, shown to Lite's validator: its type and length are
    the real ones, and iterating it yields nothing, so the per-element loop does no work."""

    __slots__ = ()

    def __iter__(self) -> Iterator[float]:
        return iter(())


# Milvus Lite 3.2.2's `validate_record`, which `trust_wire_floats` wraps, as read.
VALIDATE_FINGERPRINT = "51e1a5b3f524c176"
WIRE_FLOATS = "milvus-lite validate_record (as the engine's collection calls it)"


def wire_floats_unfit() -> str | None:
    """Why `trust_wire_floats` cannot be applied to the installed Milvus Lite, or None: its
    validator must be the one it was read against, called by the engine under that name."""
    from milvus_lite.engine import collection
    from milvus_lite.schema import validation

    if fingerprint(getattr(validation, "validate_record", None)) != VALIDATE_FINGERPRINT:
        return "this Milvus Lite's validate_record is not the one it was read against"
    if getattr(collection, "validate_record", None) is not validation.validate_record:
        return "the engine's collection no longer calls validate_record by that name"
    if not callable(getattr(validation, "_find_float_vector", None)):
        return "validation has no _find_float_vector"
    return None


def trust_wire_floats() -> bool:
    """Skip Milvus Lite's per-element type check of float vectors on insert, in this (the child)
    process only. Over gRPC a float vector arrives as protobuf `repeated float`, so each element
    is a Python float by construction; the check (384 isinstance calls a row) was a third of
    Lite's CPU per upserted row. Presence, type and width are still checked, by Lite itself. Applied
    only to the validator it was read against (`wire_floats_unfit`); returns whether it was applied."""
    from milvus_lite.engine import collection
    from milvus_lite.schema import validation

    if wire_floats_unfit() is not None:
        return False
    original = validation.validate_record
    find_vector = validation._find_float_vector

    def validate_record(record: Any, schema: Any, default_properties: Any = None) -> None:
        field = find_vector(schema) if isinstance(record, dict) else None
        vector = record.get(field.name) if field is not None else None
        if field is None or type(vector) is not list:  # noqa: E721 - what the wire gives; else as before
            original(record, schema, default_properties=default_properties)
            return
        record[field.name] = _WireFloats(vector)
        try:
            original(record, schema, default_properties=default_properties)
        finally:
            record[field.name] = vector

    collection.validate_record = validate_record
    return True


# Milvus Lite's own gRPC server keeps gRPC's default ping policy (at most one ping per 5 minutes on
# a channel without calls, GOAWAY "too_many_pings" after two more). pymilvus pings every 10 s, idle
# or not, so an idle client (a test's reader, a daemon between bursts) got cut off and failed its
# next call. This server takes pings every 5 s and never strikes.
_SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", 256 << 20),  # as Lite's own server (and Milvus standalone)
    ("grpc.max_send_message_length", 256 << 20),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.http2.max_ping_strikes", 0),
]


def _start_server(directory: str, host: str, port: int) -> tuple[Any, Any, int]:
    """Milvus Lite's servicer on a gRPC server of ours: (server, db, bound port)."""
    from concurrent import futures

    import grpc
    from milvus_lite.adapter.grpc.server import DEFAULT_MAX_WORKERS
    from milvus_lite.adapter.grpc.servicer import MilvusServicer
    from milvus_lite.db import MilvusLite
    from pymilvus.grpc_gen import milvus_pb2_grpc

    db = MilvusLite(directory)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=DEFAULT_MAX_WORKERS), options=_SERVER_OPTIONS)
    milvus_pb2_grpc.add_MilvusServiceServicer_to_server(MilvusServicer(db), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    server.start()
    return server, db, bound


def serve(directory: str, parent_pid: int | None, host: str = "127.0.0.1", port: int = 0) -> int:
    """Serve `directory` until SIGTERM/SIGINT, or until `parent_pid` is no longer the parent."""
    unfit = wire_floats_unfit()
    if unfit is None:
        trust_wire_floats()
    else:  # on stdout, which the parent logs at WARNING (it keeps stderr for errors, at DEBUG)
        print(f"{WARNING} {WIRE_FLOATS}: cannot be used ({unfit}); {WIRE_FLOATS_LOSS}", flush=True)
    try:
        server, db, port = _start_server(directory, host, port)
    except Exception as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return 2
    tune_gc(GC_GEN0_THRESHOLD)  # Lite builds several dicts per upserted row
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"{READY} {port}", flush=True)
    while not stop.wait(0.5):
        if parent_pid is not None and os.getppid() != parent_pid:
            break
    server.stop(grace=5).wait()
    db.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ingestor.lite",
        description="Milvus Lite over gRPC: for one ingestor process (--parent-pid), or as a server that "
        "several workers share (--port, e.g. from `deploy/local/services.sh up --lite-server`)",
    )
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--parent-pid", type=int, help="exit when this process is no longer the parent")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port (announced on stdout)")
    args = parser.parse_args(argv)
    return serve(args.data_dir, args.parent_pid, args.host, args.port)


if __name__ == "__main__":
    sys.exit(main())
