"""cut_batches (token-budget batching) and BatchWindow (when to cut)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import itertools

from ingestor.batcher import EXACT_CUT_MAX_ITEMS, BatchLimits, BatchWindow, cut_batches, cut_cost, padded_cost


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
@given(lengths=st.lists(st.integers(min_value=0, max_value=600), max_size=80),
       max_records=st.integers(min_value=1, max_value=40), max_tokens=st.integers(min_value=1, max_value=3000))
def test_cut_batches_invariants(lengths, max_records, max_tokens):
    check_batches(lengths, BatchLimits(max_records, max_tokens))


@settings(max_examples=200)
@given(lengths=st.lists(st.integers(min_value=1, max_value=600), min_size=1, max_size=80),
       max_records=st.integers(min_value=1, max_value=40), max_tokens=st.integers(min_value=1, max_value=3000))
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
    naive_cost = sum(padded_cost(lengths[i:i + n]) for i in range(0, len(lengths), n))
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
@given(lengths=st.lists(st.integers(min_value=1, max_value=300), min_size=1, max_size=8),
       max_records=st.integers(min_value=1, max_value=8), max_tokens=st.integers(min_value=1, max_value=1200),
       pass_cost=st.integers(min_value=1, max_value=500))
def test_exact_cut_is_the_cheapest_consecutive_split(lengths, max_records, max_tokens, pass_cost):
    limits = BatchLimits(max_records, max_tokens, pass_cost)
    assert cut_cost(check_batches(lengths, limits), pass_cost) == brute_force_cost(lengths, limits)


@settings(max_examples=200)
@given(lengths=st.lists(st.integers(min_value=0, max_value=600), max_size=EXACT_CUT_MAX_ITEMS + 40),
       max_records=st.integers(min_value=1, max_value=80), max_tokens=st.integers(min_value=1, max_value=5000),
       pass_cost=st.integers(min_value=1, max_value=2000))
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


def test_ready_when_tokens_reach_budget():
    w = window(max_tokens=100)
    w.add("a", 60, now_s=0.0)
    assert not w.ready(0.0)
    w.add("b", 40, now_s=0.0)
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
    w.add("a", 5, now_s=1.0)
    w.add("b", 5, now_s=2.0)
    assert w.ready(2.0)  # 10 tokens
    assert w.take() == ["a", "b"]
    assert len(w) == 0
    assert w.deadline() is None
    assert not w.ready(1e9)
    w.add("c", 5, now_s=100.0)
    assert not w.ready(100.0), "token count must restart from zero after take"
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
