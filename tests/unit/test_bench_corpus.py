"""The bench's corpora: (f) must hand every record a text of its own, or the cache would skip
the stages it measures."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ingestor.bench.variants import ceiling_records
from ingestor.corpus import Record


@given(corpus_size=st.integers(1, 20), n=st.integers(0, 100))
def test_ceiling_records_are_distinct_in_id_and_text(corpus_size: int, n: int):
    corpus = [Record(f"r{i}", f"text {i}", {"i": i}) for i in range(corpus_size)]
    out = ceiling_records(corpus, n)
    assert len(out) == n
    assert len({r.id for r in out}) == n and len({r.text for r in out}) == n
    assert [r.text for r in out[:corpus_size]] == [r.text for r in corpus][:n]  # the first cycle is the corpus
    assert all(r.metadata == corpus[i % corpus_size].metadata for i, r in enumerate(out))
