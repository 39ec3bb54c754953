"""collapse (latest per id wins), group_texts (one unit per distinct text) and cut_work (units cut
into batches; everything already resolved rides with the first), composed as `Pipeline._emit` does."""

from __future__ import annotations

import hashlib

from ingestor.batcher import BatchLimits
from ingestor.planning import SharedTexts, Unit, Window, Work, collapse, cut_work, group_texts
from ingestor.records import Delete, Document, Position, RawRecord, Rejected, TopicPartition

TP = TopicPartition("docs", 0)


def raw(offset: int) -> RawRecord:
    return RawRecord(Position(TP, offset, 0, 1, 0), key=None, value=b"")


def doc(record_id: str, offset: int, text: str = "t") -> Document:
    sha = hashlib.sha256(text.encode()).hexdigest()
    return Document(id=record_id, text=text, text_sha256=sha, metadata={}, raw=raw(offset))


def delete(record_id: str, offset: int) -> Delete:
    return Delete(id=record_id, raw=raw(offset))


def rejected(offset: int) -> Rejected:
    return Rejected(raw=raw(offset), reason="invalid_json", error="bad")


def offsets(positions) -> list[int]:
    return [p.offset for p in positions]


# -- collapse ------------------------------------------------------------------------------------


def test_distinct_ids_are_all_kept():
    w = collapse([doc("a", 0), doc("b", 1)])
    assert [d.id for d in w.documents] == ["a", "b"]
    assert all(d.superseded == [] for d in w.documents)


def test_same_id_twice_keeps_latest_and_supersedes_earlier():
    first, second = doc("a", 0, "old"), doc("a", 1, "new")
    w = collapse([first, second])
    assert w.documents == [second]
    assert offsets(second.superseded) == [0]


def test_three_versions_chain_into_the_latest():
    v1, v2, v3 = doc("a", 0, "1"), doc("a", 1, "2"), doc("a", 2, "3")
    w = collapse([v1, v2, v3])
    assert w.documents == [v3]
    assert sorted(offsets(v3.superseded)) == [0, 1]
    assert v2.superseded == [], "positions move to the latest, not duplicated on the dropped one"


def test_delete_after_document_keeps_the_delete():
    d, x = doc("a", 0), delete("a", 1)
    w = collapse([d, x])
    assert w.documents == []
    assert w.deletes == [x]
    assert offsets(x.superseded) == [0]


def test_document_after_delete_keeps_the_document():
    x, d = delete("a", 0), doc("a", 1)
    w = collapse([x, d])
    assert w.deletes == []
    assert w.documents == [d]
    assert offsets(d.superseded) == [0]


def test_rejected_never_collapse():
    r1, r2 = rejected(0), rejected(1)
    w = collapse([r1, doc("a", 2), r2])
    assert w.rejected == [r1, r2]
    assert r1.superseded == [] and r2.superseded == []


def test_results_follow_latest_occurrence_order():
    items = [doc("a", 0), doc("b", 1), doc("c", 2), doc("a", 3), delete("d", 4), delete("e", 5), delete("d", 6)]
    w = collapse(items)
    assert [d.id for d in w.documents] == ["b", "c", "a"]
    assert [d.id for d in w.deletes] == ["e", "d"]


def test_every_input_position_is_accounted_for_once():
    items = [doc("a", 0), doc("b", 1), doc("a", 2), delete("b", 3), rejected(4), doc("a", 5), doc("c", 6)]
    w = collapse(items)
    kept = w.documents + w.deletes + w.rejected
    all_positions = [i.position.offset for i in kept] + [o for i in kept for o in offsets(i.superseded)]
    assert sorted(all_positions) == list(range(7))


def test_empty_collapse():
    w = collapse([])
    assert (w.documents, w.deletes, w.rejected) == ([], [], [])


# -- group_texts / cut_work ------------------------------------------------------------------------


def tokens_for(*docs: Document, n: int = 5) -> dict[str, tuple[int, bool]]:
    return {d.text_sha256: (n, False) for d in docs}


def cut(window: Window, tokens: dict[str, tuple[int, bool]], limits: BatchLimits,
        cached: tuple[Unit, ...] = (), skipped: tuple[Document, ...] = ()) -> list[Work]:
    """The production path of `Pipeline._emit`: cached units and skipped documents (what the cache
    resolved), deletes and rejected records make up `ready`; the remaining units are cut."""
    ready = Work(units=list(cached), skipped=list(skipped), deletes=window.deletes, rejected=window.rejected)
    return cut_work(counted(group_texts(window.documents), tokens), ready, limits)


def counted(units: list[Unit], tokens: dict[str, tuple[int, bool]]) -> list[Unit]:
    """What the tokenizer fills in before the cut."""
    for u in units:
        u.tokens, u.truncated = tokens[u.text_sha256]
    return units


def cached_unit(d: Document) -> Unit:
    return Unit(d.text, d.text_sha256, [d], 5, False, vector=object(), from_cache=True)


def test_identical_texts_of_different_ids_share_one_unit():
    a, b, c = doc("a", 0, "same"), doc("b", 1, "same"), doc("c", 2, "other")
    units = group_texts([a, b, c])
    assert len(units) == 2
    same = next(u for u in units if u.text == "same")
    assert same.docs == [a, b]
    assert same.text_sha256 == a.text_sha256


def test_a_new_unit_waits_for_the_tokenizer_and_the_model():
    a = doc("a", 0, "x")
    (unit,) = group_texts([a])
    assert (unit.tokens, unit.truncated) == (0, False)
    assert unit.vector is None and unit.from_cache is False and unit.encoding is None


def test_identical_text_is_embedded_once():
    a, b = doc("a", 0, "same"), doc("b", 1, "same")
    works = cut(Window([a, b], [], []), tokens_for(a), BatchLimits(8, 1000))
    units = [u for w in works for u in w.units]
    assert len(units) == 1
    assert units[0].docs == [a, b]


def test_units_are_cut_under_limits():
    docs = [doc(str(i), i, f"text {i}") for i in range(10)]
    works = cut(Window(docs, [], []), tokens_for(*docs, n=10), BatchLimits(max_records=4, max_tokens=1000))
    assert [len(w.units) for w in works] == [4, 4, 2]
    assert sorted(d.id for w in works for u in w.units for d in u.docs) == sorted(d.id for d in docs)


def test_resolved_records_ride_in_the_first_work_only():
    docs = [doc(str(i), i, f"text {i}") for i in range(3)]
    hit, skip = doc("h", 8, "cached"), doc("s", 9, "unchanged")
    x, r = delete("z", 10), rejected(11)
    works = cut(Window(docs, [x], [r]), tokens_for(*docs), BatchLimits(max_records=1, max_tokens=1000),
                cached=(cached_unit(hit),), skipped=(skip,))
    assert len(works) == 3, "resolved records do not get a batch of their own"
    first = works[0]
    assert first.deletes == [x] and first.rejected == [r] and first.skipped == [skip]
    assert first.units[0].docs == [hit], "cached units come first in the first work"
    assert len(first.units) == 2 and first.units[1].vector is None
    assert all(w.deletes == [] and w.rejected == [] and w.skipped == [] for w in works[1:])
    assert all(len(w.units) == 1 and w.units[0].vector is None for w in works[1:])


def test_window_of_only_deletes_gives_one_work():
    x = delete("z", 0)
    works = cut(Window([], [x], []), {}, BatchLimits(4, 100))
    assert len(works) == 1
    assert works[0].units == [] and works[0].deletes == [x]


def test_window_of_only_rejected_gives_one_work():
    r = rejected(0)
    works = cut(Window([], [], [r]), {}, BatchLimits(4, 100))
    assert len(works) == 1 and works[0].rejected == [r]


def test_window_resolved_entirely_by_the_cache_gives_one_work():
    hit, skip = doc("h", 0, "cached"), doc("s", 1, "unchanged")
    works = cut(Window([], [], []), {}, BatchLimits(4, 100), cached=(cached_unit(hit),), skipped=(skip,))
    assert len(works) == 1
    assert [u.docs for u in works[0].units] == [[hit]] and works[0].skipped == [skip]


def test_window_of_only_unchanged_records_gives_one_work():
    skip = doc("s", 0, "unchanged")
    works = cut(Window([], [], []), {}, BatchLimits(4, 100), skipped=(skip,))
    assert len(works) == 1, "skipped records still need their offsets done"
    assert works[0].units == [] and works[0].skipped == [skip]


def test_empty_window_gives_no_work():
    assert cut(Window([], [], []), {}, BatchLimits(4, 100)) == []


def test_work_ids_list_docs_skipped_and_deletes():
    a, b = doc("a", 0, "same"), doc("b", 1, "same")
    s, x = doc("s", 2, "unchanged"), delete("z", 3)
    (work,) = cut(Window([a, b], [x], []), tokens_for(a), BatchLimits(8, 1000), skipped=(s,))
    assert sorted(work.ids()) == ["a", "b", "s", "z"]


def test_padded_tokens_counts_only_units_still_to_embed():
    a, b, c = doc("a", 0, "x"), doc("b", 1, "yy"), doc("c", 2, "zzz")
    toks = {a.text_sha256: (3, False), b.text_sha256: (9, False), c.text_sha256: (5, False)}
    (work,) = cut(Window([a, b, c], [], []), toks, BatchLimits(8, 1000))
    assert work.padded_tokens == 3 * 9
    next(u for u in work.units if u.tokens == 9).vector = object()  # cached
    assert work.padded_tokens == 2 * 5


# -- texts in flight -------------------------------------------------------------------------------


def _unit(text: str) -> Unit:
    return Unit(text, hashlib.sha256(text.encode()).hexdigest(), [])


def test_a_claimed_text_is_shared_until_its_owner_releases_it():
    shared = SharedTexts(capacity=10)
    owner = _unit("a")
    shared.claim([owner])
    later, other = _unit("a"), _unit("b")
    shared.share([later, other])
    assert later.shares is owner and other.shares is None
    assert not later.to_embed and other.to_embed
    shared.release([later])  # not the owner: nothing happens
    assert len(shared) == 1
    shared.release([owner])
    again = _unit("a")
    shared.share([again])
    assert again.shares is None and len(shared) == 0


def test_shared_texts_are_bounded():
    shared = SharedTexts(capacity=2)
    shared.claim([_unit(t) for t in "abcd"])
    assert len(shared) == 2
    beyond = _unit("d")
    shared.share([beyond])
    assert beyond.shares is None, "beyond the bound a text is embedded again"
