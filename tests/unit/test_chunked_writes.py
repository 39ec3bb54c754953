"""A record written as its chunks, with small fakes: its chunks may ride in several works, and the
record is written and settles (surplus chunks deleted, marker, offset, one outcome) only with the
last of them; every Milvus write goes by primary key, trimmed by the stored count (the chunk count
of a record's first chunk); a chunk that fails dead-letters the record once; skips are per record.
The last test replays random histories against a model of Milvus, crashing after every call."""

from __future__ import annotations

import json
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from ingestor import metrics
from ingestor.batching import BatchLimits, plan
from ingestor.pipeline import Pipeline
from ingestor.sink import Stored
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


class Ordered(FakeSink):
    """Logs each upsert's ids in the order given (the protocol cares which chunk comes first)."""

    def upsert(self, entities):
        if self.reject_id and any(e.id == self.reject_id for e in entities):
            return super().upsert(entities)
        self.log.append(("upsert", [e.id for e in entities]))
        return len(entities)


def test_a_record_spread_over_works_is_written_and_settled_with_its_last_chunk():
    log = Log()
    p, tracker = pipeline_with(log, Ordered(log), splitter=BarSplitter())
    items = records_for(tracker, [(None, b'{"id":"a","text":"one|two|three"}')])
    works = _works(p, items, max_records=2)
    assert len(works) == 2
    upserted, settled_before = metrics.total(metrics.CHUNKS_UPSERTED), metrics.RECORDS.totals()["upserted"]
    p.model.embed(works[0])
    p.writer.write(works[0])
    # The first work holds its chunks: nothing is written, nothing settles.
    assert "upsert" not in _names(log) and "delete" not in _names(log)
    assert [e for e in log if e[0] in ("store", "done") and e[1]] == []
    assert tracker.to_commit().get(TP) is None
    p.model.embed(works[1])
    p.writer.write(works[1])
    # All chunks in one call, the first chunk first; a new record has nothing to trim.
    assert [e for e in log if e[0] == "upsert"] == [("upsert", ["a#0", "a#1", "a#2"])]
    assert _names(log)[-3:] == ["upsert", "store", "done"] and "delete" not in _names(log)
    assert ("store", ["a"]) in log
    assert tracker.to_commit()[TP].offset == 1
    assert metrics.RECORDS.totals()["upserted"] - settled_before == 1
    assert metrics.total(metrics.CHUNKS_UPSERTED) - upserted == 3


def test_a_held_chunks_text_stays_in_flight_until_its_record_is_written_and_cached():
    """A chunk's vector reaches the cache only with its record's last chunk: until then a later
    window must find its text in flight, or it would embed it a second time."""
    from ingestor.work import Unit

    log = Log()
    p, tracker = pipeline_with(log, Ordered(log), splitter=BarSplitter())
    items = records_for(tracker, [(None, b'{"id":"a","text":"one|two|three"}')])
    works = _works(p, items, max_records=2)
    first = works[0].claimed[0]

    def later() -> Unit:
        unit = Unit(first.text, first.text_sha256, [])
        p.in_flight.enter([], [unit])
        return unit

    _run(p, works[:1])
    assert later().shares is first, "held, not cached: a later window would embed it again"
    _run(p, works[1:])
    assert ("store", ["a"]) in log
    assert later().shares is None and len(p.in_flight) == 0


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
    spans = sorted(
        (
            e.id,
            e.text,
            e.chunk.doc_id,
            e.chunk.index,
            e.chunk.count,
            e.chunk.char_start,
            e.chunk.char_end,
            e.metadata["k"],
        )
        for e in seen
    )
    assert spans == [("a#0", "ab", "a", 0, 2, 0, 2, 1), ("a#1", "cde", "a", 1, 2, 3, 6, 1)]
    assert len({e.content_hash for e in seen}) == 1, "every chunk carries its record's content hash"


def test_a_shrinking_record_trims_by_key_and_writes_its_first_chunk_last():
    log = Log()
    sink = Ordered(log)
    p, tracker = pipeline_with(log, sink, splitter=BarSplitter())
    sink.held["a"] = Stored("old", 4)
    items = records_for(tracker, [(None, b'{"id":"a","text":"x|y"}')])
    _run(p, _works(p, items))
    writes = [e for e in log if e[0] in ("upsert", "delete")]
    assert writes == [("upsert", ["a#1"]), ("delete", ["a#2", "a#3"]), ("upsert", ["a#0"])]
    assert _names(log)[-2:] == ["store", "done"]


def test_a_growing_record_writes_every_chunk_first_chunk_first_and_deletes_nothing():
    log = Log()
    sink = Ordered(log)
    p, tracker = pipeline_with(log, sink, splitter=BarSplitter())
    sink.held["a"] = Stored("old", 1)
    items = records_for(tracker, [(None, b'{"id":"a","text":"3|2|1"}')])
    _run(p, _works(p, items))
    assert [e for e in log if e[0] in ("upsert", "delete")] == [("upsert", ["a#0", "a#1", "a#2"])]


def test_a_later_work_trims_what_an_earlier_work_in_flight_wrote():
    """The later window read Milvus before the earlier one wrote: the earlier write's count, not
    the read, is what it must trim."""
    log = Log()
    sink = Ordered(log)
    p, tracker = pipeline_with(log, sink, splitter=BarSplitter())
    first = _works(p, records_for(tracker, [(None, b'{"id":"a","text":"1|2|3|4"}')]))
    second = _works(p, records_for(tracker, [(None, b'{"id":"a","text":"1"}')]))
    assert second[0].stored == {}, "the read saw nothing: the earlier work had not written yet"
    _run(p, first)
    _run(p, second)
    writes = [e for e in log if e[0] in ("upsert", "delete")]
    assert writes[-2:] == [("delete", ["a#1", "a#2", "a#3"]), ("upsert", ["a#0"])]
    assert p.in_flight.extent("a") is None, "nothing is kept once no work carries the id"


def test_a_tombstone_deletes_every_stored_chunk_by_key_first_chunk_last():
    log = Log()
    sink = Ordered(log)
    p, tracker = pipeline_with(log, sink, splitter=BarSplitter())
    sink.held["a"] = Stored("h", 3)
    items = records_for(tracker, [(None, b'{"id":"a","text":"x|y"}'), (b"a", None), (b"never", None)])
    _run(p, _works(p, items))
    [delete] = [e for e in log if e[0] == "delete"]
    assert delete == ("delete", ["a#0", "a#1", "a#2"]) and "upsert" not in _names(log)
    assert tracker.to_commit()[TP].offset == 3


def test_a_tombstone_after_a_write_in_flight_deletes_what_that_write_left():
    log = Log()
    sink = Ordered(log)
    p, tracker = pipeline_with(log, sink, splitter=BarSplitter())
    first = _works(p, records_for(tracker, [(None, b'{"id":"a","text":"x|y"}')]))
    second = _works(p, records_for(tracker, [(b"a", None)]))
    _run(p, first)
    _run(p, second)
    assert ("delete", ["a#0", "a#1"]) in log


def test_a_chunk_milvus_refuses_dead_letters_its_record_once():
    log = Log()
    p, tracker = pipeline_with(log, FakeSink(log, reject_id="a#1"), splitter=BarSplitter())
    items = records_for(tracker, [(None, b'{"id":"a","text":"x|y|z"}'), (None, b'{"id":"b","text":"w"}')])
    _run(p, _works(p, items))
    assert [e for e in log if e[0] == "dlq"] == [("dlq", ["sink_rejected"])]
    assert ("store", ["b"]) in log, "b settles whole (its marker is written); a is a dead letter"
    assert tracker.to_commit()[TP].offset == 2


def test_a_growing_record_whose_first_chunk_is_refused_takes_back_its_later_chunks():
    log = Log()
    sink = FakeSink(log, reject_id="a#0")
    p, tracker = pipeline_with(log, sink, splitter=BarSplitter())
    sink.held["a"] = Stored("old", 1)
    items = records_for(tracker, [(None, b'{"id":"a","text":"x|y|z"}')])
    _run(p, _works(p, items))
    assert ("upsert", ["a#1", "a#2"]) in log
    assert ("delete", ["a#1", "a#2"]) in log, "chunks past the stored count must not outlive a refused first chunk"
    assert ("dlq", ["sink_rejected"]) in log and tracker.to_commit()[TP].offset == 1


def test_a_chunk_the_model_cannot_encode_dead_letters_its_record_once_and_writes_none_of_it():
    log = Log()
    p, tracker = pipeline_with(
        log, FakeSink(log), embedder=FakeEmbedder(log, fail_once={"bad"}), splitter=BarSplitter()
    )
    # The forward pass fails as a whole; bisection by encode finds the one text that fails again.
    p.model.embedder.forward = lambda features: (_ for _ in ()).throw(RuntimeError("batch failed"))
    original = p.model.embedder.encode

    def encode(texts):
        if "bad" in texts:
            raise RuntimeError("cannot encode")
        return original(texts)

    p.model.embedder.encode = encode
    items = records_for(tracker, [(None, b'{"id":"a","text":"good|bad|fine"}')])
    _run(p, _works(p, items))
    assert len([e for e in log if e[0] == "dlq"]) == 1
    assert "upsert" not in _names(log) and "delete" not in _names(log), "its earlier version stays whole"
    assert not [e for e in log if e[0] == "store" and e[1]]
    assert tracker.to_commit()[TP].offset == 1


def test_an_unchanged_record_is_skipped_whole_on_its_own_marker():
    log = Log()

    class Marked(FakeCache):
        def lookup(self, ids, shas):
            return [digests.get(i) for i in ids], [None] * len(shas)

    digests: dict[str, str] = {}
    sink = FakeSink(log)
    p, tracker = pipeline_with(log, sink, cache=Marked(log), splitter=BarSplitter())
    items = records_for(tracker, [(None, b'{"id":"a","text":"one|two"}')])
    digests["a"] = p.identity.digest(items[0])
    sink.held["a"] = Stored(digests["a"], 2)
    skipped = metrics.RECORDS.totals()["skipped"]
    _run(p, _works(p, items))
    assert ("read", "strong") in log, "Milvus is asked, by record id"
    assert "upsert" not in _names(log) and "encode" not in _names(log) and "forward" not in _names(log)
    assert metrics.RECORDS.totals()["skipped"] - skipped == 1
    assert tracker.to_commit()[TP].offset == 1


def test_reads_name_an_older_writes_timestamp_once_a_write_after_the_assignment_settled():
    import time

    log = Log()
    sink = FakeSink(log)
    sink.timestamp = 7
    p, tracker = pipeline_with(log, sink, splitter=BarSplitter())
    p.consistency.settle_s = 0.0

    def reads() -> list[str]:
        return [e[1] for e in log if e[0] == "read"]

    _run(p, _works(p, records_for(tracker, [(None, b'{"id":"a","text":"x"}')])))
    _run(p, _works(p, records_for_more(tracker, b'{"id":"b","text":"y"}')))
    assert reads() == ["strong", "guarantee"], "nothing written yet: Strong; then our write's timestamp"
    # A partition assigned since our last write: its previous owner may have written after it.
    _run(p, _works(p, records_for(tracker, [(None, b'{"id":"c","text":"z"}')])))
    time.sleep(0.001)
    _run(p, _works(p, records_for_more(tracker, b'{"id":"d","text":"w"}')))
    assert reads() == ["strong", "guarantee", "strong", "guarantee"]
    # A record written since the guarantee's write is read Strong.
    _run(p, _works(p, records_for_more(tracker, b'{"id":"d","text":"v"}')))
    assert reads()[-1] == "guarantee", "settled at once here"
    p.consistency.settle_s = 60.0
    _run(p, _works(p, records_for_more(tracker, b'{"id":"d","text":"u"}')))
    assert reads()[-1] == "strong"


def records_for_more(tracker, value: bytes):
    """One more record on the partition `records_for` assigned last, at its next offset."""
    from ingestor.config import KafkaSettings
    from ingestor.parsing import parse_record
    from ingestor.records import Position, RawRecord

    generation = tracker.generation(TP)
    offset = records_for_more.next = getattr(records_for_more, "next", 1000) + 1
    pos = Position(TP, offset, 0, generation, 0)
    tracker.add(pos)
    return [parse_record(RawRecord(pos, None, value), KafkaSettings())]


def test_the_chunk_settings_are_part_of_a_records_content_hash():
    log = Log()
    plain, _ = pipeline_with(log, FakeSink(log))
    chunked, tracker = pipeline_with(log, FakeSink(log), splitter=BarSplitter())
    [a] = records_for(tracker, [(None, b'{"id":"a","text":"one"}')])
    [b] = records_for(tracker, [(None, b'{"id":"a","text":"one"}')])
    assert plain.identity.digest(a) != chunked.identity.digest(b)


# -- crashes at every step, against a model of Milvus ----------------------------------------------


class Crash(Exception):
    """The process dies here (kill -9): nothing after this call happens."""


@dataclass
class Milvus:
    """Chunk entities by primary key: (record id, index, chunk count, text)."""

    rows: dict[str, tuple[str, int, int, str]]


class ModelSink(FakeSink):
    """Applies writes to `Milvus`; raises Crash after `calls` write calls (None: never)."""

    def __init__(self, log: Log, milvus: Milvus, calls: int | None) -> None:
        super().__init__(log)
        self.milvus, self.calls = milvus, calls

    def _tick(self) -> None:
        if self.calls is not None:
            if self.calls == 0:
                raise Crash()
            self.calls -= 1

    def upsert(self, entities):
        self._tick()
        for e in entities:
            self.milvus.rows[e.id] = (e.chunk.doc_id, e.chunk.index, e.chunk.count, e.text)
        return len(entities)

    def delete(self, ids):
        self._tick()
        for i in ids:
            self.milvus.rows.pop(i, None)

    def stored(self, ids, guarantee=None):
        out = {}
        for i in ids:
            row = self.milvus.rows.get(f"{i}#0")
            if row is not None:
                out[i] = Stored("h", row[2])
        return out


def _check_stored_counts(milvus: Milvus) -> None:
    """The rule the writer keeps: no chunk at or past its record's first chunk's count."""
    first = {doc: count for doc, index, count, _ in milvus.rows.values() if index == 0}
    for key, (doc, index, _, _) in milvus.rows.items():
        assert index < first.get(doc, 0), f"{key} lies past its record's stored count {first.get(doc, 0)}"


@settings(max_examples=120, deadline=None)
@given(
    history=st.lists(st.tuples(st.sampled_from("ab"), st.one_of(st.none(), st.integers(1, 5))), min_size=1, max_size=8),
    window=st.integers(1, 4),
    batch=st.integers(1, 3),
    ahead=st.integers(0, 2),
)
def test_a_crash_after_any_write_replays_to_exactly_the_last_versions(history, window, batch, ahead):
    """Versions of two records (a chunk count, or None for a tombstone) in windows of `window`
    records and batches of `batch` chunks, each window planned `ahead` windows before it is
    written (as the pipeline's queues allow). For every k, the process dies after k Milvus writes,
    then a new process replays everything from the start. Every state in between keeps the
    stored-count rule, and the end state is exactly the last version of each record."""
    values = []
    for n, (record, count) in enumerate(history):
        if count is None:
            values.append((record.encode(), None))
        else:
            text = "|".join(f"{record}{n}.{i}" for i in range(count))
            values.append((None, json.dumps({"id": record, "text": text}).encode()))
    expected: dict[str, tuple[str, int, int, str]] = {}
    for record in "ab":
        mine = [(n, count) for n, (k, count) in enumerate(history) if k == record]
        if mine and mine[-1][1] is not None:
            n, count = mine[-1]
            expected.update({f"{record}#{i}": (record, i, count, f"{record}{n}.{i}") for i in range(count)})

    def run_process(milvus: Milvus, calls: int | None) -> ModelSink:
        log = Log()
        sink = ModelSink(log, milvus, calls)
        p, tracker = pipeline_with(log, sink, splitter=BarSplitter())
        items = records_for(tracker, values)
        planned: list = []
        for start in [*range(0, len(items), window), *[None] * ahead]:
            if start is not None:
                limits = BatchLimits(batch, 8192)
                planned.append(plan(items[start : start + window], limits, p.resolver, p.model.tokenize, p.split))
            if len(planned) > ahead or start is None and planned:
                _run(p, planned.pop(0))
                _check_stored_counts(milvus)
        assert not planned
        return sink

    total = 0
    while True:
        milvus = Milvus({})
        try:
            run_process(milvus, total)
        except Crash:
            _check_stored_counts(milvus)
            run_process(milvus, None)
            assert milvus.rows == expected, f"after a crash after {total} write(s)"
            total += 1
            continue
        assert milvus.rows == expected
        break


def test_the_model_of_milvus_catches_a_writer_that_trims_too_little():
    """The crash test can fail: a shrink that skips its trim leaves chunks past the stored count."""
    import pytest

    milvus = Milvus({"a#0": ("a", 0, 1, "x"), "a#1": ("a", 1, 3, "y")})
    with pytest.raises(AssertionError):
        _check_stored_counts(milvus)
