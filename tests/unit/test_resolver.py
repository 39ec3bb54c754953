"""The pipeline's resolver (`resolver.Resolver`), on its own with the fakes: skips, texts in
flight and cached vectors found with one Redis round trip and one Milvus read."""

from __future__ import annotations

import hashlib


def _unit(text: str):
    from ingestor.work import Unit

    return Unit(text, hashlib.sha256(text.encode()).hexdigest(), [])


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _window(values):
    """A window's units and the work its resolved part goes to, as `batching.plan` makes them."""
    from ingestor.batching import collapse, group_texts
    from ingestor.work import Work
    from tests.support.fakes import Log, LoggingTracker, records_for

    window = collapse(records_for(LoggingTracker(Log()), values))
    return group_texts(window.documents), Work(deletes=window.deletes, rejected=window.rejected)


def test_the_resolver_skips_shares_and_fills_cached_vectors_in_one_lookup():
    import numpy as np

    from ingestor.dedupe import CachedVector
    from ingestor.sink import Stored
    from tests.support.fakes import FakeCache, FakeSink, Log, resolver_with

    log = Log()
    cached = CachedVector(np.full(4, 2.0, dtype=np.float32), True)
    digests: dict[str, str] = {}

    class Cache(FakeCache):
        def lookup(self, ids, shas):
            log.append(("lookup", list(ids), list(shas)))
            return [digests.get(i) for i in ids], [cached if s == _sha("cached") else None for s in shas]

    class Sink(FakeSink):
        def stored(self, ids, guarantee=None):
            log.append(("held", sorted(ids)))
            return {i: Stored(digests[i], 1) for i in ids if i in digests}

    resolve = resolver_with(log, Sink(log), Cache(log))
    flying = _unit("flying")
    resolve.in_flight.claim([flying])  # earlier work is embedding this text
    units, ready = _window(
        [
            (None, b'{"id":"a","text":"cached"}'),
            (None, b'{"id":"b","text":"flying"}'),
            (None, b'{"id":"c","text":"new"}'),
            (None, b'{"id":"d","text":"same"}'),
            (b"gone", None),
        ]
    )
    same = units[3].docs[0]
    digests["d"] = resolve.identity.digest(same)
    todo = resolve(units, ready)
    # One lookup: a marker per record, a vector only for the texts not in flight; then Milvus.
    assert log == [("lookup", ["a", "b", "c", "d"], [_sha("cached"), _sha("new"), _sha("same")]), ("held", ["d"])]
    assert ready.skipped == [same]
    assert [u.text for u in ready.units] == ["cached", "flying"]
    hit, shared = ready.units
    assert hit.from_cache and hit.truncated and np.array_equal(hit.vector, cached.vector)
    assert shared.shares is flying and shared.vector is None
    assert [u.text for u in todo] == ["new"]
    later = _unit("new")
    resolve.in_flight.enter([], [later])
    assert later.shares is todo[0], "what is left to embed is claimed for later windows"
    # Every record and delete of the window is in flight: the same unchanged record read again
    # before this work is written may not be skipped (Milvus does not hold its write yet).
    assert resolve.in_flight.busy_among(["a", "b", "c", "d", "gone"]) == set()
    again, again_ready = _window([(None, b'{"id":"d","text":"same"}')])
    assert [u.text for u in resolve(again, again_ready)] == ["same"] and again_ready.skipped == []
    resolve.in_flight.enter(["gone"], [])
    assert resolve.in_flight.busy_among(["a", "d", "gone"]) == {"d", "gone"}


def test_without_a_cache_the_resolver_asks_nothing_and_only_shares():
    from tests.support.fakes import FakeCache, FakeSink, Log, resolver_with

    class Off(FakeCache):
        enabled = False

        def lookup(self, ids, shas):
            raise AssertionError("no lookup without a cache")

    class Sink(FakeSink):
        def stored(self, ids, guarantee=None):
            raise AssertionError("no query without a cache")

    log = Log()
    resolve = resolver_with(log, Sink(log), Off(log))
    flying = _unit("flying")
    resolve.in_flight.claim([flying])
    units, ready = _window([(None, b'{"id":"a","text":"flying"}'), (None, b'{"id":"b","text":"new"}')])
    todo = resolve(units, ready)
    assert [u.text for u in todo] == ["new"] and [u.shares for u in ready.units] == [flying]
    assert ready.skipped == []
