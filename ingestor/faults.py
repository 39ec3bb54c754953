"""Deterministic crash points for the fault tests, read once from the environment.

``INGESTOR_FAULT_CRASH_AT=after_embed:3`` kills the process (like ``kill -9``: no cleanup, no
commit) the third time the pipeline passes the point ``after_embed``. Points: ``after_embed``
(vectors computed, nothing written) and ``after_upsert`` (Milvus acknowledged, cache and offsets
not yet). Unset — always, outside tests — the check is one comparison against None.

``INGESTOR_FAULT_SLOW_EMBED_MS=10000:1`` makes the first forward pass take 10 s longer (without
``:N``, every one): a batch slower than ``kafka.max_poll_interval_ms``, or than the shutdown bound.

``INGESTOR_FAULT_OOM_OVER=8`` makes every forward pass over more than 8 texts raise
``torch.OutOfMemoryError``, as a device does on a batch too big for its memory.
``INGESTOR_FAULT_FAIL_TEXT=@@poison@@`` makes every forward pass that holds a text containing that
marker raise, as a model does on the one input it cannot encode.

``INGESTOR_FAULT_HIDE_CODEC=zstd`` makes kafka-python believe the zstd library is missing (any of
gzip, snappy, lz4, zstd; comma-separated), so every batch compressed with it fails to decode in the
real fetch path, as a batch a consumer cannot decode does.

``INGESTOR_FAULT_STAND_IN_MODEL=1`` replaces the model with a stand-in that loads nothing (no torch)
and gives each text a fixed pseudo-random unit vector (`stand_in_vector`): for tests that run many
daemons at once, where a dozen copies of the model would not fit.

``INGESTOR_FAULT_SINK_REJECT=@@reject@@`` hands Milvus a malformed vector (one dimension short) for
every entity whose id contains that marker, so the real server refuses that one record.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Sequence
from typing import Any

_SPEC = os.environ.get("INGESTOR_FAULT_CRASH_AT")
_point, _, _nth = (_SPEC or "").partition(":")
_remaining = int(_nth or "1")

_SLOW = os.environ.get("INGESTOR_FAULT_SLOW_EMBED_MS")
_slow_ms, _, _slow_n = (_SLOW or "").partition(":")
_slow_remaining = int(_slow_n or "-1")

_OOM_OVER = int(os.environ["INGESTOR_FAULT_OOM_OVER"]) if os.environ.get("INGESTOR_FAULT_OOM_OVER") else None
_FAIL_TEXT = os.environ.get("INGESTOR_FAULT_FAIL_TEXT") or None
_SINK_REJECT = os.environ.get("INGESTOR_FAULT_SINK_REJECT") or None
_STAND_IN = os.environ.get("INGESTOR_FAULT_STAND_IN_MODEL") == "1"
_HIDE_CODECS = [c.strip() for c in os.environ.get("INGESTOR_FAULT_HIDE_CODEC", "").split(",") if c.strip()]


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


def model_point(texts: Sequence[str]) -> None:
    """Called by the model stage before every forward pass (first try and each split)."""
    if _OOM_OVER is None and _FAIL_TEXT is None:
        return
    if _OOM_OVER is not None and len(texts) > _OOM_OVER:
        import torch

        raise torch.OutOfMemoryError(f"injected: {len(texts)} texts exceed the fault limit of {_OOM_OVER}")
    if _FAIL_TEXT is not None and any(_FAIL_TEXT in t for t in texts):
        raise RuntimeError("injected: the model cannot encode this text")


def sink_columns(columns: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """Called by the sink on the columns of every upsert; corrupts the marked rows' vectors."""
    if _SINK_REJECT is None:
        return columns
    vectors = [list(v)[:-1] if _SINK_REJECT in i else v for i, v in zip(columns["id"], columns["vector"])]
    return dict(columns, vector=vectors)


def hide_codecs() -> None:
    """Called once the consumer exists: makes kafka-python's codec checks fail for hidden codecs."""
    if not _HIDE_CODECS:
        return
    from kafka import codec

    for name in _HIDE_CODECS:
        setattr(codec, f"has_{name}", lambda: False)


STAND_IN_DIMENSION = 384


def stand_in_vector(text: str) -> Any:
    """The stand-in model's vector of `text`: a unit vector seeded by the text's SHA-256."""
    import hashlib

    import numpy as np

    seed = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")
    v = np.random.default_rng(seed).standard_normal(STAND_IN_DIMENSION).astype(np.float32)
    return v / np.linalg.norm(v)


class StandInEmbedder:
    """What the pipeline asks of `embedder.Embedder`, without a model."""

    device = "cpu"
    identity = "stand-in@fp32"
    dimension = STAND_IN_DIMENSION
    max_seq_length = 256
    is_reference = True

    def prepare(self, texts: list[str]) -> list[Any]:
        from ingestor.tokenizer import Prepared

        return [Prepared(min(len(t) // 4 + 2, self.max_seq_length), False, {"text": t}) for t in texts]

    def collate(self, encodings: list[Any]) -> dict[str, Any]:
        return {"texts": [e["text"] for e in encodings]}

    def forward(self, features: dict[str, Any]) -> Any:
        return self.encode(features["texts"])

    def encode(self, texts: list[str]) -> Any:
        import numpy as np

        return np.stack([stand_in_vector(t) for t in texts]) if texts else np.zeros((0, self.dimension), np.float32)


def stand_in_embedder() -> StandInEmbedder | None:
    """The stand-in model when INGESTOR_FAULT_STAND_IN_MODEL=1, else None."""
    return StandInEmbedder() if _STAND_IN else None
