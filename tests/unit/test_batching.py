"""cut_batches (token-budget batching) and BatchWindow (when to cut, its fill level in characters)."""

from __future__ import annotations

import hashlib
import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingestor.batching import (
    CHARS_PER_TOKEN,
    EXACT_CUT_MAX_ITEMS,
    BatchLimits,
    BatchWindow,
    collapse,
    cut_batches,
    group_texts,
    plan,
    window_chars,
)
from ingestor.records import Delete, Document, Position, RawRecord, Rejected, TopicPartition
from ingestor.work import Unit, Work


def padded_cost(lengths: list[int]) -> int:
    """Tokens a forward pass processes for these sequence lengths, padding included."""
    return len(lengths) * max(lengths, default=0)


def cut_cost(batches: list[list[int]], pass_cost: int) -> int:
    """What a cut costs: padded tokens plus `pass_cost` per forward pass (what `cut_batches` minimises
    when `pass_cost` is set)."""
    return sum(padded_cost(b) + pass_cost for b in batches)


def ident(n: int) -> int:
    return n


def check_batches(lengths: list[int], limits: BatchLimits) -> list[list[int]]:
    """Cut (index, length) pairs and check the documented invariants; returns batches of lengths."""
    items = list(enumerate(lengths))
    batches = cut_batches(items, lambda it: it[1], limits)
    seen = sorted(it[0] for b in batches for it in b)
    assert seen == list(range(len(lengths))), "every item exactly once"
    for b in batches:
        assert b, "no empty batch"
        assert len(b) <= limits.max_records
        if len(b) > 1:
            assert len(b) * max(it[1] for it in b) <= limits.max_tokens
    for it in items:
        if it[1] > limits.max_tokens:
            assert [b for b in batches if it in b][0] == [it], "oversize item alone"
    return [[it[1] for it in b] for b in batches]


def test_limits_must_be_positive():
    with pytest.raises(ValueError):
        BatchLimits(0, 10)
    with pytest.raises(ValueError):
        BatchLimits(10, 0)


def test_padded_cost_is_count_times_longest():
    assert padded_cost([3, 10, 5]) == 30
    assert padded_cost([]) == 0


def test_empty_input_gives_no_batches():
    assert cut_batches([], ident, BatchLimits(4, 100)) == []


def test_everything_fits_in_one_batch():
    assert check_batches([5, 3, 4], BatchLimits(8, 100)) == [[5, 4, 3]]


def test_max_records_caps_batch_size():
    batches = check_batches([1] * 10, BatchLimits(4, 1000))
    assert [len(b) for b in batches] == [4, 4, 2]


def test_token_budget_counts_padding_to_longest():
    # 10 + 1 + 1 is 12 tokens of text, but padded it is 3 x 10 = 30 > 25
    batches = check_batches([10, 1, 1], BatchLimits(10, 25))
    assert batches == [[10, 1], [1]]


def test_batch_of_exactly_the_budget_is_allowed():
    assert check_batches([5, 5, 5, 5], BatchLimits(10, 20)) == [[5, 5, 5, 5]]


def test_item_longer_than_budget_gets_its_own_batch():
    batches = check_batches([3, 50, 2, 40], BatchLimits(10, 30))
    assert [50] in batches and [40] in batches
    assert sorted(map(len, batches)) == [1, 1, 2]


def test_longest_items_come_first():
    batches = check_batches([1, 9, 5, 7], BatchLimits(2, 1000))
    assert batches == [[9, 7], [5, 1]]


@settings(max_examples=400)
@given(
    lengths=st.lists(st.integers(min_value=0, max_value=600), max_size=80),
    max_records=st.integers(min_value=1, max_value=40),
    max_tokens=st.integers(min_value=1, max_value=3000),
)
def test_cut_batches_invariants(lengths, max_records, max_tokens):
    check_batches(lengths, BatchLimits(max_records, max_tokens))


@settings(max_examples=200)
@given(
    lengths=st.lists(st.integers(min_value=1, max_value=600), min_size=1, max_size=80),
    max_records=st.integers(min_value=1, max_value=40),
    max_tokens=st.integers(min_value=1, max_value=3000),
)
def test_cut_batches_is_greedy(lengths, max_records, max_tokens):
    """A batch is closed only when the next (sorted) item would break a limit."""
    limits = BatchLimits(max_records, max_tokens)
    batches = check_batches(lengths, limits)
    for this, following in zip(batches, batches[1:]):
        grown = this + following[:1]
        assert len(grown) > max_records or len(grown) * max(grown) > max_tokens


def test_sorting_by_length_cuts_padding_versus_arrival_order():
    rng = random.Random(1234)
    lengths = [rng.choice([8, 12, 16, 300, 400, 512]) for _ in range(256)]
    limits = BatchLimits(max_records=32, max_tokens=32 * 512)
    sorted_cost = sum(padded_cost(b) for b in check_batches(lengths, limits))
    n = limits.max_records
    naive_cost = sum(padded_cost(lengths[i : i + n]) for i in range(0, len(lengths), n))
    assert sorted_cost <= naive_cost
    assert sorted_cost < 0.8 * naive_cost  # a real saving on a mixed workload, not a tie


# -- the exact cut (pass_cost > 0) ----------------------------------------------------------------


def brute_force_cost(lengths: list[int], limits: BatchLimits) -> int:
    """Least cut_cost over every way to split the sorted lengths into consecutive batches."""
    ordered = sorted(lengths, reverse=True)
    best = None
    for mask in itertools.product([False, True], repeat=max(0, len(ordered) - 1)):
        batches, current = [], [ordered[0]]
        for cut, n in zip(mask, ordered[1:]):
            if cut:
                batches.append(current)
                current = []
            current.append(n)
        batches.append(current)
        if all(len(b) <= limits.max_records and (len(b) == 1 or padded_cost(b) <= limits.max_tokens) for b in batches):
            cost = cut_cost(batches, limits.pass_cost)
            best = cost if best is None else min(best, cost)
    assert best is not None
    return best


def test_a_long_text_is_not_padded_onto_short_ones():
    # Greedy fills one pass: 4 x 256 = 1024 tokens. Exact: [256] + [20, 18, 16] = 256 + 60.
    greedy = check_batches([20, 256, 16, 18], BatchLimits(64, 4096))
    exact = check_batches([20, 256, 16, 18], BatchLimits(64, 4096, pass_cost=64))
    assert greedy == [[256, 20, 18, 16]]
    assert exact == [[256], [20, 18, 16]]


def test_a_high_pass_cost_keeps_one_pass():
    assert check_batches([20, 256, 16, 18], BatchLimits(64, 4096, pass_cost=5000)) == [[256, 20, 18, 16]]


@settings(max_examples=300)
@given(
    lengths=st.lists(st.integers(min_value=1, max_value=300), min_size=1, max_size=8),
    max_records=st.integers(min_value=1, max_value=8),
    max_tokens=st.integers(min_value=1, max_value=1200),
    pass_cost=st.integers(min_value=1, max_value=500),
)
def test_exact_cut_is_the_cheapest_consecutive_split(lengths, max_records, max_tokens, pass_cost):
    limits = BatchLimits(max_records, max_tokens, pass_cost)
    assert cut_cost(check_batches(lengths, limits), pass_cost) == brute_force_cost(lengths, limits)


@settings(max_examples=200)
@given(
    lengths=st.lists(st.integers(min_value=0, max_value=600), max_size=EXACT_CUT_MAX_ITEMS + 40),
    max_records=st.integers(min_value=1, max_value=80),
    max_tokens=st.integers(min_value=1, max_value=5000),
    pass_cost=st.integers(min_value=1, max_value=2000),
)
def test_exact_cut_keeps_the_invariants_and_never_costs_more_than_greedy(lengths, max_records, max_tokens, pass_cost):
    exact = check_batches(lengths, BatchLimits(max_records, max_tokens, pass_cost))
    greedy = check_batches(lengths, BatchLimits(max_records, max_tokens))
    assert cut_cost(exact, pass_cost) <= cut_cost(greedy, pass_cost)


def test_pass_cost_must_not_be_negative():
    with pytest.raises(ValueError):
        BatchLimits(4, 100, pass_cost=-1)


# -- BatchWindow ----------------------------------------------------------------------------------


def window(max_records=4, max_tokens=100, max_wait_ms=200, max_window_records=10) -> BatchWindow[str]:
    return BatchWindow(BatchLimits(max_records, max_tokens), max_wait_ms, max_window_records)


def test_empty_window_is_never_ready_and_has_no_deadline():
    w = window()
    assert not w.ready(1e9)
    assert w.deadline() is None
    assert len(w) == 0


def test_ready_when_max_records_waiting():
    w = window(max_records=3)
    for i in range(2):
        w.add(f"r{i}", 1, now_s=0.0)
    assert not w.ready(0.0)
    w.add("r2", 1, now_s=0.0)
    assert w.ready(0.0)


def test_ready_when_a_token_budgets_worth_of_characters_is_waiting():
    w = window(max_tokens=100)
    assert w.max_chars == 100 * CHARS_PER_TOKEN
    w.add("a", 240, now_s=0.0)
    assert not w.ready(0.0)
    w.add("b", 160, now_s=0.0)
    assert w.ready(0.0)


def test_a_records_fill_level_is_its_texts_characters():
    assert window_chars(doc("a", 0, "x" * 7)) == 7
    assert window_chars(delete("a", 1)) == 0 and window_chars(rejected(2)) == 0


def test_short_texts_fill_a_window_too():
    """Characters add up before they are turned into anything: texts shorter than one token's
    worth of characters still fill a window."""
    w = window(max_records=100, max_tokens=2)
    for i in range(CHARS_PER_TOKEN * 2 - 1):
        w.add(f"r{i}", window_chars(doc(f"r{i}", i, "x")), now_s=0.0)
        assert not w.ready(0.0)
    w.add("last", window_chars(doc("last", 99, "x")), now_s=0.0)
    assert w.ready(0.0)


def test_ready_when_oldest_waited_max_wait():
    # times exact in binary floating point, so the boundary itself is tested
    w = window(max_wait_ms=250)
    w.add("a", 1, now_s=10.0)
    w.add("b", 1, now_s=10.125)
    assert not w.ready(10.249)
    assert w.ready(10.25)


def test_deadline_is_oldest_arrival_plus_max_wait():
    w = window(max_wait_ms=250)
    w.add("a", 1, now_s=5.0)
    w.add("b", 1, now_s=6.0)
    assert w.deadline() == pytest.approx(5.25)


def test_zero_wait_is_ready_at_once():
    w = window(max_wait_ms=0)
    w.add("a", 1, now_s=3.0)
    assert w.ready(3.0)


def test_take_returns_arrival_order_and_resets():
    w = window(max_records=3, max_tokens=10)
    w.add("a", 20, now_s=1.0)
    w.add("b", 20, now_s=2.0)
    assert w.ready(2.0)  # 40 characters: 10 tokens' worth
    assert w.take() == ["a", "b"]
    assert len(w) == 0
    assert w.deadline() is None
    assert not w.ready(1e9)
    w.add("c", 20, now_s=100.0)
    assert not w.ready(100.0), "the fill level must restart from zero after take"
    assert w.deadline() == pytest.approx(100.2)


def test_full_at_max_window_records():
    w = window(max_records=2, max_window_records=3)
    for i in range(2):
        w.add(i, 1, now_s=0.0)
    assert not w.full()
    w.add(2, 1, now_s=0.0)
    assert w.full()


def test_window_never_smaller_than_one_batch():
    w = window(max_records=5, max_window_records=2)
    for i in range(4):
        w.add(i, 1, now_s=0.0)
    assert not w.full()
    w.add(4, 1, now_s=0.0)
    assert w.full()


# -- from a window to work: collapse, group, cut --------------------------------------------------

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


def cut(
    items: list,
    tokens: dict[str, tuple[int, bool]],
    limits: BatchLimits,
    cached: tuple[Document, ...] = (),
    skipped: tuple[Document, ...] = (),
) -> list[Work]:
    """`plan`, the pipeline's own composition, with a resolver standing in for the cache: the texts
    of `cached` documents have vectors, `skipped` documents are unchanged."""

    def resolve(units: list[Unit], ready: Work) -> list[Unit]:
        todo = []
        for u in units:
            ready.skipped += [d for d in u.docs if any(d is s for s in skipped)]
            u.docs = [d for d in u.docs if not any(d is s for s in skipped)]
            if not u.docs:
                continue
            if any(d is c for d in u.docs for c in cached):
                u.vector, u.from_cache = object(), True
                ready.units.append(u)
            else:
                todo.append(u)
        return todo

    return plan(items, limits, resolve, lambda units: counted(units, tokens))


def counted(units: list[Unit], tokens: dict[str, tuple[int, bool]]) -> list[Unit]:
    """What the tokenizer fills in before the cut."""
    for u in units:
        u.tokens, u.truncated = tokens[u.text_sha256]
    return units


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
    works = cut([a, b], tokens_for(a), BatchLimits(8, 1000))
    units = [u for w in works for u in w.units]
    assert len(units) == 1
    assert units[0].docs == [a, b]


def test_units_are_cut_under_limits():
    docs = [doc(str(i), i, f"text {i}") for i in range(10)]
    works = cut(docs, tokens_for(*docs, n=10), BatchLimits(max_records=4, max_tokens=1000))
    assert [len(w.units) for w in works] == [4, 4, 2]
    assert sorted(d.id for w in works for u in w.units for d in u.docs) == sorted(d.id for d in docs)


def test_resolved_records_ride_in_the_first_work_only():
    docs = [doc(str(i), i, f"text {i}") for i in range(3)]
    hit, skip = doc("h", 8, "cached"), doc("s", 9, "unchanged")
    x, r = delete("z", 10), rejected(11)
    works = cut(
        [hit, *docs, skip, x, r],
        tokens_for(*docs),
        BatchLimits(max_records=1, max_tokens=1000),
        cached=(hit,),
        skipped=(skip,),
    )
    assert len(works) == 3, "resolved records do not get a batch of their own"
    first = works[0]
    assert first.deletes == [x] and first.rejected == [r] and first.skipped == [skip]
    assert first.units[0].docs == [hit], "cached units come first in the first work"
    assert len(first.units) == 2 and first.units[1].vector is None
    assert all(w.deletes == [] and w.rejected == [] and w.skipped == [] for w in works[1:])
    assert all(len(w.units) == 1 and w.units[0].vector is None for w in works[1:])


def test_window_of_only_deletes_gives_one_work():
    x = delete("z", 0)
    works = cut([x], {}, BatchLimits(4, 100))
    assert len(works) == 1
    assert works[0].units == [] and works[0].deletes == [x]


def test_window_of_only_rejected_gives_one_work():
    r = rejected(0)
    works = cut([r], {}, BatchLimits(4, 100))
    assert len(works) == 1 and works[0].rejected == [r]


def test_window_resolved_entirely_by_the_cache_gives_one_work():
    hit, skip = doc("h", 0, "cached"), doc("s", 1, "unchanged")
    works = cut([hit, skip], {}, BatchLimits(4, 100), cached=(hit,), skipped=(skip,))
    assert len(works) == 1
    assert [u.docs for u in works[0].units] == [[hit]] and works[0].skipped == [skip]


def test_window_of_only_unchanged_records_gives_one_work():
    skip = doc("s", 0, "unchanged")
    works = cut([skip], {}, BatchLimits(4, 100), skipped=(skip,))
    assert len(works) == 1, "skipped records still need their offsets done"
    assert works[0].units == [] and works[0].skipped == [skip]


def test_empty_window_gives_no_work():
    assert cut([], {}, BatchLimits(4, 100)) == []


def test_work_ids_list_docs_skipped_and_deletes():
    a, b = doc("a", 0, "same"), doc("b", 1, "same")
    s, x = doc("s", 2, "unchanged"), delete("z", 3)
    (work,) = cut([a, b, s, x], tokens_for(a), BatchLimits(8, 1000), skipped=(s,))
    assert sorted(work.ids()) == ["a", "b", "s", "z"]


def test_padded_tokens_counts_only_units_still_to_embed():
    a, b, c = doc("a", 0, "x"), doc("b", 1, "yy"), doc("c", 2, "zzz")
    toks = {a.text_sha256: (3, False), b.text_sha256: (9, False), c.text_sha256: (5, False)}
    (work,) = cut([a, b, c], toks, BatchLimits(8, 1000))
    assert work.padded_tokens == 3 * 9
    next(u for u in work.units if u.tokens == 9).vector = object()  # cached
    assert work.padded_tokens == 2 * 5


def test_a_ready_window_is_cut_when_nothing_more_waits_or_it_is_full_and_any_window_on_a_flush():
    w = window(max_records=2, max_window_records=4)
    assert not w.cut_now(0.0, more_waiting=False, flushing=True), "an empty window is never cut"
    w.add("r0", 1, now_s=0.0)
    assert not w.cut_now(0.0, more_waiting=False), "not ready: one record, no wait spent"
    assert w.cut_now(0.0, more_waiting=True, flushing=True), "a flush cuts what it holds"
    w.add("r1", 1, now_s=0.0)
    assert w.cut_now(0.0, more_waiting=False)
    assert not w.cut_now(0.0, more_waiting=True), "ready, but more records wait to join"
    for i in range(2, 4):
        w.add(f"r{i}", 1, now_s=0.0)
    assert w.cut_now(0.0, more_waiting=True), "full: nothing more can join"


def test_records_of_partitions_no_longer_ours_are_dropped_and_counted_in_the_first_work():
    kept, gone = doc("k", 0, "kept"), doc("g", 1, "gone")
    works = plan([kept, gone], BatchLimits(4, 100), tokenize=lambda units: None, current=lambda item: item is kept)
    assert [d for w in works for u in w.units for d in u.docs] == [kept]
    assert works[0].dropped == 1 and all(w.dropped == 0 for w in works[1:])
    [only] = plan([gone], BatchLimits(4, 100), current=lambda item: False)
    assert only.dropped == 1 and not only.units, "a window of dropped records still reaches the writer"
