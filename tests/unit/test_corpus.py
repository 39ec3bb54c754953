"""The corpora the tests and the bench share: the long documents are real, long, distinct and
the same on every call; an edit changes one word of one paragraph; a cycled corpus hands every
record an id and a text of its own (the bench's (f) and `--cycles` need that, or the cache would
skip the stages they measure)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bench.corpus import cycled, edit_middle_paragraph, long_documents
from ingestor.corpus import Record, load_corpus


def test_long_documents_are_a_few_hundred_of_2000_to_40000_characters_the_same_each_time():
    docs = long_documents()
    assert 200 <= len(docs) <= 400
    assert all(2_000 <= len(d.text) <= 40_000 for d in docs)
    assert len({d.id for d in docs}) == len(docs) and len({d.text for d in docs}) == len(docs)
    assert max(len(d.text) for d in docs) > 20_000, "some should be long enough for dozens of chunks"
    assert [(d.id, d.text) for d in long_documents()] == [(d.id, d.text) for d in docs]


def test_an_edit_changes_one_word_of_the_middle_paragraph():
    text = "one two three\n\nfour five six\n\nseven eight"
    edited = edit_middle_paragraph(text)
    assert edited == "one two three\n\nfour EDITED six\n\nseven eight"
    assert edit_middle_paragraph(edited) != edited


@given(corpus_size=st.integers(1, 20), n=st.integers(0, 100))
def test_cycled_records_are_distinct_in_id_and_text(corpus_size: int, n: int):
    corpus = [Record(f"r{i}", f"text {i}", {"i": i}) for i in range(corpus_size)]
    out = cycled(corpus, n)
    assert len(out) == n
    assert len({r.id for r in out}) == n and len({r.text for r in out}) == n
    first = [(r.id, r.text) for r in corpus][:n]
    assert [(r.id, r.text) for r in out[:corpus_size]] == first  # the first cycle is the corpus
    assert all(r.metadata == corpus[i % corpus_size].metadata for i, r in enumerate(out))


@given(corpus_size=st.integers(1, 10), cycles=st.integers(1, 4), n=st.integers(0, 100))
def test_a_cycled_corpus_cycled_again_stays_distinct(corpus_size: int, cycles: int, n: int):
    """`python -m bench --cycles` cycles the corpus, and (f) cycles that again, under its own tag."""
    corpus = [Record(f"r{i}", f"text {i}") for i in range(corpus_size)]
    out = cycled(cycled(corpus, cycles * corpus_size), n, tag="f")
    assert len({r.id for r in out}) == n and len({r.text for r in out}) == n


def test_nothing_to_cycle():
    assert cycled([], 5) == []


def test_a_corpus_reads_jsonl_and_plain_lines(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text(
        '{"id": 7, "text": "seven", "metadata": {"k": 1}}\n\nplain line\n{"text": "no id"}\n', encoding="utf-8"
    )
    records = load_corpus(path)
    assert [(r.id, r.text, r.metadata) for r in records] == [
        ("7", "seven", {"k": 1}),
        ("line-2", "plain line", {}),
        ("line-3", "no id", {}),
    ]
