"""Tokenising through the Rust core directly must give exactly what the transformers call gives:
the same ids, masks and truncation flags, on the whole bundled corpus and on odd probe texts."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingestor.config import DEFAULT_MODEL
from ingestor.corpus import SAMPLE, load_corpus
from ingestor.embedder import resolve_model_path
from ingestor.tokenizer import PROBE_TEXTS, Tokenizer, batch_tokenizer, pad_encodings
from tests.support.fakes import slow_tokenizer

MAX = 256


@pytest.fixture(scope="module")
def tokenizer():
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(resolve_model_path(DEFAULT_MODEL))


def _fast() -> object:
    from transformers import AutoTokenizer

    return batch_tokenizer(AutoTokenizer.from_pretrained(resolve_model_path(DEFAULT_MODEL)), MAX)


_FAST = _fast()


def slow(tokenizer) -> Tokenizer:
    """The transformers path (no Rust core)."""
    return slow_tokenizer(tokenizer, MAX)


def test_the_rust_path_matches_transformers_on_the_whole_corpus(tokenizer):
    fast = batch_tokenizer(tokenizer, MAX)
    assert fast is not None
    texts = [r.text for r in load_corpus(SAMPLE)] + PROBE_TEXTS
    ours, theirs = fast.prepare(texts), slow(tokenizer).prepare_slow(texts)
    assert [fast.full(p) for p in ours] == [p.encoding for p in theirs]
    assert [(p.tokens, p.truncated) for p in ours] == [(p.tokens, p.truncated) for p in theirs]
    assert any(p.truncated for p in ours) and not all(p.truncated for p in ours)
    assert max(p.tokens for p in ours) == MAX


def test_its_settings_never_touch_the_models_tokenizer(tokenizer):
    fast = batch_tokenizer(tokenizer, 8)
    assert fast is not None and fast.rust is not tokenizer._tokenizer
    tokenizer("probe", truncation=True, max_length=MAX)  # transformers sets the shared core per call
    shared = tokenizer._tokenizer.truncation
    assert [p.tokens for p in fast.prepare(["word " * 50])] == [8]
    assert tokenizer._tokenizer.truncation == shared


class Reversing:
    """A tokenizer whose Python side does something its Rust core does not."""

    def __init__(self, real) -> None:
        self._tokenizer, self.model_input_names, self.real = real._tokenizer, real.model_input_names, real

    def __call__(self, texts, **kwargs):
        return self.real([t[::-1] for t in texts], **kwargs)


def test_a_tokenizer_that_disagrees_on_the_probes_keeps_the_transformers_path(tokenizer):
    assert batch_tokenizer(Reversing(tokenizer), MAX) is None


def test_a_tokenizer_without_a_rust_core_keeps_the_transformers_path():
    class Plain:
        model_input_names = ["input_ids"]

    assert batch_tokenizer(Plain(), MAX) is None


@pytest.mark.parametrize("side", ["right", "left"])
def test_padded_batches_are_identical_with_derived_masks(tokenizer, side):
    """The Rust path hands over ids only; padding makes the mask and type ids. The tensors the
    model sees must equal those from transformers' full rows, for either padding side."""
    fast = batch_tokenizer(tokenizer, MAX)
    assert fast is not None and set(fast.derived) == {"attention_mask", "token_type_ids"}
    texts = [r.text for r in load_corpus(SAMPLE)][:300] + PROBE_TEXTS
    ours = pad_encodings([p.encoding for p in fast.prepare(texts)], 0, side, 0, fast.derived)
    theirs = pad_encodings([p.encoding for p in slow(tokenizer).prepare_slow(texts)], 0, side, 0)
    assert set(ours) == set(theirs)
    for key in theirs:
        assert ours[key].dtype == theirs[key].dtype and np.array_equal(ours[key], theirs[key]), key


def test_ids_counted_whole_are_what_the_forward_pass_takes_for_every_text_within_the_limit(tokenizer):
    """Chunking counts a record with `encode_many` and hands the ids on: for a text within the
    limit, the encoding made from them is exactly what `prepare` (the slow path here) gives."""
    ours = Tokenizer(tokenizer, MAX)
    texts = [r.text for r in load_corpus(SAMPLE)] + PROBE_TEXTS
    tokens = ours.encode_many(texts)
    assert tokens is not None
    ids = [t.ids for t in tokens]
    assert ours.counts(texts) == [len(i) for i in ids]
    fits = [(t, i) for t, i in zip(texts, ids) if len(i) <= MAX]
    assert len(fits) > len(texts) // 2
    prepared = ours.prepare([t for t, _ in fits])
    assert [ours.encoding(i) for _, i in fits] == [p.encoding for p in prepared]
    assert [(len(i), False) for _, i in fits] == [(p.tokens, p.truncated) for p in prepared]
    assert slow(tokenizer).encode_many(texts) is None, "without a Rust core there are no ids to hand on"


def test_ascii_texts_normalised_in_python_tokenise_exactly_as_through_the_rust_normalizer(tokenizer):
    fast = batch_tokenizer(tokenizer, MAX)
    assert fast is not None and fast.ascii is not None, "MiniLM's BERT normalizer takes the ASCII path"
    texts = [r.text for r in load_corpus(SAMPLE) if r.text.isascii()] + [t for t in PROBE_TEXTS if t.isascii()]
    texts += ["".join(chr(c) for c in range(i, 128)) for i in range(0, 128, 7)]
    assert len(texts) > 1000
    for whole in (True, False):
        ours = [(e.ids, bool(e.overflowing)) for e in fast.encode(texts, whole=whole)]
        core = fast.whole if whole else fast.rust
        theirs = [(e.ids, bool(e.overflowing)) for e in core.encode_batch_fast(texts, add_special_tokens=True)]
        assert ours == theirs


@given(st.lists(st.text(alphabet=st.characters(max_codepoint=127), max_size=80) | st.text(max_size=20), max_size=8))
@settings(max_examples=300, deadline=None)
def test_mixed_batches_keep_their_order_and_match_the_rust_normalizer(texts):
    fast = _FAST
    ours = [e.ids for e in fast.encode(texts, whole=True)]
    assert ours == [e.ids for e in fast.whole.encode_batch_fast(texts, add_special_tokens=True)]


def test_a_normalizer_other_than_berts_gets_no_ascii_path():
    from ingestor.tokenizer import ascii_normalizer

    assert ascii_normalizer({"type": "NFKC"}) is None and ascii_normalizer(None) is None
    normalize = ascii_normalizer({"type": "BertNormalizer", "clean_text": True, "lowercase": False})
    assert normalize is not None and normalize("A\tb\x00C") == "A bC"


def test_offsets_asked_with_the_ids_are_the_splitters_cut_points(tokenizer):
    """A text tokenised with offsets (ASCII through the Python normaliser where that keeps its
    length, the rest through the Rust one) gives the same ids and the same token spans as
    `offsets`, which the splitter asks for otherwise."""
    ours = Tokenizer(tokenizer, MAX)
    texts = [r.text for r in load_corpus(SAMPLE)][:300] + PROBE_TEXTS + ["tab\tand\x00nul", "Ünï \x01 côdé"]
    plain = ours.encode_many(texts)
    with_offsets = ours.encode_many(texts, [i % 2 == 0 for i in range(len(texts))])
    assert [t.ids for t in with_offsets] == [t.ids for t in plain]
    for i, t in enumerate(with_offsets):
        assert t.offsets == (ours.offsets(texts[i]) if i % 2 == 0 else None), texts[i][:40]
