"""A record written as its chunks, with small fakes: its chunks may ride in several works, and the
record settles (surplus chunks deleted, marker, offset, one outcome) only with the last of them;
a chunk that fails dead-letters the record once; skips are per record."""

from __future__ import annotations

from ingestor import metrics
from ingestor.batching import BatchLimits, plan
from ingestor.pipeline import Pipeline
from tests.support.fakes import TP, BarSplitter, FakeCache, FakeEmbedder, FakeSink, Log, pipeline_with, records_for


def _works(p: Pipeline, items, max_records: int = 64):
    """The works the pipeline plans for one window (its own resolver, cache and splitter)."""
    return plan(items, BatchLimits(max_records, 8192), p.resolver, p.model.tokenize, p.split)


def _run(p: Pipeline, works) -> None:
    for work in works:
        p.model.embed(work)
        p.writer.write(work)


def _names(log: Log) -> list[str]:
    return [entry[0] for entry in log]


def test_a_record_spread_over_works_settles_with_its_last_chunk_and_only_then():
    log = Log()
    p, tracker = pipeline_with(log, FakeSink(log), splitter=BarSplitter())
    items = records_for(tracker, [(None, b'{"id":"a","text":"one|two|three"}')])
    works = _works(p, items, max_records=2)
    assert len(works) == 2
    upserted, settled_before = metrics.total(metrics.CHUNKS_UPSERTED), metrics.RECORDS.totals()["upserted"]
    p.model.embed(works[0])
    p.writer.write(works[0])
    # The first work writes its chunks (and caches their vectors), and settles nothing.
    assert "surplus" not in _names(log)
    assert [e for e in log if e[0] in ("store", "done") and e[1]] == []
    assert tracker.to_commit().get(TP) is None
    p.model.embed(works[1])
    p.writer.write(works[1])
    written = sorted(i for entry in log if entry[0] == "upsert" for i in entry[1])
    assert written == ["a#0", "a#1", "a#2"]
    # The surplus delete comes after the last upsert, the marker (of the record, not its chunks)
    # after that, the offset last.
    tail = _names(log)[-4:]
    assert tail == ["upsert", "surplus", "store", "done"]
    assert ("surplus", [("a", 3)]) in log and ("store", ["a"]) in log
    assert tracker.to_commit()[TP].offset == 1
    assert metrics.RECORDS.totals()["upserted"] - settled_before == 1
    assert metrics.total(metrics.CHUNKS_UPSERTED) - upserted == 3


def test_chunk_entities_carry_their_record_and_span():
    log = Log()
    seen = []

    class Keeping(FakeSink):
        def upsert(self, entities):
            seen.extend(entities)
            return super().upsert(entities)

    p, tracker = pipeline_with(log, Keeping(log), splitter=BarSplitter())
    items = records_for(tracker, [(None, b'{"id":"a","text":"ab|cde","metadata":{"k":1}}')])
    _run(p, _works(p, items))
    spans = sorted((e.id, e.text, e.chunk.doc_id, e.chunk.index, e.chunk.count, e.chunk.char_start,
                    e.chunk.char_end, e.metadata["k"]) for e in seen)
    assert spans == [("a#0", "ab", "a", 0, 2, 0, 2, 1), ("a#1", "cde", "a", 1, 2, 3, 6, 1)]
    assert len({e.content_hash for e in seen}) == 1, "every chunk carries its record's content hash"


def test_a_chunk_milvus_refuses_dead_letters_its_record_once_and_leaves_its_surplus():
    log = Log()
    p, tracker = pipeline_with(log, FakeSink(log, reject_id="a#1"), splitter=BarSplitter())
    items = records_for(tracker, [(None, b'{"id":"a","text":"x|y|z"}'), (None, b'{"id":"b","text":"w"}')])
    _run(p, _works(p, items))
    assert [e for e in log if e[0] == "dlq"] == [("dlq", ["sink_rejected"])]
    # b settles whole (its surplus goes, its marker is written); a is a dead letter: neither.
    assert ("surplus", [("b", 1)]) in log and ("store", ["b"]) in log
    assert tracker.to_commit()[TP].offset == 2


def test_a_chunk_the_model_cannot_encode_dead_letters_its_record_once():
    log = Log()
    p, tracker = pipeline_with(log, FakeSink(log), embedder=FakeEmbedder(log, fail_once={"bad"}), splitter=BarSplitter())
    # The forward pass fails as a whole; bisection by encode finds the one text that fails again.
    p.model.embedder.forward = lambda features: (_ for _ in ()).throw(RuntimeError("batch failed"))
    p.model.embedder.fail_once = {"bad"}
    original = p.model.embedder.encode

    def encode(texts):
        if "bad" in texts:
            raise RuntimeError("cannot encode")
        return original(texts)

    p.model.embedder.encode = encode
    items = records_for(tracker, [(None, b'{"id":"a","text":"good|bad|fine"}')])
    _run(p, _works(p, items))
    letters = [e for e in log if e[0] == "dlq"]
    assert len(letters) == 1
    assert "surplus" not in _names(log) and not [e for e in log if e[0] == "store" and e[1]]
    assert tracker.to_commit()[TP].offset == 1


def test_an_unchanged_record_is_skipped_whole_on_its_own_marker():
    log = Log()

    class Marked(FakeCache):
        def lookup(self, ids, shas):
            return [digests.get(i) for i in ids], [None] * len(shas)

    class Holding(FakeSink):
        def content_hashes(self, ids):
            log.append(("held", sorted(ids)))
            return {i: digests[i] for i in ids if i in digests}

    digests: dict[str, str] = {}
    p, tracker = pipeline_with(log, Holding(log), cache=Marked(log), splitter=BarSplitter())
    items = records_for(tracker, [(None, b'{"id":"a","text":"one|two"}')])
    digests["a"] = p.identity.digest(items[0])
    skipped = metrics.RECORDS.totals()["skipped"]
    _run(p, _works(p, items))
    assert ("held", ["a"]) in log, "Milvus is asked by record id"
    assert "upsert" not in _names(log) and "encode" not in _names(log) and "forward" not in _names(log)
    assert metrics.RECORDS.totals()["skipped"] - skipped == 1
    assert tracker.to_commit()[TP].offset == 1


def test_the_chunk_settings_are_part_of_a_records_content_hash():
    log = Log()
    plain, _ = pipeline_with(log, FakeSink(log))
    chunked, tracker = pipeline_with(log, FakeSink(log), splitter=BarSplitter())
    [a] = records_for(tracker, [(None, b'{"id":"a","text":"one"}')])
    [b] = records_for(tracker, [(None, b'{"id":"a","text":"one"}')])
    assert plain.identity.digest(a) != chunked.identity.digest(b)


def test_a_tombstone_deletes_its_record_by_id():
    log = Log()
    p, tracker = pipeline_with(log, FakeSink(log), splitter=BarSplitter())
    items = records_for(tracker, [(None, b'{"id":"a","text":"x|y"}'), (b"a", None)])
    _run(p, _works(p, items))
    assert ("delete", ["a"]) in log and "upsert" not in _names(log)
    assert tracker.to_commit()[TP].offset == 2
