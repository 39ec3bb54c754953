"""The splitter's promises, checked against the model's real tokenizer: every chunk fits the model,
the chunks cover the text, neighbours overlap by at most the setting, short paragraphs are packed
together, an edit changes only the chunks near it, and a batch of texts splits as each alone."""

from __future__ import annotations

import re
import string
import time
from bisect import bisect_left
from collections import Counter

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bench.corpus import edit_middle_paragraph, long_documents
from ingestor.chunking import Chunk, Splitter, TokenCounter, _chunk_documents, _Walk, chunk_all
from ingestor.config import DEFAULT_MODEL
from ingestor.corpus import SAMPLE, load_corpus
from ingestor.embedder import resolve_model_path
from ingestor.parsing import sha256_hex
from ingestor.records import Document, Position, RawRecord, TopicPartition
from ingestor.tokenizer import PROBE_TEXTS, Tokenizer
from tests.support.fakes import slow_tokenizer

MAX = 256
PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def load_hf():
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(resolve_model_path(DEFAULT_MODEL))


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer(load_hf(), MAX)


def split(text: str, tokenizer: TokenCounter, max_tokens: int, overlap_tokens: int) -> list[Chunk]:
    """One text's chunks, by a splitter of these settings."""
    return Splitter(tokenizer, max_tokens, overlap_tokens).split(text)


def chunk_documents(doc: Document, splitter: Splitter) -> list[Document]:
    """The documents one record's chunks become, the record split alone."""
    return _chunk_documents(doc, splitter.split(doc.text))


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
    return render(
        paras, breaks, draw(st.sampled_from(["", " ", "\n\n", "\t"])), draw(st.sampled_from(["", "\n", "  \n\n"]))
    )[0]


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
        assert c.text == text[c.char_start : c.char_end]
        assert c.text == c.text.strip() and c.text
        assert c.tokens == tokenizer.count(c.text) <= max_tokens
        covered[c.char_start : c.char_end] = b"\1" * (c.char_end - c.char_start)
    assert all(covered[i] or ch.isspace() for i, ch in enumerate(text)), "a character no chunk covers"
    assert all(a.char_start < b.char_start for a, b in zip(chunks, chunks[1:]))


# --- The tokenizer's side: offsets and counts, untruncated ----------------------------------------


def test_offsets_and_counts_are_the_same_through_rust_and_transformers(tokenizer):
    slow = slow_tokenizer(tokenizer.hf, MAX)
    texts = PROBE_TEXTS + [" ".join(r.text for r in load_corpus(SAMPLE)[:40])]
    assert tokenizer.rust is not None and slow.rust is None
    for text in texts:
        assert whole_tokens(tokenizer, text) == whole_tokens(slow, text)
        assert tokenizer.count(text) == slow.count(text) == len(tokenizer.hf(text)["input_ids"])
    assert tokenizer.counts(texts) == slow.counts(texts)
    # Neither truncates: the long texts are over the model's limit and counted in full.
    assert len(tokenizer.offsets(texts[-1])) > 4 * MAX and tokenizer.count(texts[-1]) > 4 * MAX


def test_counting_a_long_text_through_transformers_warns_of_nothing(capfd):
    slow = slow_tokenizer(load_hf(), MAX)  # transformers warns once per tokenizer: a fresh one
    long = "word " * 2000
    assert len(slow.offsets(long)) == 2000 and slow.count(long) == 2002
    assert "longer than" not in capfd.readouterr().err


# --- Examples ------------------------------------------------------------------------------------

DOC = (
    "Title here\n\nFirst sentence is short. Second one is a bit longer than that! Third?\nA new line."
    "\n\n  \n\nLast paragraph with a verylongunbrokenwordthatgoesonandonandonforever."
)


def test_a_small_document_splits_where_expected(tokenizer):
    """Budget 12 - 2 specials - 2 overlap = 8 own tokens: a paragraph over the budget is cut on its
    own (a prefix may reach back before it), sentences are packed, a long sentence is cut at a
    space, a long word mid-word."""
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
    assert [c.text for c in chunks][:3] == [
        "Title here",
        "First sentence is short.",
        "Second one is a bit longer than that!",
    ]


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
    lines = [f"Item {i}: the sensor on rack {i * 7 % 13} reported {i * 31 % 97} degrees at noon." for i in range(400)]
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
    return text[: at + s] + new + text[at + e :]


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
        at = draw(st.sampled_from(heads[: max(1, len(heads) // 2)]))
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
    assert before == [c.text for c in old[: len(before)]]
    assert after == [c.text for c in old[len(old) - len(after) :]]


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
    # Edges before the edit keep their place, edges after it move with it (the paragraph's end,
    # when the edit takes its last word, is one of those, though it may land on x).
    lo = max((a for a in old_edges if a <= x and a in new_edges), default=0)
    hi = min(
        (a + shift for a in old_edges if a >= old_end and a + shift in new_edges and a + shift > x),
        default=len(new_text),
    )  # at x, it opens the edited region
    assume(len(new_edges) > 2)  # anchors to test, not the paragraph's ends alone
    confined(splitter.split(new_text), splitter.split(old_text), lo, hi)


# --- Short paragraphs: packed between paragraph anchors -------------------------------------------


@st.composite
def short_paragraphs(draw: st.DrawFn) -> list[str]:
    """Many paragraphs within the budget: prose, a list or log of lines of a few shapes (repeated
    exactly, or numbered), or questions and answers."""
    kind = draw(st.sampled_from(["prose", "log", "list", "qa"]))
    if kind == "prose":
        return draw(st.lists(paragraphs(long=False, most=3, words_most=8), min_size=8, max_size=40))
    if kind in ("log", "list"):
        pool = draw(st.lists(sentences(long=False, most=8), min_size=1, max_size=3, unique=True))
        lines = [pool[i % len(pool)] for i in range(draw(st.integers(20, 90)))]
        return lines if kind == "log" else [f"{i + 1}. {line}" for i, line in enumerate(lines)]
    pairs = draw(
        st.lists(
            st.tuples(sentences(long=False, most=8), paragraphs(long=False, most=2, words_most=8)),
            min_size=5,
            max_size=25,
        )
    )
    return [p for q, a in pairs for p in (f"Q: {q.rstrip('.!。')}?", f"A: {a}")]


def cut_edges(walk: _Walk) -> tuple[set[int], set[int], bool]:
    """(the edges known before the chunks are cut, which a chunk's own text starts or ends at:
    section, pack and sentence-anchor edges; the section edges alone; whether a paragraph is over
    the budget, so cut inside too)."""
    cuts, sections, longs = set(), set(), False
    for i, (long, paras) in enumerate(walk.sections()):
        sections |= {paras[0][0], paras[-1][1]}
        cuts |= set(walk.regions(*paras[0], first=i == 0) if long else walk.packs(paras, first=i == 0))
        longs |= long
    return cuts | sections, sections, longs


@st.composite
def short_paragraph_edits(draw: st.DrawFn) -> tuple[str, str, tuple[int, int, int]]:
    """A document of short paragraphs and an edit inside one of them, or a paragraph inserted
    before it (a line added to a log): (old text, new text, (start, old end, new end))."""
    paras = draw(short_paragraphs())
    breaks = [draw(BREAKS) for _ in paras]
    old, starts = render(paras, breaks)
    k = draw(st.integers(0, len(paras) - 1))
    if draw(st.integers(0, 3)) == 0:
        line = draw(st.sampled_from(paras)) if draw(st.booleans()) else draw(sentences(long=False, most=8))
        s, e, word = 0, 0, line + draw(BREAKS)
    else:
        s, e, word = draw(edits(paras[k], long=False))
    return old, apply(old, starts[k], (s, e, word)), (starts[k] + s, starts[k] + e, starts[k] + s + len(word))


@LONG
@given(case=short_paragraph_edits(), budget=budgets(least=24, most=128))
def test_an_edit_among_short_paragraphs_changes_only_chunks_up_to_the_next_shared_section_edge(tokenizer, case, budget):
    """From the last cut both versions share before the edit (a pack, section or anchor edge) to
    the first section edge after it that both share, plus one; and where every paragraph is within
    the budget, an edit that moves no pack or section edge changes at most the chunk it is in and
    the next (whose prefix may hold it). Packing from the
    document's start instead would fail this whenever a change in length moves every later cut;
    one chunk a paragraph never packs (the form "at most 3 chunks" took before packing)."""
    old_text, new_text, (x, old_end, y) = case
    splitter = Splitter(tokenizer, *budget)
    assume(tokenizer.count(old_text) > budget[0] and tokenizer.count(new_text) > budget[0])  # long documents
    (old_cuts, old_sections, old_long), (new_cuts, new_sections, new_long) = (
        cut_edges(_Walk(t, splitter)) for t in (old_text, new_text)
    )
    shift = y - old_end
    lo = max((a for a in old_cuts if a <= x and a in new_cuts), default=0)
    # Not the old document's start, moved by an insertion there: its section had the first
    # chunk's budget, and its first paragraph's.
    after = {a + shift for a in old_sections if a >= old_end and a > 0}
    hi = min((a for a in after & new_sections if a > x), default=len(new_text))
    old, new = splitter.split(old_text), splitter.split(new_text)
    confined(new, old, lo, hi)
    if not (old_long or new_long) and {a if a <= x else a + shift for a in old_cuts} == new_cuts:
        assert len(changed(old, new)) <= 2


@PROPERTY
@given(paras=short_paragraphs(), budget=budgets(least=24, most=128), data=st.data())
def test_short_paragraphs_are_packed_until_the_next_one_would_not_fit(tokenizer, paras, budget, data):
    """Within a section, no two neighbouring chunks would fit the budget together: each took the
    next paragraphs while they fit. Every chunk of a section ends at one of its paragraphs' ends."""
    text = render(paras, [data.draw(BREAKS) for _ in paras])[0]
    splitter = Splitter(tokenizer, *budget)
    chunks = splitter.split(text)
    assume(len(chunks) > 1)
    starts = sorted(s for s, _ in tokenizer.offsets(text))
    own_budget = budget[0] - splitter.specials - budget[1]
    for long, section in _Walk(text, splitter).sections():
        if long:
            continue
        mine = [c for c in chunks if section[0][0] < c.char_end <= section[-1][1]]
        assert {c.char_end for c in mine} <= {pe for _, pe in section}
        for a, b in zip(mine, mine[1:]):
            together = bisect_left(starts, b.char_end) - bisect_left(starts, a.char_start)
            assert together > own_budget + (budget[1] if a.index == 0 else 0), (a, b)


def test_an_inserted_paragraph_in_a_long_log_changes_few_chunks(tokenizer):
    """Lines of one shape, a blank line after each, packed greedily from the document's start,
    shift every later cut by a line after an insertion; the paragraph anchors bring the cuts back
    in step."""
    lines = [f"Item {i}: the sensor on rack {i * 7 % 13} reported {i * 31 % 97} degrees at noon." for i in range(400)]
    splitter = Splitter(tokenizer, 128, 16)
    old = splitter.split("\n\n".join(lines))
    assert len(old) < len(lines) / 4
    for at in (1, 10, 200):
        new = splitter.split("\n\n".join(lines[:at] + ["A new line was inserted here."] + lines[at:]))
        assert len(changed(old, new)) <= len(old) // 5, at


def test_a_list_of_short_paragraphs_fills_its_chunks(tokenizer):
    """Sixty questions and answers of a dozen tokens each: a handful of chunks, not sixty."""
    paras = [
        p
        for i in range(30)
        for p in (f"Q: What does setting {i} change?", f"A: It sets the limit of stage {i % 7} to {i * 13 % 50} items.")
    ]
    text = "\n\n".join(paras)
    chunks = Splitter(tokenizer, MAX, 32).split(text)
    check_rules(text, chunks, tokenizer, MAX)
    sections = _Walk(text, Splitter(tokenizer, MAX, 32)).sections()
    assert len(chunks) <= 2 * tokenizer.count(text) // (MAX - 2 - 32) + len(sections) < 12
    assert sum(c.tokens for c in chunks) / len(chunks) > 0.6 * MAX


def test_the_long_document_corpus_packs_chunks_and_an_edit_changes_few(tokenizer):
    """`corpus.long_documents()`, mostly short paragraphs: chunks of 59 tokens on average when each
    paragraph was one (7,729 chunks), about 199 packed (1,677); a word edited in the middle
    paragraph of a quarter of them changes 1.3 chunks a document on average."""
    splitter = Splitter(tokenizer, MAX, 32)
    docs = long_documents()
    chunks = splitter.split_many([d.text for d in docs])
    flat = [c for cs in chunks for c in cs]
    assert sum(c.tokens for c in flat) / len(flat) > 0.7 * MAX
    edited = [(cs, splitter.split(edit_middle_paragraph(d.text))) for d, cs in list(zip(docs, chunks))[::4]]
    counts = [len(changed(old, new)) for old, new in edited]
    assert sum(counts) <= 1.6 * len(counts) and max(counts) <= 4, counts


# --- Many texts at once ---------------------------------------------------------------------------


class CountingCalls:
    """The real tokenizer, with its calls counted."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.inner, self.calls = tokenizer, Counter()

    def offsets(self, text: str) -> list[tuple[int, int]]:
        self.calls["offsets"] += 1
        return self.inner.offsets(text)

    def count(self, text: str) -> int:
        self.calls["count"] += 1
        return self.inner.count(text)

    def counts(self, texts: list[str]) -> list[int]:
        self.calls["counts"] += 1
        return self.inner.counts(texts)


TEXTS = st.lists(
    st.one_of(
        st.sampled_from(["", " ", "\n\n", "\u200b"]), sentences(long=False), paragraphs(long=False, most=3), documents()
    ),
    max_size=8,
)


@PROPERTY
@given(texts=TEXTS, budget=budgets())
def test_split_many_is_split_of_each(tokenizer, texts, budget):
    splitter = Splitter(tokenizer, *budget)
    assert splitter.split_many(texts) == [splitter.split(t) for t in texts]
    counter = Disagreeing()  # no `counts`: counted one by one
    assert Splitter(counter, *budget).split_many(texts) == [split(t, counter, *budget) for t in texts]


def test_split_many_counts_the_texts_in_one_call_and_splits_only_the_long_ones(tokenizer):
    counting = CountingCalls(tokenizer)
    splitter = Splitter(counting, MAX, 32)
    texts = [t for t in (r.text for r in load_corpus(SAMPLE)[:200]) if tokenizer.count(t) <= MAX] + [" ", ""]
    assert len(texts) > 150
    counting.calls.clear()
    out = splitter.split_many(texts)
    assert dict(counting.calls) == {"counts": 1}
    assert out == [Splitter(tokenizer, MAX, 32).split(t) for t in texts]
    assert all(len(chunks) == 1 for chunks in out)
    # A long one among them: one more walk for it alone (its offsets, and its chunks counted).
    counting.calls.clear()
    out = splitter.split_many([*texts, long_documents()[0].text])
    assert dict(counting.calls) == {"counts": 2, "offsets": 1} and len(out[-1]) > 1


def test_chunk_all_is_chunk_documents_of_each(tokenizer):
    splitter = Splitter(tokenizer, 64, 8)
    texts = [r.text for r in load_corpus(SAMPLE)[:30]] + [DOC, "", long_documents()[0].text]
    docs = [
        Document(
            raw=RawRecord(Position(TopicPartition("docs", 0), i, 0, 1, 0), key=None, value=b""),
            id=f"r{i}",
            text=t,
            text_sha256=sha256_hex(t),
            metadata={"i": i},
        )
        for i, t in enumerate(texts)
    ]
    flat = chunk_all(docs, splitter)
    assert flat == [c for d in docs for c in chunk_documents(d, splitter)]
    assert len(flat) > len(docs) and chunk_all([], splitter) == []


def test_chunks_carry_the_ids_the_model_stage_would_make_and_it_does_not_tokenise_them_again(tokenizer):
    """The fast path (ids from the splitter's count) against the slow one (tokenising each chunk
    text): the same encodings, token counts and truncation flags, for short and long records."""
    from ingestor.batching import group_texts
    from ingestor.model_stage import ModelStage

    class Embedder:
        def __init__(self) -> None:
            self.prepared: list[str] = []

        def prepare(self, texts):
            self.prepared += texts
            return tokenizer.prepare(texts)

        def encoding(self, ids):
            return tokenizer.encoding(ids)

    splitter = Splitter(tokenizer, 64, 8)
    texts = [r.text for r in load_corpus(SAMPLE)[:40]] + [long_documents()[0].text]
    docs = [
        Document(
            raw=RawRecord(Position(TopicPartition("docs", 0), i, 0, 1, 0), key=None, value=b""),
            id=f"r{i}",
            text=t,
            text_sha256=sha256_hex(t),
            metadata={},
        )
        for i, t in enumerate(texts)
    ]
    units = group_texts(chunk_all(docs, splitter))
    assert all(u.token_ids is not None for u in units)
    fast = Embedder()
    ModelStage(fast).tokenize(units)
    assert fast.prepared == [], "nothing is tokenised twice"
    slow = tokenizer.prepare([u.text for u in units])
    assert [(u.tokens, u.truncated, u.encoding) for u in units] == [(p.tokens, p.truncated, p.encoding) for p in slow]
