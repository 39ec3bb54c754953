"""run_isolating: bisect a failing batch down to the items that fail alone."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingestor.isolate import run_isolating


class Poison(Exception):
    pass


class Outage(Exception):
    pass


class Recorder:
    """A batch call that fails if any poison item is in the batch; records every call."""

    def __init__(self, poison=()) -> None:
        self.poison = set(poison)
        self.calls: list[list[int]] = []

    def __call__(self, batch: list[int]) -> list[int]:
        self.calls.append(list(batch))
        bad = [i for i in batch if i in self.poison]
        if bad:
            raise Poison(f"poison {bad}")
        return [i * 10 for i in batch]


def splittable(exc: Exception) -> bool:
    return isinstance(exc, Poison)


def succeeded(out) -> list[int]:
    return [i for batch, _ in out.results for i in batch]


def test_no_failure_is_one_call():
    call = Recorder()
    out = run_isolating(list(range(16)), call, splittable)
    assert call.calls == [list(range(16))]
    assert out.results == [(list(range(16)), [i * 10 for i in range(16)])]
    assert out.failures == []


def test_empty_input_makes_no_call():
    call = Recorder()
    out = run_isolating([], call, splittable)
    assert call.calls == [] and out.results == [] and out.failures == []


def test_one_poison_among_16_is_isolated_in_log_calls():
    n = 16
    call = Recorder(poison={11})
    out = run_isolating(list(range(n)), call, splittable)
    assert [item for item, _ in out.failures] == [11]
    assert isinstance(out.failures[0][1], Poison)
    assert sorted(succeeded(out)) == [i for i in range(n) if i != 11]
    assert len(call.calls) <= 2 * math.log2(n) + 2


def test_result_is_paired_with_its_own_sub_batch():
    call = Recorder(poison={3})
    out = run_isolating(list(range(8)), call, splittable)
    for batch, result in out.results:
        assert result == [i * 10 for i in batch]


def test_single_poison_item_alone_fails():
    call = Recorder(poison={0})
    out = run_isolating([0], call, splittable)
    assert out.results == []
    assert [i for i, _ in out.failures] == [0]
    assert len(call.calls) == 1


def test_all_items_poison_all_fail():
    call = Recorder(poison=set(range(5)))
    out = run_isolating(list(range(5)), call, splittable)
    assert sorted(i for i, _ in out.failures) == list(range(5))
    assert out.results == []


def test_several_poison_items():
    poison = {0, 7, 8, 15}
    call = Recorder(poison=poison)
    out = run_isolating(list(range(16)), call, splittable)
    assert sorted(i for i, _ in out.failures) == sorted(poison)
    assert sorted(succeeded(out)) == sorted(set(range(16)) - poison)


def test_results_keep_input_order():
    call = Recorder(poison={2, 9})
    out = run_isolating(list(range(12)), call, splittable)
    assert succeeded(out) == [i for i in range(12) if i not in (2, 9)]
    assert [i for i, _ in out.failures] == [2, 9]


def test_non_splittable_error_propagates_without_bisecting():
    calls = []

    def call(batch):
        calls.append(batch)
        raise Outage("down")

    with pytest.raises(Outage):
        run_isolating(list(range(8)), call, splittable)
    assert len(calls) == 1


def test_non_splittable_error_in_a_half_propagates():
    calls = []

    def call(batch):
        calls.append(batch)
        if len(batch) == 8:
            raise Poison("split me")
        raise Outage("went down mid-bisection")

    with pytest.raises(Outage):
        run_isolating(list(range(8)), call, splittable)


def test_input_sequence_is_not_mutated():
    items = (1, 2, 3, 4)
    run_isolating(items, Recorder(poison={2}), splittable)
    assert items == (1, 2, 3, 4)


@settings(max_examples=300)
@given(n=st.integers(min_value=1, max_value=64), data=st.data())
def test_every_item_is_a_result_or_a_failure_exactly_once(n, data):
    poison = data.draw(st.sets(st.integers(min_value=0, max_value=n - 1), max_size=n))
    call = Recorder(poison=poison)
    out = run_isolating(list(range(n)), call, splittable)
    assert succeeded(out) == [i for i in range(n) if i not in poison]
    assert [i for i, _ in out.failures] == sorted(poison)
    if len(poison) == 1:
        assert len(call.calls) <= 2 * math.ceil(math.log2(n)) + 1
