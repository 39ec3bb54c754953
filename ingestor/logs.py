"""Logging: one line per event, human-readable by default or JSON (`--log-format json`).
Libraries that chatter at INFO (kafka, pymilvus, transformers) are held at WARNING."""

from __future__ import annotations

import json
import logging
import sys
import time

_NOISY = ("kafka", "pymilvus", "urllib3", "transformers", "sentence_transformers", "httpx", "filelock", "milvus_lite",
          "faiss")
# Milvus Lite's in-process gRPC server logs an ERROR traceback for a probe pymilvus makes of
# every server (AllocTimestamp, which Lite does not implement); it is harmless.
_SILENT = ("grpc._server",)


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


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in _NOISY:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLevelName(level)))
    for name in _SILENT:
        logging.getLogger(name).setLevel(logging.CRITICAL)
