"""The default model really loaded on each installed non-torch backend: exported into a fresh cache
dir, run through the pipeline's own calls (prepare -> collate -> forward) and `encode`, and
compared with torch fp32. Skipped, saying which extra is missing, where it is not installed: the
main venv has neither, so deploy/local/test.sh runs this file in the second venv that
bootstrap.sh builds with both."""

from __future__ import annotations

import numpy as np
import pytest

from ingestor.backends import missing_modules
from ingestor.config import ModelSettings
from ingestor.embedder import Embedder, min_cosine

TEXTS = [
    "Return a new list containing all items from the iterable in ascending order.",
    "Offsets are committed only after the vectors are written.",
    "A short one.",
    "How do I read a file line by line in Python?",
    "Embeddings map text to vectors so that similar meanings lie close together in space. " * 6,
]


def _case(backend: str, precision: str, floor: float) -> object:
    """A case skipped at collection (before the torch reference loads) when its extra is missing."""
    missing = missing_modules(backend, precision)
    reason = f"the {backend} backend needs pip install 'ingestor[{backend}]' (missing {', '.join(missing)})"
    return pytest.param(
        backend, precision, floor, id=f"{backend}-{precision}", marks=pytest.mark.skipif(bool(missing), reason=reason)
    )


CASES = [
    _case("onnx", "fp32", 0.99),
    _case("onnx", "int8", 0.95),
    _case("openvino", "fp32", 0.99),
    _case("openvino", "int8", 0.95),
]


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return Embedder(ModelSettings(device="cpu")).encode(TEXTS)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("models"))


@pytest.mark.timeout(900)
@pytest.mark.parametrize(("backend", "precision", "floor"), CASES)
def test_backend_agrees_with_torch_fp32(backend, precision, floor, reference, cache_dir, caplog):
    settings = ModelSettings(backend=backend, precision=precision, cache_dir=cache_dir)
    embedder = Embedder(settings, torch_threads=2)
    assert embedder.identity == f"{settings.name}@{backend}-{precision}"
    assert embedder.device == "cpu" and embedder.dimension == reference.shape[1]

    prepared = embedder.prepare(TEXTS)
    vectors = embedder.forward(embedder.collate([p.encoding for p in prepared]))
    assert vectors.dtype == np.float32 and vectors.shape == reference.shape
    assert min_cosine(vectors, embedder.encode(TEXTS)) > 0.9999, "the pipeline's path and encode agree"
    assert min_cosine(vectors, reference) >= floor

    caplog.clear()
    with caplog.at_level("INFO", logger="ingestor.backends"):
        again = Embedder(settings)
    assert not [r for r in caplog.records if r.message.startswith("exporting")], "the export is reused"
    assert min_cosine(again.encode(TEXTS), vectors) > 0.9999
