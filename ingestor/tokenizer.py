"""Tokenising for the pipeline: once per text, on the batcher thread (its token count decides the
batch cut, its ids feed the forward pass), then padding a batch into tensors.

The model's own tokenizer is a transformers tokenizer; when it has a Rust core, that core is called
directly (`RustTokenizer`), which is checked at load against transformers on probe texts.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Tokens:
    """A text's token ids, special tokens included, and where asked for, the character span of
    each token that is not a special one."""

    ids: list[int]
    offsets: list[tuple[int, int]] | None = None


@dataclass(frozen=True, slots=True)
class Prepared:
    """A text tokenised once, for both the batch cut (its length) and the forward pass."""

    tokens: int
    truncated: bool
    encoding: dict[str, list[int]]


def pad_encodings(
    encodings: list[dict[str, list[int]]],
    pad_id: int,
    side: str = "right",
    pad_type_id: int = 0,
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
        flat = np.fromiter(
            itertools.chain.from_iterable(e[key] for e in encodings), dtype=np.int64, count=int(lengths.sum())
        )
        array = np.full((len(encodings), width), fill.get(key, 0), dtype=np.int64)
        array[keep] = flat
        out[key] = array
    # Keys the rows leave out, for a single unpadded sequence: a mask of ones, type ids of zeros.
    if "attention_mask" in derived:
        out["attention_mask"] = keep.astype(np.int64)
    if "token_type_ids" in derived:
        out["token_type_ids"] = np.where(keep, 0, pad_type_id).astype(np.int64)
    return out


class Tokenizer:
    """The model's tokenizer, as the pipeline uses it."""

    def __init__(self, hf: Any, max_length: int) -> None:
        self.hf = hf  # the transformers tokenizer
        self.max_length = max_length
        self.rust = batch_tokenizer(hf, max_length)

    def prepare(self, texts: list[str]) -> list[Prepared]:
        """Tokenise once: lengths for the batcher and ids for the model. Runs on the batcher
        thread, so tokenisation overlaps the forward pass of the previous batch."""
        if not texts:
            return []
        if self.rust is not None:
            return self.rust.prepare(texts)
        return self.prepare_slow(texts)

    def prepare_slow(self, texts: list[str]) -> list[Prepared]:
        """Through the transformers tokenizer: for tokenizers without a Rust core."""
        limit = self.max_length
        # One token over the limit tells us whether the model would cut the text.
        enc = self.hf(texts, add_special_tokens=True, truncation=True, max_length=limit + 1)
        keys = list(enc.keys())
        rows = [{k: enc[k][i] for k in keys} for i in range(len(texts))]
        cut = [i for i, row in enumerate(rows) if len(row["input_ids"]) > limit]
        if cut:
            # Re-tokenise just the long ones at the real limit (the tokenizer knows where its
            # special tokens go; we do not assume).
            again = self.hf([texts[i] for i in cut], add_special_tokens=True, truncation=True, max_length=limit)
            for j, i in enumerate(cut):
                rows[i] = {k: again[k][j] for k in keys}
        cut_set = set(cut)
        return [Prepared(len(r["input_ids"]), i in cut_set, r) for i, r in enumerate(rows)]

    def offsets(self, text: str) -> list[tuple[int, int]]:
        """The character span of each of the text's tokens, special tokens left out and nothing
        truncated: where a splitter may cut a long text. Needs a fast (Rust-backed) tokenizer."""
        if self.rust is not None:
            return self.rust.whole.encode(text, add_special_tokens=False).offsets
        # verbose=False: an untruncated long text is the point here, not a mistake to warn about.
        enc = self.hf(text, add_special_tokens=False, truncation=False, return_offsets_mapping=True, verbose=False)
        return [(int(s), int(e)) for s, e in enc["offset_mapping"]]

    def count(self, text: str) -> int:
        """Tokens the model would see for the text, special tokens included, before truncation."""
        return self.counts([text])[0]

    def counts(self, texts: list[str]) -> list[int]:
        """`count` of each text, in one batch call."""
        tokens = self.encode_many(texts)
        if tokens is not None:
            return [len(t.ids) for t in tokens]
        enc = self.hf(texts, add_special_tokens=True, truncation=False, verbose=False)
        return [len(ids) for ids in enc["input_ids"]]

    def encode_many(self, texts: list[str], with_offsets: Sequence[bool] = ()) -> list[Tokens] | None:
        """Each text's tokens, special tokens included, nothing truncated, in one batch call (two
        when some texts want their offsets too, `with_offsets[i]`); None without a Rust core. For
        a text within the model's limit the ids are what its forward pass takes (`encoding`):
        chunking counts a text, tokenises it, and finds where a long one may be cut, at once."""
        if self.rust is None:
            return None
        wanted = [i for i, w in enumerate(with_offsets) if w]
        if not wanted:
            return [Tokens(e.ids) for e in self.rust.encode(texts, whole=True)]
        out: list[Tokens] = [Tokens([])] * len(texts)
        plain = [i for i in range(len(texts)) if i >= len(with_offsets) or not with_offsets[i]]
        for i, e in zip(plain, self.rust.encode([texts[i] for i in plain], whole=True)):
            out[i] = Tokens(e.ids)
        for i, e in zip(wanted, self.rust.encode([texts[i] for i in wanted], whole=True, offsets=True)):
            out[i] = Tokens(e.ids, [o for o, special in zip(e.offsets, e.special_tokens_mask) if not special])
        return out

    def encoding(self, ids: list[int]) -> dict[str, list[int]]:
        """What `prepare` gives for a text within the limit whose ids `encode_many` gave."""
        assert self.rust is not None, "ids come from encode_many, which needs the Rust core"
        return {"input_ids": ids}

    def collate(self, encodings: list[dict[str, list[int]]]) -> dict[str, Any]:
        """Pad prepared encodings into CPU tensors for one forward pass."""
        import torch

        derived = self.rust.derived if self.rust is not None else ()
        arrays = pad_encodings(
            encodings,
            int(self.hf.pad_token_id or 0),
            self.hf.padding_side,
            int(getattr(self.hf, "pad_token_type_id", 0) or 0),
            derived,
        )
        return {k: torch.from_numpy(v) for k, v in arrays.items()}


class RustTokenizer:
    """The Rust `tokenizers.Tokenizer` under a fast transformers tokenizer, called directly.

    transformers turns each Rust encoding into Python lists key by key, holding the GIL for longer
    than the Rust batch encode itself takes (which releases the GIL). A private copy, so its
    truncation settings never race with the model's own `encode` (which reconfigures the shared
    one on every call)."""

    def __init__(self, rust: Any, max_length: int, input_names: list[str]) -> None:
        self.rust = rust
        self.rust.no_padding()
        self.rust.enable_truncation(max_length)  # overflow pieces say which texts were cut
        # Untruncated, for counting and splitting texts longer than the model takes; never
        # reconfigured, so callers on any thread may share it.
        self.whole = type(rust).from_str(rust.to_str())
        self.whole.no_truncation()
        # For ASCII text the normalizer's work is a character table and `lower()` (`ascii_normalizer`):
        # done in Python first, the copies without a normalizer tokenise it in about half the time.
        self.ascii = ascii_normalizer(json.loads(rust.to_str()).get("normalizer"))
        self.bare, self.bare_whole = type(rust).from_str(rust.to_str()), type(rust).from_str(self.whole.to_str())
        self.bare.normalizer = self.bare_whole.normalizer = None
        self.keys = [k for k in ("input_ids", "token_type_ids", "attention_mask") if k in input_names]
        # Not copied out of Rust per text (each is another Python list of ints): one unpadded
        # sequence has a mask of ones and type ids of zeros, which `pad_encodings` makes in one go.
        # `batch_tokenizer` checks that against transformers before this path is used.
        self.derived = tuple(k for k in self.keys if k != "input_ids")

    def prepare(self, texts: list[str]) -> list[Prepared]:
        out = []
        for e in self.encode(texts):
            ids = e.ids
            out.append(Prepared(len(ids), bool(e.overflowing), {"input_ids": ids}))
        return out

    def encode(self, texts: list[str], whole: bool = False, offsets: bool = False) -> list[Any]:
        """Encodings of `texts` (cut at the limit unless `whole`; with character offsets if asked),
        special tokens included. ASCII texts are normalised in Python and tokenised by the copy
        without a normalizer: with offsets, only those the normaliser kept the length of (it
        drops control characters, which would shift every offset after them)."""
        full, bare = (self.whole, self.bare_whole) if whole else (self.rust, self.bare)
        run = "encode_batch" if offsets else "encode_batch_fast"
        if not texts:
            return []
        normal = [self.ascii(t) if self.ascii is not None and t.isascii() else None for t in texts]
        if offsets:
            normal = [n if n is not None and len(n) == len(t) else None for n, t in zip(normal, texts)]
        mine = [i for i, n in enumerate(normal) if n is not None]
        if not mine:
            return getattr(full, run)(texts, add_special_tokens=True)
        if len(mine) == len(texts):
            return getattr(bare, run)(normal, add_special_tokens=True)
        out: list[Any] = [None] * len(texts)
        rest = [i for i, n in enumerate(normal) if n is None]
        for i, e in zip(mine, getattr(bare, run)([normal[i] for i in mine], add_special_tokens=True)):
            out[i] = e
        for i, e in zip(rest, getattr(full, run)([texts[i] for i in rest], add_special_tokens=True)):
            out[i] = e
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
    "Hello, world!",
    "  leading and trailing spaces  ",
    "Ünïcödé çhàracters, emoji 🚀 and CJK 日本語",
    "tabs\tand\nnewlines",
    "x" * 3000,
    " ".join(["a long text of many words"] * 200),
    "",
    "".join(map(chr, range(128))),
    "CONTROL\x00chars\x0b\x0c\x1c\x1f\x7fAnd CaSe\r\n",
    "\x00\x7f",
]

# What BERT's normalizer does to ASCII text: control characters other than tab, newline and
# carriage return are dropped, those three become spaces; accents and CJK padding do not apply.
_ASCII_CLEAN = {c: None for c in (*range(0x20), 0x7F) if chr(c) not in "\t\n\r"} | {ord(c): " " for c in "\t\n\r"}


def ascii_normalizer(config: dict[str, Any] | None) -> Callable[[str], str] | None:
    """For a tokenizer whose normalizer is BERT's (its JSON `config`), what it makes of an ASCII
    text, as a Python function; None for any other normalizer. `batch_tokenizer` and the tests
    check it against the Rust one."""
    if not config or config.get("type") != "BertNormalizer":
        return None
    clean, lower = bool(config.get("clean_text", True)), bool(config.get("lowercase", True))
    table = str.maketrans(_ASCII_CLEAN)

    def normalize(text: str) -> str:
        if clean:
            text = text.translate(table)
        return text.lower() if lower else text

    return normalize


def ascii_path_agrees(fast: RustTokenizer, texts: list[str]) -> bool:
    """Whether ASCII texts normalised in Python tokenise exactly as through the Rust normalizer."""
    texts = [t for t in texts if t.isascii()]
    ours = [e.ids for e in fast.encode(texts, whole=True)]
    theirs = [e.ids for e in fast.whole.encode_batch_fast(texts, add_special_tokens=True)]
    return ours == theirs


def batch_tokenizer(tokenizer: Any, max_length: int) -> RustTokenizer | None:
    """A `RustTokenizer` when the model's tokenizer has a Rust core and gives exactly what the
    transformers call gives on probe texts (short, long, odd); else None (the slow path)."""
    core = getattr(tokenizer, "_tokenizer", None)
    if core is None or not hasattr(core, "to_str"):
        return None
    try:
        from tokenizers import Tokenizer

        fast = RustTokenizer(Tokenizer.from_str(core.to_str()), max_length, list(tokenizer.model_input_names))
        if fast.ascii is not None and not ascii_path_agrees(fast, PROBE_TEXTS):
            log.debug("ASCII texts go through the tokenizer's own normalizer: the Python one differs on probe texts")
            fast.ascii = None
        ours = fast.prepare(PROBE_TEXTS)
        theirs = tokenizer(PROBE_TEXTS, add_special_tokens=True, truncation=True, max_length=max_length)
        longer = tokenizer(PROBE_TEXTS, add_special_tokens=True, truncation=True, max_length=max_length + 1)[
            "input_ids"
        ]
    except Exception as exc:  # an exotic tokenizer: the slow path is always right
        log.debug("tokenising through transformers: %s", exc)
        return None
    rows = [fast.full(p) for p in ours]
    same = all(
        row == {k: theirs[k][i] for k in row}
        and set(row) == set(theirs.keys())
        and p.truncated == (len(longer[i]) > max_length)
        for i, (p, row) in enumerate(zip(ours, rows))
    )
    if not same:
        log.debug("tokenising through transformers: the Rust tokenizer differs on probe texts")
    return fast if same else None
