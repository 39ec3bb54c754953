"""Health of `ingestor serve`, in the daemon's conventions (`ingestor.health`): `/healthz` and
`/readyz` answer `{"status": "ok" | "fail", "reason"}`, 200 or 503. Pure rules over `Vitals`.

- alive: the model thread runs;
- ready: alive, not stopping, and the collection was not found written by another identity. A
  Milvus that does not answer leaves it ready (embeddings need no Milvus; `/search` answers 503
  meanwhile) and is named in the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from ingestor.health import MILVUS_MISSED_PINGS, Status


@dataclass(frozen=True, slots=True)
class Vitals:
    model_thread_alive: bool = True
    stopping: bool = False
    refused: str = ""  # the collection's identity is not ours: what to change
    milvus_silent_s: float = 0.0
    milvus_ping_interval_s: float = 5.0
    milvus_error: str = ""


def liveness(v: Vitals) -> Status:
    if not v.model_thread_alive:
        return Status(False, "the model thread stopped")
    return Status(True, "alive")


def readiness(v: Vitals) -> Status:
    alive = liveness(v)
    if not alive.ok:
        return alive
    if v.stopping:
        return Status(False, "shutting down")
    if v.refused:
        return Status(False, v.refused)
    if v.milvus_silent_s > MILVUS_MISSED_PINGS * v.milvus_ping_interval_s:
        return Status(True, f"serving embeddings; /search unavailable: {v.milvus_error or 'milvus did not answer'}")
    return Status(True, "serving")
