"""A kill -9 between the upsert of a record's new chunks and the delete of its surplus ones: the
collection is left with extra chunks only, and the replay leaves exactly the expected chunks."""

from __future__ import annotations

import pytest

from ingestor.chunking import Splitter
from ingestor.corpus import long_documents
from ingestor.tokenizer import Tokenizer
from tests.faults.stack import Scenario, doc
from tests.support import harness

CHUNKING = {"INGESTOR_CHUNKING__ENABLED": "true"}
FIELDS = ("id", "doc_id", "chunk_index", "chunk_count", "char_start", "char_end", "text")


def layout(texts: dict[str, str], splitter: Splitter) -> dict[str, tuple]:
    out = {}
    for record_id, text in texts.items():
        chunks = splitter.split(text)
        for c in chunks:
            out[f"{record_id}#{c.index}"] = (record_id, c.index, len(chunks), c.char_start, c.char_end, c.text)
    return out


def stored(scn: Scenario) -> dict[str, tuple]:
    rows = harness.milvus_rows(scn.milvus_uri, scn.collection, FIELDS)
    assert len(rows) == len({r["id"] for r in rows}), "a chunk is stored twice"
    return {r["id"]: tuple(r[f] for f in FIELDS[1:]) for r in rows}


@pytest.mark.parametrize("scenario", ["lite", "server"], indirect=True)
def test_a_kill_between_new_chunks_and_the_surplus_delete_replays_to_exactly_the_expected_chunks(
        scenario: Scenario, reference_model):
    scn = scenario
    limit = reference_model.max_seq_length
    splitter = Splitter(Tokenizer(reference_model.tokenizer, limit), limit, 32)
    texts = {d.id: d.text for d in [d for d in long_documents() if len(d.text) >= 5_000][:15]}
    scn.settings.update(CHUNKING)
    scn.create_topic(2)
    scn.produce([doc({"id": i, "text": t}) for i, t in texts.items()])
    first = scn.run()
    assert first.returncode == 0, first.output[-4000:]
    assert stored(scn) == layout(texts, splitter)

    shrunk = {i: "\n\n".join(t.split("\n\n")[: max(1, t.count("\n\n") // 4)]) for i, t in texts.items()}
    scn.produce([doc({"id": i, "text": t}) for i, t in shrunk.items()])
    crashed = scn.run(INGESTOR_FAULT_CRASH_AT="after_upsert:1")
    assert crashed.returncode == -9, crashed.output[-4000:]
    expected = layout(shrunk, splitter)
    left = stored(scn)
    # New chunks landed (some at least), surplus ones did not go: extra chunks, and nothing missing
    # that was there before (the old chunks stand in for the new ones not yet written).
    assert set(left) > set(expected), "the crash should leave surplus chunks behind"
    assert any(left[i] == v for i, v in expected.items()), "the crash came before any new chunk landed"

    replay = scn.run()
    assert replay.returncode == 0, replay.output[-4000:]
    assert stored(scn) == expected
    committed, ends = scn.offsets()
    assert committed == ends
