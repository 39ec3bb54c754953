"""bench.memory: the flat-memory verdict of the bench's steady run, on made-up samples, and the
gauges on this process."""

from __future__ import annotations

import time
import tracemalloc

import pytest

from bench.memory import MemorySampler, heap_in_use_mib, series_summary


def test_flat_after_warmup_has_zero_slope_whatever_the_warmup_did():
    samples = [(0, 100.0), (10, 900.0)] + [(t, 1000.0) for t in range(20, 601, 10)]
    m = series_summary(samples, 0.2)
    assert m["slope_mib_per_min"] == 0
    assert m["after_warmup_mib"] == 1000.0 and m["max_mib"] == 1000.0 and m["start_mib"] == 100.0
    assert (m["min_after_warmup_mib"], m["max_after_warmup_mib"]) == (1000.0, 1000.0)
    assert len(m["series"]) == len(samples)


def test_a_bulge_after_warmup_shows_in_the_range():
    samples = [(float(t), 1000.0 + (200.0 if 300 <= t < 400 else 0.0)) for t in range(0, 601, 10)]
    m = series_summary(samples, 0.2)
    assert (m["min_after_warmup_mib"], m["max_after_warmup_mib"]) == (1000.0, 1200.0)


def test_a_leak_shows_as_its_slope():
    samples = [(float(t), 1000.0 + t / 60.0 * 3.0) for t in range(0, 601, 10)]  # 3 MiB a minute
    assert series_summary(samples, 0.2)["slope_mib_per_min"] == pytest.approx(3.0, abs=0.01)


def test_too_few_samples_give_no_verdict():
    assert "slope_mib_per_min" not in series_summary([(0, 1.0), (1, 2.0)], 0.2)


def test_it_samples_this_process_without_tracing_by_default():
    with MemorySampler(interval_s=0.01) as s:
        pass
    assert s.samples["rss"] and s.samples["rss"][-1][1] > 10  # a Python process holds more than 10 MiB
    assert s.samples["python"] == []
    assert not tracemalloc.is_tracing()


@pytest.mark.skipif(heap_in_use_mib() is None, reason="no glibc mallinfo2 here")
def test_the_heap_gauge_sees_a_large_allocation():
    before = heap_in_use_mib()
    block = bytearray(64 << 20)  # 64 MiB: malloc mmaps it
    grown = heap_in_use_mib() - before
    del block
    assert 60 <= grown <= 70


def test_tracing_names_the_line_that_grew():
    hoard: list[bytes] = []
    with MemorySampler(interval_s=0.02, trace_python=True, expected_s=0.2) as s:
        deadline = time.monotonic() + 5
        while not s._snapshots and time.monotonic() < deadline:  # the after-warm-up snapshot
            time.sleep(0.01)
        hoard.extend(bytes(4096) + bytes([i % 256]) for i in range(2000))  # ~8 MiB kept
    assert not tracemalloc.is_tracing()
    growth = s.summary()["python_growth"]
    assert growth and growth[0]["where"].endswith(f"test_memory.py:{_line_of('hoard.extend')}")
    assert growth[0]["grew_kib"] > 7000
    assert s.samples["python"][-1][1] - s.samples["python"][0][1] > 7


def _line_of(snippet: str) -> int:
    from pathlib import Path

    lines = Path(__file__).read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if snippet in line and "_line_of" not in line)


def test_the_children_gauge_counts_a_live_child_and_not_a_finished_one():
    import subprocess
    import sys

    from bench.memory import children_rss_mib

    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while (children_rss_mib() or 0) < 5 and time.monotonic() < deadline:  # a Python holds > 5 MiB
            time.sleep(0.05)
        assert (children_rss_mib() or 0) >= 5
    finally:
        child.communicate(b"")
    assert children_rss_mib() is None
