"""The order of effects in the writer, with small fakes: deletes, Milvus upserts, dead letters,
then Redis, then offsets. A marker or a commit must never claim a write that Milvus does not hold."""

from __future__ import annotations

import numpy as np
import pytest

from ingestor.batching import BatchLimits, plan
from ingestor.pipeline import Pipeline
from tests.support.fakes import TP, FakeEmbedder, FakeSink, Log, pipeline_with, records_for


def _work(p: Pipeline, items, shared: bool = False):
    """One work as the pipeline plans it, with no cache: deletes and rejected ride along; with
    `shared`, texts in flight share earlier passes and this work's texts are claimed."""

    def resolve(units, ready):
        if not shared:
            return units
        p.in_flight.enter([], units)
        ready.units = [u for u in units if u.shares is not None]
        todo = [u for u in units if u.shares is None]
        p.in_flight.claim(todo)
        return todo

    def tokenize(units):
        for u in units:
            u.tokens = 5

    [work] = plan(items, BatchLimits(64, 8192), resolve, tokenize)
    return work


def _run(p: Pipeline, work) -> None:
    p.model.embed(work)
    p.writer.write(work)


def test_milvus_then_dead_letters_then_cache_then_offsets():
    log = Log()
    p, tracker = pipeline_with(log, FakeSink(log))
    items = records_for(
        tracker,
        [
            (None, b'{"id":"a","text":"alpha"}'),
            (b"gone", None),
            (None, b"not json"),
            (None, b'{"id":"b","text":"beta"}'),
        ],
    )
    _run(p, _work(p, items))
    names = [entry[0] for entry in log]
    assert names == ["encode", "forget", "delete", "upsert", "dlq", "store", "done"]
    assert ("store", ["a", "b"]) in log
    assert tracker.to_commit()[TP].offset == 4


def test_a_retried_upsert_writes_no_marker_and_no_offset_until_it_lands():
    log = Log()
    p, tracker = pipeline_with(log, FakeSink(log, fail_times=2))
    items = records_for(tracker, [(None, b'{"id":"a","text":"alpha"}')])
    _run(p, _work(p, items))
    names = [entry[0] for entry in log]
    assert names == ["encode", "upsert-failed", "upsert-failed", "upsert", "store", "done"]


def test_an_entity_milvus_rejects_goes_to_the_dlq_alone_and_gets_no_marker():
    log = Log()
    p, tracker = pipeline_with(log, FakeSink(log, reject_id="bad"))
    items = records_for(
        tracker,
        [(None, b'{"id":"%s","text":"text %d"}' % (i.encode(), n)) for n, i in enumerate(["a", "b", "bad", "c"])],
    )
    _run(p, _work(p, items))
    assert ("dlq", ["sink_rejected"]) in log
    [store] = [e for e in log if e[0] == "store"]
    assert store[1] == ["a", "b", "c"]
    upserted = sorted(i for e in log if e[0] == "upsert" for i in e[1])
    assert upserted == ["a", "b", "c"]
    assert tracker.to_commit()[TP].offset == 4  # the rejected one is done once dead-lettered


def test_an_id_superseded_in_the_window_is_written_once_and_both_offsets_are_done():
    log = Log()
    p, tracker = pipeline_with(log, FakeSink(log))
    items = records_for(tracker, [(None, b'{"id":"a","text":"old"}'), (None, b'{"id":"a","text":"new"}')])
    work = _work(p, items)
    assert [u.text for u in work.units] == ["new"]
    _run(p, work)
    assert ("done", [0, 1]) in log
    assert tracker.to_commit()[TP].offset == 2


def test_retries_stop_when_shutdown_gives_up():
    from ingestor.errors import Aborted

    log = Log()
    p, tracker = pipeline_with(log, FakeSink(log, fail_times=10**6))
    items = records_for(tracker, [(None, b'{"id":"a","text":"alpha"}')])
    work = _work(p, items)
    p.model.embed(work)
    p.abort()
    with pytest.raises(Aborted):
        p.writer.write(work)
    assert not [e for e in log if e[0] in ("store", "done")]


def test_a_text_still_in_flight_shares_the_earlier_pass_instead_of_running_its_own():
    log = Log()
    p, tracker = pipeline_with(log, FakeSink(log))
    first_items, second_items = _split(
        records_for(tracker, [(None, b'{"id":"a","text":"same"}'), (None, b'{"id":"b","text":"same"}')])
    )
    first = _work(p, first_items, shared=True)
    second = _work(p, second_items, shared=True)  # read while the first is not written yet
    assert [u.shares for u in second.units] == first.units
    p.model.embed(first)
    p.model.embed(second)
    assert [e for e in log if e[0] == "encode"] == [("encode", 1)]
    assert np.array_equal(second.units[0].vector, first.units[0].vector)
    p.writer.write(first)
    p.writer.write(second)
    assert len(p.in_flight) == 0, "entries are released once their work is written"
    assert ("upsert", ["b"]) in log and tracker.to_commit()[TP].offset == 2


def test_when_the_shared_pass_fails_the_later_work_embeds_the_text_itself():
    log = Log()
    p, tracker = pipeline_with(log, FakeSink(log), FakeEmbedder(log, fail_once={"same"}))
    first_items, second_items = _split(
        records_for(tracker, [(None, b'{"id":"a","text":"same"}'), (None, b'{"id":"b","text":"same"}')])
    )
    first = _work(p, first_items, shared=True)
    second = _work(p, second_items, shared=True)
    _run(p, first)
    assert ("dlq", ["embed_failed"]) in log and len(p.in_flight) == 0
    _run(p, second)
    assert ("upsert", ["b"]) in log
    assert tracker.to_commit()[TP].offset == 2


def _split(items):
    return items[:1], items[1:]
