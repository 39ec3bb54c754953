"""RssSampler.summary: the flat-memory verdict of the bench's steady run, on made-up samples."""

from __future__ import annotations

import pytest

from ingestor.bench import RssSampler


def sampler(samples: list[tuple[float, float]]) -> RssSampler:
    s = RssSampler()
    s.samples = samples
    return s


def test_flat_after_warmup_has_zero_slope_whatever_the_warmup_did():
    samples = [(0, 100.0), (10, 900.0)] + [(t, 1000.0) for t in range(20, 601, 10)]
    m = sampler(samples).summary()
    assert m["slope_mib_per_min"] == 0
    assert m["after_warmup_mib"] == 1000.0 and m["max_mib"] == 1000.0 and m["start_mib"] == 100.0
    assert (m["min_after_warmup_mib"], m["max_after_warmup_mib"]) == (1000.0, 1000.0)
    assert len(m["series"]) == len(samples)


def test_a_bulge_after_warmup_shows_in_the_range():
    samples = [(float(t), 1000.0 + (200.0 if 300 <= t < 400 else 0.0)) for t in range(0, 601, 10)]
    m = sampler(samples).summary()
    assert (m["min_after_warmup_mib"], m["max_after_warmup_mib"]) == (1000.0, 1200.0)


def test_a_leak_shows_as_its_slope():
    samples = [(float(t), 1000.0 + t / 60.0 * 3.0) for t in range(0, 601, 10)]  # 3 MiB a minute
    assert sampler(samples).summary()["slope_mib_per_min"] == pytest.approx(3.0, abs=0.01)


def test_too_few_samples_give_no_verdict():
    assert "slope_mib_per_min" not in sampler([(0, 1.0), (1, 2.0)]).summary()


def test_it_samples_this_process():
    with RssSampler(interval_s=0.01) as s:
        pass
    assert s.samples and s.samples[-1][1] > 10  # a Python process holds more than 10 MiB
