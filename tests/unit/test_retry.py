"""Backoff.delay_s: geometric growth, a cap, bounded jitter."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingestor.retry import Backoff


class Fixed(random.Random):
    """uniform() always returns one end of the range (or the middle)."""

    def __init__(self, where: str) -> None:
        super().__init__(0)
        self.where = where

    def uniform(self, a: float, b: float) -> float:
        return {"low": a, "mid": (a + b) / 2, "high": b}[self.where]


def test_attempt_zero_is_initial_without_jitter():
    assert Backoff(initial_ms=200, jitter=0.0).delay_s(0) == pytest.approx(0.2)


def test_attempt_zero_is_near_initial_with_jitter():
    b = Backoff(initial_ms=200, jitter=0.2)
    for seed in range(50):
        assert 0.16 <= b.delay_s(0, random.Random(seed)) <= 0.24


def test_negative_attempt_counts_as_zero():
    assert Backoff(initial_ms=200, jitter=0.0).delay_s(-3) == pytest.approx(0.2)


def test_grows_geometrically_without_jitter():
    b = Backoff(initial_ms=100, max_ms=1_000_000, multiplier=3.0, jitter=0.0)
    assert [b.delay_s(i) for i in range(4)] == pytest.approx([0.1, 0.3, 0.9, 2.7])


def test_capped_at_max():
    b = Backoff(initial_ms=200, max_ms=30_000, multiplier=2.0, jitter=0.0)
    assert b.delay_s(7) == pytest.approx(25.6)
    assert b.delay_s(8) == pytest.approx(30.0)
    assert b.delay_s(50) == pytest.approx(30.0)


def test_jitter_bounds_are_plus_minus_fraction_of_base():
    b = Backoff(initial_ms=1000, max_ms=10_000, jitter=0.25)
    assert b.delay_s(0, Fixed("low")) == pytest.approx(0.75)
    assert b.delay_s(0, Fixed("high")) == pytest.approx(1.25)
    assert b.delay_s(20, Fixed("high")) == pytest.approx(12.5)  # jitter applies around the cap


def test_seeded_rng_is_reproducible():
    b = Backoff()
    assert [b.delay_s(i, random.Random(7)) for i in range(6)] == [b.delay_s(i, random.Random(7)) for i in range(6)]


def test_jitter_actually_spreads_delays():
    b = Backoff(jitter=0.2)
    rng = random.Random(42)
    assert len({b.delay_s(3, rng) for _ in range(20)}) > 1


@given(
    attempt=st.integers(min_value=0, max_value=60),
    seed=st.integers(min_value=0, max_value=2**32),
    jitter=st.floats(min_value=0.0, max_value=1.0),
)
def test_delay_within_jittered_band_of_capped_base(attempt, seed, jitter):
    b = Backoff(initial_ms=200, max_ms=30_000, multiplier=2.0, jitter=jitter)
    base_s = min(30_000, 200 * 2.0**attempt) / 1000.0
    delay = b.delay_s(attempt, random.Random(seed))
    assert delay >= 0.0
    assert base_s * (1 - jitter) - 1e-9 <= delay <= base_s * (1 + jitter) + 1e-9


@pytest.mark.parametrize("attempt", [1_100, 10_000, 10**9])
def test_very_late_attempts_stay_at_the_cap(attempt):
    # The retry loops in retry.Retrier / Daemon.until_up count attempts without bound; at the
    # cap (30 s) attempt 1024 arrives after about 8.5 hours of a dependency outage.
    b = Backoff(initial_ms=200, max_ms=30_000, multiplier=2.0, jitter=0.0)
    assert b.delay_s(attempt) == pytest.approx(30.0)
