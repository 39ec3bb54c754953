"""The model's failures, translated in one place (`embedder.encode_all`): a failed pass is
bisected to the texts that fail alone, out of memory included; outages and aborts propagate."""

from __future__ import annotations

import numpy as np
import pytest

from ingestor.embedder import encode_all
from ingestor.errors import Aborted, Reason, RetriableError


def _model(poison: set[str], calls: list[list[str]], oom_over: int = 10**9):
    def encode(texts: list[str]) -> np.ndarray:
        calls.append(list(texts))
        if len(texts) > oom_over:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        bad = [t for t in texts if t in poison]
        if bad:
            raise ValueError(f"cannot encode {bad[0]!r}")
        return np.array([[float(len(t)), 1.0] for t in texts], dtype=np.float32)

    return encode


def test_one_forward_pass_when_it_succeeds():
    calls: list[list[str]] = []
    out = encode_all(["a", "bb"], _model(set(), calls), forward=lambda: np.ones((2, 2), dtype=np.float32))
    assert calls == [] and out.errors == {} and [v.tolist() for v in out.vectors] == [[1, 1], [1, 1]]


def test_a_failed_pass_is_bisected_to_the_text_that_fails_alone():
    calls: list[list[str]] = []
    texts = ["a", "bb", "poison", "dddd", "eeeee"]

    def forward() -> np.ndarray:
        raise ValueError("the batch failed")

    out = encode_all(texts, _model({"poison"}, calls), forward=forward)
    assert list(out.errors) == [2] and out.errors[2].reason == Reason.EMBED_FAILED.value
    assert "cannot encode 'poison'" in str(out.errors[2])
    assert out.vectors[2] is None and [v[0] for i, v in enumerate(out.vectors) if i != 2] == [1, 2, 4, 5]


def test_out_of_memory_splits_until_the_pieces_fit():
    calls: list[list[str]] = []
    out = encode_all([str(i) for i in range(8)], _model(set(), calls, oom_over=2))
    assert out.errors == {} and all(v is not None for v in out.vectors)
    assert max(len(c) for c in calls if len(c) <= 2) == 2


@pytest.mark.parametrize("error", [RetriableError("model", "device lost"), Aborted()])
def test_outages_and_aborts_propagate_for_the_caller_to_retry(error):
    def forward() -> np.ndarray:
        raise error

    with pytest.raises(type(error)):
        encode_all(["a"], _model(set(), []), forward=forward)
