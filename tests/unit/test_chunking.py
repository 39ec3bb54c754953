"""The splitter's promises, checked against the model's real tokenizer: every chunk fits the model,
the chunks cover the text, neighbours overlap by at most the setting, and an edit changes only the
chunks near it."""

from __future__ import annotations

import re
import string
import time
from collections import Counter

import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from ingestor.chunking import Chunk, Splitter, TokenCounter, _Walk, split
from ingestor.config import DEFAULT_MODEL
from ingestor.corpus import SAMPLE, load_corpus
from ingestor.embedder import resolve_model_path
from ingestor.tokenizer import PROBE_TEXTS, Tokenizer

MAX = 256
PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def load_hf():
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(resolve_model_path(DEFAULT_MODEL))


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer(load_hf(), MAX)


# Documents: paragraphs of sentences of words, with the characters that trip splitters up.
ODD = ["\u200b", "\u0301", "\x07", "\ufffd", "\u00ad", "🚀", "👍🏽", "👨\u200d👩\u200d👧", "🇯🇵", "café\u0301"]


def word_kinds(long: bool) -> st.SearchStrategy[str]:
    kinds = [
        st.text(string.ascii_letters, min_size=1, max_size=10),
        st.text(st.characters(categories=("L", "M", "N", "P", "S")), min_size=1, max_size=8),
        st.text(st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF), min_size=1, max_size=40 if long else 4),
        st.sampled_from(ODD),
    ]
    if long:  # base64 blobs and the like: words over any budget
        kinds.append(st.text(string.ascii_letters + string.digits + "+/=", min_size=40, max_size=400))
    # A word made only of combining marks would glue onto its neighbour's edge: keep one letter first.
    return st.tuples(st.sampled_from("abcxyzé日"), st.one_of(kinds)).map("".join)


WORDS = {True: word_kinds(True), False: word_kinds(False)}
WORD_GAPS = st.sampled_from([" ", " ", " ", "  ", "\t", " \u00a0", "\u3000"])
ENDS = st.sampled_from([".", ".", "!", "?", "。", "", "...", '."'])
SENTENCE_GAPS = st.sampled_from([" ", " ", "  ", "\n", " \n "])


def joined(draw: st.DrawFn, parts: list[str], gaps: st.SearchStrategy[str]) -> str:
    return parts[0] + "".join(draw(gaps) + p for p in parts[1:])


@st.composite
def sentences(draw: st.DrawFn, long: bool = True, most: int = 15) -> str:
    return joined(draw, draw(st.lists(WORDS[long], min_size=1, max_size=most)), WORD_GAPS) + draw(ENDS)


@st.composite
def paragraphs(draw: st.DrawFn, long: bool = True, most: int = 8, words_most: int = 15, least: int = 1) -> str:
    parts = draw(st.lists(sentences(long, words_most), min_size=least, max_size=most))
    return joined(draw, parts, SENTENCE_GAPS).strip()


BREAKS = st.sampled_from(["\n\n", "\n \n", "\n\t\n\n", "\r\n\r\n", "\n\n\n"])


def render(paras: list[str], breaks: list[str], lead: str = "", trail: str = "") -> tuple[str, list[int]]:
    """The document's text and where each paragraph starts in it."""
    text, starts = lead, []
    for i, p in enumerate(paras):
        starts.append(len(text))
        text += p + (breaks[i] if i < len(paras) - 1 else trail)
    return text, starts


@st.composite
def documents(draw: st.DrawFn) -> str:
    paras = draw(st.lists(paragraphs(), min_size=1, max_size=5))
    breaks = [draw(BREAKS) for _ in paras]
    return render(paras, breaks, draw(st.sampled_from(["", " ", "\n\n", "\t"])),
                  draw(st.sampled_from(["", "\n", "  \n\n"])))[0]


@st.composite
def budgets(draw: st.DrawFn, least: int = 16, most: int = 256) -> tuple[int, int]:
    max_tokens = draw(st.integers(least, most))
    return max_tokens, draw(st.integers(0, min(32, max_tokens // 4)))


def whole_tokens(tokenizer: Tokenizer, text: str) -> list[tuple[int, int]]:
    return [tuple(span) for span in tokenizer.offsets(text)]


def shared_tokens(offsets: list[tuple[int, int]], a: Chunk, b: Chunk) -> int:
    lo, hi = max(a.char_start, b.char_start), min(a.char_end, b.char_end)
    return sum(1 for s, e in offsets if lo <= s and e <= hi)


def changed(old: list[Chunk], new: list[Chunk]) -> list[Chunk]:
    """New chunks whose text the old split did not have (as many times)."""
    left = Counter(c.text for c in old)
    out = []
    for c in new:
        if left[c.text] > 0:
            left[c.text] -= 1
        else:
            out.append(c)
    return out


def check_rules(text: str, chunks: list[Chunk], tokenizer: TokenCounter, max_tokens: int) -> None:
    assert chunks and [c.index for c in chunks] == list(range(len(chunks)))
    covered = bytearray(len(text))
    for c in chunks:
        assert c.text == text[c.char_start:c.char_end]
        assert c.text == c.text.strip() and c.text
        assert c.tokens == tokenizer.count(c.text) <= max_tokens
        covered[c.char_start:c.char_end] = b"\1" * (c.char_end - c.char_start)
    assert all(covered[i] or ch.isspace() for i, ch in enumerate(text)), "a character no chunk covers"
    assert all(a.char_start < b.char_start for a, b in zip(chunks, chunks[1:]))


# --- The tokenizer's side: offsets and counts, untruncated ----------------------------------------

def test_offsets_and_counts_are_the_same_through_rust_and_transformers(tokenizer):
    slow = Tokenizer(tokenizer.hf, MAX, fast=False)
    texts = PROBE_TEXTS + [" ".join(r.text for r in load_corpus(SAMPLE)[:40])]
    assert tokenizer.rust is not None and slow.rust is None
    for text in texts:
        assert whole_tokens(tokenizer, text) == whole_tokens(slow, text)
        assert tokenizer.count(text) == slow.count(text) == len(tokenizer.hf(text)["input_ids"])
    assert tokenizer.counts(texts) == slow.counts(texts)
    # Neither truncates: the long texts are over the model's limit and counted in full.
    assert len(tokenizer.offsets(texts[-1])) > 4 * MAX and tokenizer.count(texts[-1]) > 4 * MAX


def test_counting_a_long_text_through_transformers_warns_of_nothing(capfd):
    slow = Tokenizer(load_hf(), MAX, fast=False)  # transformers warns once per tokenizer: a fresh one
    long = "word " * 2000
    assert len(slow.offsets(long)) == 2000 and slow.count(long) == 2002
    assert "longer than" not in capfd.readouterr().err


# --- Examples ------------------------------------------------------------------------------------

DOC = ("Title here\n\nFirst sentence is short. Second one is a bit longer than that! Third?\nA new line."
       "\n\n  \n\nLast paragraph with a verylongunbrokenwordthatgoesonandonandonforever.")


def test_a_small_document_splits_where_expected(tokenizer):
    """Budget 12 - 2 specials - 2 overlap = 8 own tokens: a paragraph break is never crossed (only
    by a prefix), sentences are packed, a long sentence is cut at a space, a long word mid-word."""
    chunks = split(DOC, tokenizer, 12, 2)
    assert [(c.text, c.tokens) for c in chunks] == [
        ("Title here", 4),
        ("here\n\nFirst sentence is short.", 8),
        ("short. Second one is a bit longer than", 11),
        ("longer than that! Third?\nA new line.", 12),
        ("line.\n\n  \n\nLast paragraph with a", 8),
        ("with a verylongunbrokenwordthatgo", 12),
        ("esonandonandonforever.", 10),  # mid-word: no word start to put a prefix at
    ]
    check_rules(DOC, chunks, tokenizer, 12)


def test_without_overlap_the_chunks_partition_the_text(tokenizer):
    chunks = split(DOC, tokenizer, 12, 0)
    assert all(a.char_end <= b.char_start for a, b in zip(chunks, chunks[1:]))
    assert "".join("".join(c.text.split()) for c in chunks) == "".join(DOC.split())  # each character once
    assert [c.text for c in chunks][:3] == ["Title here", "First sentence is short.",
                                            "Second one is a bit longer than that!"]


@pytest.mark.parametrize("text", ["", " ", "\n\n \t\n", "\u3000"])
def test_a_text_of_only_whitespace_is_one_chunk_of_all_of_it(tokenizer, text):
    assert split(text, tokenizer, 16, 4) == [Chunk(0, text, 0, len(text), 2)]


def test_a_text_without_tokens_is_still_covered(tokenizer):
    text = "\u200b\x07 \u200b"  # BERT drops these characters; the chunk must not
    assert tokenizer.offsets(text) == []
    assert split(text, tokenizer, 16, 4) == [Chunk(0, text, 0, len(text), 2)]


@pytest.mark.parametrize("max_tokens, overlap", [(2, 0), (6, 4), (10, 8), (5, -1)])
def test_settings_with_no_room_for_text_are_refused_saying_what_to_change(tokenizer, max_tokens, overlap):
    with pytest.raises(ValueError, match="raise max_tokens|make it 0 or more"):
        Splitter(tokenizer, max_tokens, overlap)


def test_a_corpus_sized_document_keeps_every_rule(tokenizer):
    text = "\n".join(r.text for r in load_corpus(SAMPLE))[:40_000]
    splitter = Splitter(tokenizer, MAX, 32)
    began = time.perf_counter()
    chunks = splitter.split(text)
    print(f"\n40,000 characters in {(time.perf_counter() - began) * 1000:.1f} ms: {len(chunks)} chunks")
    check_rules(text, chunks, tokenizer, MAX)
    # Nothing counted twice beyond each chunk's specials and overlap.
    assert len(chunks) > 40 and sum(c.tokens for c in chunks) <= tokenizer.count(text) + len(chunks) * (2 + 32)


def test_an_inserted_line_in_a_long_list_changes_few_chunks(tokenizer):
    """Lines of one shape packed greedily shift every later cut by a line after an insertion; the
    anchors bring the cuts back in step."""
    lines = [f"Item {i}: the sensor on rack {i * 7 % 13} reported {i * 31 % 97} degrees at noon."
             for i in range(400)]
    splitter = Splitter(tokenizer, 128, 16)
    old = splitter.split("\n".join(lines))
    for at in (1, 10, 200):
        new = splitter.split("\n".join(lines[:at] + ["A new line was inserted here."] + lines[at:]))
        assert len(changed(old, new)) <= len(old) // 5, at


def test_a_line_repeated_throughout_never_cuts_chunks_smaller_than_a_budget(tokenizer):
    """Identical sentences hash alike: were one an anchor, each of its copies would be, and every
    line a chunk of its own, but for the budget kept clear after an anchor."""
    splitter = Splitter(tokenizer, 40, 8)  # 30 own tokens a chunk
    anchored = 0
    for k in range(60):
        text = "\n".join([f"Status {k} is fine."] * 100)
        walk = _Walk(text, splitter)
        anchored += len(walk.regions(0, len(text), first=False)) > 2
        chunks = splitter.split(text)
        assert len(chunks) <= 2 * -(-len(walk.starts) // 30) + 1, k
    assert anchored >= 2  # the lines that would have exploded were among them


# --- Any tokenizer: counts that disagree with the whole-text offsets ------------------------------

class Disagreeing:
    """Offsets claim one token a word, but a piece costs one token a character (plus 2 specials):
    the whole-text boundaries are wrong for every chunk, so only the verification keeps chunks in."""

    def offsets(self, text: str) -> list[tuple[int, int]]:
        return [m.span() for m in re.finditer(r"\S+", text)]

    def count(self, text: str) -> int:
        return 2 + sum(not ch.isspace() for ch in text)


@PROPERTY
@given(text=documents(), budget=budgets())
def test_chunks_fit_even_when_pieces_count_differently_from_the_whole(text, budget):
    counter = Disagreeing()
    chunks = split(text, counter, *budget)
    check_rules(text, chunks, counter, budget[0])


def test_a_character_over_the_budget_on_its_own_is_refused():
    class Costly(Disagreeing):
        def count(self, text: str) -> int:
            return 2 + 10 * len(text)

    with pytest.raises(ValueError, match="raise max_tokens"):
        split("some words", Costly(), 8, 0)


# --- Properties, under the real tokenizer ---------------------------------------------------------

@PROPERTY
@given(text=documents(), budget=budgets())
def test_every_chunk_fits_and_the_chunks_cover_the_text(tokenizer, text, budget):
    check_rules(text, split(text, tokenizer, *budget), tokenizer, budget[0])


@PROPERTY
@given(text=documents(), budget=budgets())
def test_neighbours_overlap_by_at_most_the_setting_and_from_a_word_start(tokenizer, text, budget):
    chunks = split(text, tokenizer, *budget)
    offsets = whole_tokens(tokenizer, text)
    for a, b in zip(chunks, chunks[1:]):
        assert shared_tokens(offsets, a, b) <= budget[1]
        if b.char_start < a.char_end:
            assert text[b.char_start - 1].isspace()


@PROPERTY
@given(text=documents(), budget=budgets())
def test_the_same_text_and_settings_give_the_same_chunks(tokenizer, text, budget):
    assert split(text, tokenizer, *budget) == Splitter(tokenizer, *budget).split(text)


@PROPERTY
@given(text=paragraphs(), budget=budgets(), lead=st.sampled_from(["", " ", "\n\n"]))
def test_a_paragraph_that_fits_is_one_chunk(tokenizer, text, budget, lead):
    assume(tokenizer.count(text) <= budget[0])
    one = Chunk(0, text, len(lead), len(lead) + len(text), tokenizer.count(text))
    assert split(lead + text, tokenizer, *budget) == [one]


@PROPERTY
@given(paras=st.lists(paragraphs(long=False, most=2, words_most=6), min_size=2, max_size=4), budget=budgets(least=64))
def test_a_record_that_fits_whole_is_one_chunk_whatever_its_paragraphs(tokenizer, paras, budget):
    text = "\n\n".join(paras)
    assume(tokenizer.count(text) <= budget[0])
    assert split(text, tokenizer, *budget) == [Chunk(0, text, 0, len(text), tokenizer.count(text))]


Edit = tuple[int, int, str]  # (start, end, replacement) in a paragraph's text


@st.composite
def edits(draw: st.DrawFn, paragraph: str, long: bool) -> Edit:
    spans = [m.span() for m in re.finditer(r"\S+", paragraph)]
    s, e = draw(st.sampled_from(spans))
    word = draw(WORDS[long])
    kind = draw(st.sampled_from(["replace", "insert", "delete"] if len(spans) > 1 else ["replace", "insert"]))
    if kind == "replace":
        return s, e, word
    if kind == "insert":
        return s, s, word + " "
    return (s - 1, e, "") if s > 0 else (s, e + 1, "")  # the word and a space beside it


def apply(text: str, at: int, edit: Edit) -> str:
    s, e, new = edit
    return text[:at + s] + new + text[at + e:]


@PROPERTY
@given(data=st.data(), budget=budgets(least=96))
def test_an_edit_in_a_paragraph_of_one_chunk_changes_it_and_the_next_only(tokenizer, data, budget):
    """The stronger form of "at most 3 chunks": exactly the edited paragraph's chunk and the next
    one (whose prefix is the edited paragraph's tail) may change. In a long document: one that
    fits whole is one chunk whatever its paragraphs."""
    paras = data.draw(st.lists(paragraphs(long=False, most=3, words_most=8), min_size=2, max_size=6))
    breaks = [data.draw(BREAKS) for _ in paras]
    while tokenizer.count(render(paras, breaks)[0]) <= budget[0] + 16:  # long: over one chunk
        paras, breaks = paras * 2, breaks * 2
    k = data.draw(st.integers(0, len(paras) - 1))
    edited = apply(paras[k], 0, data.draw(edits(paras[k], long=False)))
    room = budget[0] - 2 - budget[1]
    assume(all(len(tokenizer.offsets(p)) <= room for p in [*paras, edited]))
    old = split(render(paras, breaks)[0], tokenizer, *budget)
    new_text = render(paras[:k] + [edited] + paras[k + 1:], breaks)[0]
    assume(tokenizer.count(new_text) > budget[0])
    new = split(new_text, tokenizer, *budget)
    assert len(old) == len(new) == len(paras)  # one chunk a paragraph
    def others(chunks: list[Chunk]) -> list[str]:
        return [c.text for c in chunks if c.index not in (k, k + 1)]

    assert others(new) == others(old)
    assert len(changed(old, new)) <= 2


@st.composite
def long_paragraph_edits(draw: st.DrawFn) -> tuple[str, str, tuple[int, int, int]]:
    """A document with a paragraph over any budget here (never the first, so all its chunks have
    the same budget) and an edit inside it: (old text, new text, (start, old end, new end) of
    the edited characters)."""
    paras = [draw(paragraphs(most=3))]
    edit = None
    if draw(st.integers(0, 2)) == 0:
        paras += [draw(paragraphs(least=12, most=30, words_most=20))]
    else:  # lines in a cycle of a few shapes, as in lists and logs: greedy packing never resyncs
        pool = draw(st.lists(sentences(long=False, most=8), min_size=2, max_size=3, unique=True))
        lines = [pool[i % len(pool)] for i in range(draw(st.integers(40, 120)))]
        paras += [joined(draw, lines, SENTENCE_GAPS)]
        # One more line, early on: it shifts every later greedy cut by a line, for good.
        heads = [m.start() for m in re.finditer(r"(?:^|(?<=\s))" + re.escape(lines[0]), paras[1])]
        at = draw(st.sampled_from(heads[:max(1, len(heads) // 2)]))
        edit = (at, at, draw(st.sampled_from(pool)) + " ")
    paras += draw(st.lists(paragraphs(most=3), max_size=2))
    old, starts = render(paras, [draw(BREAKS) for _ in paras])
    s, e, word = edit or draw(edits(paras[1], long=True))
    new = apply(old, starts[1], (s, e, word))
    return old, new, (starts[1] + s, starts[1] + e, starts[1] + s + len(word))


def confined(new: list[Chunk], old: list[Chunk], lo: int, hi: int) -> None:
    """Only chunks ending inside (lo, hi], and the first to end after hi (its prefix is the tail
    before hi), may differ: the chunks before are the old ones, as are the chunks after. Checked
    by position, since a multiset difference cannot tell which of two equal chunks is the new one."""
    before = [c.text for c in new if c.char_end <= lo]
    after = [c.text for c in new if c.char_end > hi][1:]
    assert before == [c.text for c in old[:len(before)]]
    assert after == [c.text for c in old[len(old) - len(after):]]


LONG = settings(PROPERTY, max_examples=60, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


@LONG
@given(case=long_paragraph_edits(), budget=budgets(least=24))
def test_an_edit_in_a_long_paragraph_changes_only_its_chunks_and_the_next(tokenizer, case, budget):
    """The paragraph-level bound: other paragraphs' chunks stay, bar the next one's first."""
    old_text, new_text, (x, _, _) = case
    splitter = Splitter(tokenizer, *budget)
    ps, pe = _Walk(new_text, splitter).paragraphs()[1]
    confined(splitter.split(new_text), splitter.split(old_text), min(ps, x), pe)


@settings(LONG, max_examples=100)  # about half the cases tell anchors from greedy packing
@given(case=long_paragraph_edits(), budget=budgets(least=24, most=96))  # small: more anchors to test
def test_an_edit_in_a_long_paragraph_changes_only_chunks_between_the_anchors_around_it(tokenizer, case, budget):
    """The anchor-level bound: from the last anchor before the edit to the first anchor after it
    that both versions share, plus one. Sentences packed greedily from the paragraph's start
    instead would fail this whenever a change in length moves every later cut."""
    old_text, new_text, (x, old_end, y) = case
    splitter = Splitter(tokenizer, *budget)
    old_walk, new_walk = _Walk(old_text, splitter), _Walk(new_text, splitter)
    old_edges = old_walk.regions(*old_walk.paragraphs()[1], first=False)
    new_edges = new_walk.regions(*new_walk.paragraphs()[1], first=False)
    shift = y - old_end
    common = {a if a <= x else a + shift for a in old_edges if a <= x or a >= old_end} & set(new_edges)
    lo = max((a for a in common if a <= x), default=0)
    hi = min((a for a in common if a >= y and a > x), default=len(new_text))  # at x, it opens the edited region
    assume(len(new_edges) > 2)  # anchors to test, not the paragraph's ends alone
    confined(splitter.split(new_text), splitter.split(old_text), lo, hi)
