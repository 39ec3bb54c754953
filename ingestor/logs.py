"""Logging: one line per event, human-readable by default or JSON (`--log-format json`).
Libraries that chatter at INFO (kafka, pymilvus, transformers) are held at WARNING."""

from __future__ import annotations

import json
import logging
import sys
import time

_NOISY = ("kafka", "urllib3", "transformers", "sentence_transformers", "httpx", "filelock", "milvus_lite", "faiss")
# Milvus Lite's in-process gRPC server logs an ERROR traceback for a probe pymilvus makes of
# every server (AllocTimestamp, which Lite does not implement); it is harmless.
#
# pymilvus logs every failed call at ERROR with a traceback before raising it; the sink translates
# each failure (retriable or a bad record) and reports it once, in words that say what happens next.
_SILENT = ("grpc._server", "pymilvus")


class KafkaClientNoise(logging.Filter):
    """kafka-python reports normal moments of a cluster as failures: a topic that does not exist
    yet while the broker auto-creates it ("Topic … not found in cluster metadata", at ERROR), a
    group coordinator that is not ready yet on a young cluster or moved to another broker ("Marking
    the coordinator dead … NotCoordinatorError", six times on a first start), and its I/O loop's
    self-check ("Task … ran for 0.109s … blocking the event loop"), which fires whenever the loop
    waits for the GIL behind the model or the batcher. The client retries by itself and nothing is
    wrong: they are kept at DEBUG. Real outages (a broker that does not answer) still warn."""

    _COORDINATOR_MOVES = ("NotCoordinator", "CoordinatorNotAvailable", "CoordinatorLoadInProgress")

    def __init__(self, debug: bool) -> None:
        super().__init__()
        self.debug = debug

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("kafka.") and record.exc_info and record.exc_info[1] is not None and not self.debug:
            # kafka-python logs a lost connection with its traceback (log.exception), which reads
            # like a crash; the cause on one line says all an operator can act on.
            error = record.exc_info[1]
            record.msg, record.args = f"{record.getMessage()} ({type(error).__name__}: {error})", None
            record.exc_info = record.exc_text = None
        if not self._benign(record):
            return True
        if not self.debug:
            return False
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True

    def _benign(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("kafka.") or record.levelno < logging.WARNING:
            return False
        template = str(record.msg)
        if template.startswith(
            ("Topic %s not found in cluster metadata", "Topic %s is not available during auto-create")
        ):
            return True
        if template.startswith("Task ") and "blocking the event loop" in template:
            return True
        if template.startswith("Marking the coordinator dead"):
            return any(kind in str(record.args) for kind in self._COORDINATOR_MOVES)
        return False


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def adopt_pymilvus() -> None:
    """pymilvus configures its own loggers when it is first imported (a handler of its own, level
    WARNING, no propagation), after ours were set up: take them back. Call right after importing it."""
    debug = logging.getLogger().level <= logging.DEBUG
    for name in ("pymilvus", "pymilvus.milvus_client", "pymilvus.bulk_writer"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
        logger.setLevel(logging.DEBUG if debug else logging.CRITICAL)


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.addFilter(KafkaClientNoise(debug=level == "DEBUG"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in _NOISY:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLevelName(level)))
    for name in _SILENT:
        logging.getLogger(name).setLevel(logging.DEBUG if level == "DEBUG" else logging.CRITICAL)


def quiet_kafka_clients() -> None:
    """Keep kafka-python's own lines (a connection refused, retried, again) out of a command that
    reports each dependency in one line of its own. Its records still reach the handler that reads
    refusals from them (`kafka_common`), which sits below this logger."""
    kafka = logging.getLogger("kafka")
    kafka.propagate = False
    if not kafka.handlers:  # without any handler Python's last resort would print them anyway
        kafka.addHandler(logging.NullHandler())
