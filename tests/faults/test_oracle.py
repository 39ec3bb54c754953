"""The fault suite's oracle itself, without services: it passes exactly the end states it should,
with and without chunks, and fails a missing chunk, an orphan a shrink left, a chunk of a deleted
record, a stale chunk and a duplicate. The chunks are the project's own splitter's (a tokenizer of
whole words here, so that short texts make several chunks)."""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any

import pytest

from ingestor.chunking import Splitter, splitter_for
from ingestor.config import ChunkingSettings
from tests.faults import oracle
from tests.faults.stack import Produced, Scenario, Stack, chunking_settings, doc, tombstone


class Words:
    """A token per run of non-space characters, and two special tokens around every text."""

    def offsets(self, text: str) -> list[tuple[int, int]]:
        return [m.span() for m in re.finditer(r"\S+", text)]

    def count(self, text: str) -> int:
        return len(self.offsets(text)) + 2


SPLIT = Splitter(Words(), max_tokens=12, overlap_tokens=2)
LONG = "\n\n".join(" ".join(f"Sentence {p}.{s} of paragraph {p} says something." for s in range(3)) for p in range(6))
SHRUNK = "\n\n".join(LONG.split("\n\n")[:2])
SHORT = "One short record."


def chunk_rows(good: dict[str, str], split: Splitter = SPLIT) -> list[dict[str, Any]]:
    """The entities a daemon with chunking writes for these records (id -> text)."""
    rows = []
    for record_id, text in good.items():
        chunks = split.split(text)
        for c in chunks:
            rows.append(
                {
                    "id": f"{record_id}#{c.index}",
                    "doc_id": record_id,
                    "chunk_index": c.index,
                    "chunk_count": len(chunks),
                    "char_start": c.char_start,
                    "char_end": c.char_end,
                    "text": c.text,
                }
            )
    return rows


def test_the_texts_make_several_chunks_and_a_shrink_fewer():
    assert len(SPLIT.split(LONG)) > len(SPLIT.split(SHRUNK)) > 1
    assert len(SPLIT.split(SHORT)) == 1


def test_exactly_the_chunks_of_the_last_versions_pass():
    good = {"a": LONG, "b": SHORT}
    want = oracle.check_entities(chunk_rows(good), good, SPLIT)
    assert {w.doc_id for w in want.values()} == {"a", "b"}
    assert {i for i in want if i.startswith("a#")} == {f"a#{n}" for n in range(len(SPLIT.split(LONG)))}
    assert want["b#0"].text == SHORT and want["b#0"].count == 1


def test_a_shrink_that_left_its_surplus_chunks_fails():
    before, after = chunk_rows({"a": LONG}), chunk_rows({"a": SHRUNK})
    left = [r for r in before if r["chunk_index"] >= len(after)]  # the new chunks upserted, the rest not deleted
    with pytest.raises(AssertionError, match=r"orphan chunk\(s\) at or past their record's chunk count"):
        oracle.check_entities(after + left[:1], {"a": SHRUNK}, SPLIT)


def test_a_missing_chunk_fails():
    rows = chunk_rows({"a": LONG, "b": SHORT})
    gone = rows.pop(2)
    with pytest.raises(AssertionError, match=r"1 chunk\(s\) missing from Milvus: \['" + re.escape(gone["id"])):
        oracle.check_entities(rows, {"a": LONG, "b": SHORT}, SPLIT)


def test_a_chunk_of_a_deleted_record_fails():
    rows = chunk_rows({"a": LONG, "b": SHORT})
    with pytest.raises(AssertionError, match=r"orphan chunk\(s\), of records with no live version.*'b#0'"):
        oracle.check_entities(rows, {"a": LONG}, SPLIT)


def test_a_chunk_of_an_older_version_fails_by_its_count_or_its_text():
    rows = chunk_rows({"a": SHRUNK})
    stale = {**rows[0], "chunk_count": len(SPLIT.split(LONG))}  # the same text, the old version's count
    with pytest.raises(AssertionError, match="not as the last version of their record says"):
        oracle.check_entities([stale, *rows[1:]], {"a": SHRUNK}, SPLIT)
    edited = SHRUNK.replace("Sentence 1.2", "Sentence one-two")
    with pytest.raises(AssertionError, match="text"):
        oracle.check_entities(rows, {"a": edited}, SPLIT)


def test_a_chunk_stored_twice_or_under_another_id_fails():
    rows = chunk_rows({"a": LONG})
    with pytest.raises(AssertionError, match="more than once"):
        oracle.check_entities([*rows, rows[1]], {"a": LONG}, SPLIT)
    with pytest.raises(AssertionError, match="other than <doc_id>#<chunk_index>"):
        oracle.check_entities([{**rows[0], "id": "a"}, *rows[1:]], {"a": LONG}, SPLIT)


def test_without_chunking_one_entity_per_record_holding_its_whole_text():
    good = {"a": LONG, "b": SHORT}
    rows = [{"id": i, "text": t} for i, t in good.items()]
    want = oracle.check_entities(rows, good, None)
    assert set(want) == {"a", "b"} and want["a"].text == LONG
    with pytest.raises(AssertionError, match=r"unexpected id\(s\) in Milvus.*'c'"):
        oracle.check_entities([*rows, {"id": "c", "text": "deleted"}], good, None)
    with pytest.raises(AssertionError, match=r"good record\(s\) missing"):
        oracle.check_entities(rows[:1], good, None)
    with pytest.raises(AssertionError, match=r"good record\(s\) missing"):  # chunks where records belong
        oracle.check_entities(chunk_rows(good), good, None)
    with pytest.raises(AssertionError, match="text"):
        oracle.check_entities([{"id": "a", "text": SHRUNK}, rows[1]], good, None)


def test_a_collection_without_texts_holds_empty_ones():
    good = {"a": LONG}
    rows = [{**r, "text": ""} for r in chunk_rows(good)]
    oracle.check_entities(rows, good, SPLIT, with_text=False)
    with pytest.raises(AssertionError, match="text"):
        oracle.check_entities(rows, good, SPLIT)


# -- the scenario's settings and the splitter made from them -----------------------------------


def test_scenarios_set_chunking_explicitly_on_unless_told_otherwise(monkeypatch, tmp_path):
    monkeypatch.delenv("INGESTOR_FAULTS_CHUNKING", raising=False)
    scn = Scenario(Stack(0), "t", tmp_path)
    assert scn.env()["INGESTOR_CHUNKING__ENABLED"] == "true" and scn.chunked
    scn.chunking = False
    assert scn.env()["INGESTOR_CHUNKING__ENABLED"] == "false" and not scn.chunked
    scn.settings["INGESTOR_CHUNKING__ENABLED"] = "true"  # a test's own setting wins
    assert scn.chunked
    monkeypatch.setenv("INGESTOR_FAULTS_CHUNKING", "0")
    assert not Scenario(Stack(0), "t", tmp_path).chunked


def test_chunk_settings_are_read_from_the_run_environment():
    s = chunking_settings(
        {"INGESTOR_CHUNKING__ENABLED": "true", "INGESTOR_CHUNKING__OVERLAP_TOKENS": "8", "INGESTOR_KAFKA__TOPICS": "x"}
    )
    assert s.enabled and s.overlap_tokens == 8 and s.max_tokens is None
    assert not chunking_settings({"INGESTOR_CHUNKING__ENABLED": "false"}).enabled
    assert chunking_settings({}) == ChunkingSettings()  # unset: whatever the project's default is


@pytest.fixture(scope="module")
def hf_tokenizer():
    from transformers import AutoTokenizer

    from ingestor.config import DEFAULT_MODEL
    from ingestor.embedder import resolve_model_path

    return AutoTokenizer.from_pretrained(resolve_model_path(DEFAULT_MODEL))


def test_the_oracles_splitter_is_the_daemons(hf_tokenizer):
    from bench.corpus import long_documents
    from ingestor.tokenizer import Tokenizer

    model = SimpleNamespace(tokenizer=hf_tokenizer, max_seq_length=256)
    assert oracle.splitter({"INGESTOR_CHUNKING__ENABLED": "false"}, model) is None
    split = oracle.splitter({"INGESTOR_CHUNKING__ENABLED": "true", "INGESTOR_CHUNKING__OVERLAP_TOKENS": "16"}, model)
    assert isinstance(split, Splitter) and (split.max_tokens, split.overlap_tokens) == (256, 16)
    daemons = splitter_for(
        ChunkingSettings(enabled=True, overlap_tokens=16),
        SimpleNamespace(tokenizer=Tokenizer(hf_tokenizer, 256), max_seq_length=256),
    )
    text = max(long_documents(), key=lambda d: len(d.text)).text
    assert split.split(text) == daemons.split(text) and len(split.split(text)) > 10
    short = oracle.splitter({"INGESTOR_CHUNKING__ENABLED": "true", "INGESTOR_MODEL__MAX_SEQ_LENGTH": "128"}, model)
    assert short is not None and short.max_tokens == 128


# -- the committed prefix, against a scripted Milvus and Kafka ---------------------------------


def scripted(monkeypatch, tmp_path, produced: list[Produced], rows: list[dict[str, Any]]) -> Scenario:
    scn = Scenario(Stack(0), "t", tmp_path, chunking=True)
    scn.produced = produced
    monkeypatch.setattr(
        scn, "entities", lambda fields=("id",), strict=True: [{f: r[f] for f in fields if f in r} for r in rows]
    )
    monkeypatch.setattr(oracle, "dead_letters", lambda scn: [])
    monkeypatch.setattr(oracle, "splitter", lambda env, model=None: SPLIT)
    return scn


def at(offsets: list[int], *recs) -> list[Produced]:
    return [Produced(r, 0, o) for r, o in zip(recs, offsets)]


def test_the_committed_prefix_allows_a_shrink_in_flight_and_fails_one_committed_with_its_orphans(monkeypatch, tmp_path):
    v1, v2 = doc({"id": "a", "text": LONG}), doc({"id": "a", "text": SHRUNK})
    old, new = chunk_rows({"a": LONG}), chunk_rows({"a": SHRUNK})
    mid_write = new + old[len(new) :]  # the shrink's chunks upserted, its surplus not yet deleted
    scn = scripted(monkeypatch, tmp_path, at([0, 1], v1, v2), mid_write)
    oracle.check_committed_prefix(scn, {0: 1})  # v2 not committed: it may be anywhere in its write
    with pytest.raises(AssertionError, match=r"orphan chunk\(s\) at or past"):
        oracle.check_committed_prefix(scn, {0: 2})  # v2 committed: its surplus must be gone
    oracle.check_committed_prefix(scripted(monkeypatch, tmp_path, at([0, 1], v1, v2), new), {0: 2})
    with pytest.raises(AssertionError, match=r"chunk\(s\) missing"):
        oracle.check_committed_prefix(scripted(monkeypatch, tmp_path, at([0], v1), old[:-1]), {0: 1})


def test_the_committed_prefix_fails_a_committed_delete_whose_chunks_remain(monkeypatch, tmp_path):
    v1, gone = doc({"id": "a", "text": LONG}), tombstone("a")
    rows = chunk_rows({"a": LONG})
    scn = scripted(monkeypatch, tmp_path, at([0, 1], v1, gone), rows)
    oracle.check_committed_prefix(scn, {0: 1})
    with pytest.raises(AssertionError, match=r"covers the delete of 1 record\(s\) still in Milvus"):
        oracle.check_committed_prefix(scn, {0: 2})
    oracle.check_committed_prefix(scripted(monkeypatch, tmp_path, at([0, 1], v1, gone), []), {0: 2})


def test_the_texts_the_model_sees_are_the_chunks_with_chunking_and_the_records_without(monkeypatch, tmp_path):
    texts = [LONG, SHORT, SHORT]
    assert oracle.model_texts(Scenario(Stack(0), "t", tmp_path, chunking=False), texts) == {LONG, SHORT}
    monkeypatch.setattr(oracle, "splitter", lambda env, model=None: SPLIT)
    chunked = oracle.model_texts(Scenario(Stack(0), "t", tmp_path, chunking=True), texts)
    assert chunked == {c.text for c in SPLIT.split(LONG)} | {SHORT}
