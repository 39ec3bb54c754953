"""pad_encodings: the vectorised padding gives exactly what the tokenizer's own pad gives."""

from __future__ import annotations

import random

import numpy as np
import pytest

from ingestor.tokenizer import pad_encodings


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from ingestor.config import DEFAULT_MODEL
    from ingestor.embedder import resolve_model_path

    return AutoTokenizer.from_pretrained(resolve_model_path(DEFAULT_MODEL))


def encodings_of(tokenizer, texts):
    enc = tokenizer(texts, truncation=True, max_length=64)
    return [{k: enc[k][i] for k in enc.keys()} for i in range(len(texts))]


@pytest.mark.parametrize("side", ["right", "left"])
def test_same_as_the_tokenizers_pad(tokenizer, side):
    rng = random.Random(7)
    words = "the quick brown fox jumps over a lazy dog while embeddings wait on padding".split()
    texts = [" ".join(rng.choices(words, k=rng.randint(1, 80))) for _ in range(50)]
    encodings = encodings_of(tokenizer, texts)
    tokenizer.padding_side = side
    try:
        want = tokenizer.pad(encodings, padding=True, return_tensors="np")
    finally:
        tokenizer.padding_side = "right"
    got = pad_encodings(encodings, tokenizer.pad_token_id, side, tokenizer.pad_token_type_id)
    assert set(got) == set(want.keys())
    for key in got:
        assert got[key].dtype == np.int64
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_one_encoding_needs_no_padding_and_none_gives_nothing(tokenizer):
    [enc] = encodings_of(tokenizer, ["hello"])
    got = pad_encodings([enc], tokenizer.pad_token_id)
    assert got["input_ids"].tolist() == [enc["input_ids"]]
    assert got["attention_mask"].all()
    assert pad_encodings([], 0) == {}
