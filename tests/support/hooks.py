"""The fault suite's hooks (`ingestor.hooks.Hooks`), configured by environment variables: the
harness runs `ingestor run` with ``INGESTOR_HOOKS=tests.support.hooks:from_environment`` whenever
one of these is set (`harness.with_hooks`), and the daemon installs what `from_environment` returns.

``INGESTOR_FAULT_CRASH_AT=after_embed:3`` kills the process (like ``kill -9``: no cleanup, no
commit) the third time the pipeline passes the point ``after_embed``. Points: ``after_embed``
(vectors computed, nothing written) and ``after_upsert`` (Milvus acknowledged, cache and offsets
not yet).

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
from collections.abc import Mapping, Sequence
from typing import Any

from ingestor.config import ModelSettings
from ingestor.hooks import Hooks


class FaultHooks(Hooks):
    """The faults `env`'s INGESTOR_FAULT_* variables ask for."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.crash_spec = env.get("INGESTOR_FAULT_CRASH_AT")
        self.crash_point, _, nth = (self.crash_spec or "").partition(":")
        self.crash_remaining = int(nth or "1")
        slow = env.get("INGESTOR_FAULT_SLOW_EMBED_MS")
        slow_ms, _, slow_n = (slow or "").partition(":")
        self.slow_s = int(slow_ms) / 1000.0 if slow else None
        self.slow_remaining = int(slow_n or "-1")  # -1: every pass
        self.oom_over = int(env["INGESTOR_FAULT_OOM_OVER"]) if env.get("INGESTOR_FAULT_OOM_OVER") else None
        self.fail_text = env.get("INGESTOR_FAULT_FAIL_TEXT") or None
        self.sink_reject = env.get("INGESTOR_FAULT_SINK_REJECT") or None
        self.stand_in = env.get("INGESTOR_FAULT_STAND_IN_MODEL") == "1"
        self.hidden_codecs = [c.strip() for c in env.get("INGESTOR_FAULT_HIDE_CODEC", "").split(",") if c.strip()]

    def point(self, name: str) -> None:
        if self.crash_spec is None or name != self.crash_point:
            return
        self.crash_remaining -= 1
        if self.crash_remaining <= 0:
            os.kill(os.getpid(), signal.SIGKILL)

    def before_batch(self) -> None:
        if self.slow_s is None or self.slow_remaining == 0:
            return
        self.slow_remaining -= 1
        time.sleep(self.slow_s)

    def before_forward(self, texts: Sequence[str]) -> None:
        if self.oom_over is not None and len(texts) > self.oom_over:
            import torch

            raise torch.OutOfMemoryError(f"injected: {len(texts)} texts exceed the fault limit of {self.oom_over}")
        if self.fail_text is not None and any(self.fail_text in t for t in texts):
            raise RuntimeError("injected: the model cannot encode this text")

    def columns(self, columns: dict[str, list[Any]]) -> dict[str, list[Any]]:
        """Corrupts the marked rows' vectors."""
        if self.sink_reject is None:
            return columns
        reject = self.sink_reject
        vectors = [list(v)[:-1] if reject in i else v for i, v in zip(columns["id"], columns["vector"])]
        return dict(columns, vector=vectors)

    def consumer_created(self, consumer: Any) -> None:
        """Makes kafka-python's codec checks fail for the hidden codecs."""
        if not self.hidden_codecs:
            return
        from kafka import codec

        for name in self.hidden_codecs:
            setattr(codec, f"has_{name}", lambda: False)

    def model(self, settings: ModelSettings) -> Any | None:
        return StandInEmbedder() if self.stand_in else None


def from_environment() -> FaultHooks:
    """What `INGESTOR_HOOKS` names: the hooks of this process's INGESTOR_FAULT_* variables."""
    return FaultHooks(os.environ)


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
