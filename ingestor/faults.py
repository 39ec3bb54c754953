"""Deterministic crash points for the fault tests, read once from the environment.

``INGESTOR_FAULT_CRASH_AT=after_embed:3`` kills the process (like ``kill -9``: no cleanup, no
commit) the third time the pipeline passes the point ``after_embed``. Points: ``after_embed``
(vectors computed, nothing written) and ``after_upsert`` (Milvus acknowledged, cache and offsets
not yet). Unset — always, outside tests — the check is one comparison against None.

``INGESTOR_FAULT_SLOW_EMBED_MS=10000:1`` makes the first forward pass take 10 s longer (without
``:N``, every one): a batch slower than ``kafka.max_poll_interval_ms``, or than the shutdown bound.
"""

from __future__ import annotations

import os
import signal
import time

_SPEC = os.environ.get("INGESTOR_FAULT_CRASH_AT")
_point, _, _nth = (_SPEC or "").partition(":")
_remaining = int(_nth or "1")

_SLOW = os.environ.get("INGESTOR_FAULT_SLOW_EMBED_MS")
_slow_ms, _, _slow_n = (_SLOW or "").partition(":")
_slow_remaining = int(_slow_n or "-1")


def crash_point(name: str) -> None:
    global _remaining
    if _SPEC is None or name != _point:
        return
    _remaining -= 1
    if _remaining <= 0:
        os.kill(os.getpid(), signal.SIGKILL)


def slow_point() -> None:
    """Called by the model stage before each forward pass."""
    global _slow_remaining
    if _SLOW is None or _slow_remaining == 0:
        return
    _slow_remaining -= 1
    time.sleep(int(_slow_ms) / 1000.0)
