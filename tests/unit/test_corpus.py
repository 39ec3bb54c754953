"""The corpora the tests and the bench share: the long documents are real, long, distinct and
the same on every call; an edit changes one word of one paragraph."""

from __future__ import annotations

from ingestor.corpus import edit_middle_paragraph, long_documents


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
