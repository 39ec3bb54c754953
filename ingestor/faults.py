"""Deterministic crash points for the fault tests, read once from the environment.

``INGESTOR_FAULT_CRASH_AT=after_embed:3`` kills the process (like ``kill -9``: no cleanup, no
commit) the third time the pipeline passes the point ``after_embed``. Points: ``after_embed``
(vectors computed, nothing written) and ``after_upsert`` (Milvus acknowledged, cache and offsets
not yet). Unset — always, outside tests — the check is one comparison against None.
"""

from __future__ import annotations

import os
import signal

_SPEC = os.environ.get("INGESTOR_FAULT_CRASH_AT")
_point, _, _nth = (_SPEC or "").partition(":")
_remaining = int(_nth or "1")


def crash_point(name: str) -> None:
    global _remaining
    if _SPEC is None or name != _point:
        return
    _remaining -= 1
    if _remaining <= 0:
        os.kill(os.getpid(), signal.SIGKILL)
