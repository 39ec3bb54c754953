"""Memory gauges for the bench's steady run: is the resident memory flat, and if it is not, who grows?

Four gauges, sampled together on a thread:

  rss     the process's resident set (what the kernel charges; what the 2.5 GB target is about)
  heap    bytes glibc's malloc has handed out and not taken back (`mallinfo2`: in-use chunks of
          every arena plus mmapped blocks). torch's CPU tensors, tokenizers' buffers and Python's
          large objects all come from here. If RSS climbs while this stays flat, the allocator is
          holding freed pages (fragmentation), not the program leaking.
  children the resident memory of child processes (the Milvus Lite server: a database whose
          memory grows with the rows it holds, which is why it is kept apart from the worker's)
  python  bytes Python objects hold, by `tracemalloc` (only when asked: tracing slows Python down).
          With it, the sampler also snapshots the heap after warm-up and at the end, and names the
          source lines whose allocations grew most between the two.
"""

from __future__ import annotations

import ctypes
import os
import resource
import threading
import time
import tracemalloc
from typing import Any

MIB = float(1 << 20)


def peak_rss_mib() -> dict[str, float]:
    """Peak resident memory of this process (Linux reports KiB). Not its children's: the kernel's
    figure for them starts at the parent's size when forked, before they exec; their own memory
    is the `children` gauge's."""
    return {"self": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)}


def current_rss_mib() -> float | None:
    """This process's resident memory now (Linux), or None where /proc is not there."""
    return _rss_mib("self")


def _rss_mib(pid: str) -> float | None:
    """Resident memory of a process now, from /proc (None if it is not there, or gone)."""
    try:
        with open(f"/proc/{pid}/statm", encoding="ascii") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / MIB


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _load_mallinfo2() -> Any:
    try:
        fn = ctypes.CDLL(None).mallinfo2  # glibc >= 2.33; musl and macOS have none
    except (OSError, AttributeError):
        return None
    fn.restype = _Mallinfo2
    fn.argtypes = []
    return fn


_MALLINFO2 = _load_mallinfo2()


def heap_in_use_mib() -> float | None:
    """Bytes malloc has handed out and not had back, over all arenas, or None without glibc."""
    if _MALLINFO2 is None:
        return None
    info = _MALLINFO2()
    return (info.uordblks + info.hblkhd) / MIB


def python_traced_mib() -> float | None:
    """Bytes held by Python objects, while tracemalloc traces; else None."""
    return tracemalloc.get_traced_memory()[0] / MIB if tracemalloc.is_tracing() else None


def child_pids() -> set[int] | None:
    """This process's live children (Linux), or None where /proc cannot say."""
    try:
        return {
            int(p)
            for task in os.listdir("/proc/self/task")
            for p in open(f"/proc/self/task/{task}/children", encoding="ascii").read().split()
        }
    except (OSError, ValueError):
        return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process so far, from /proc (None if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def children_rss_mib() -> float | None:
    """Resident memory of this process's live children (the Milvus Lite server, by default), or
    None where /proc is not there or there are none."""
    pids = child_pids()
    if pids is None:
        return None
    sizes = [m for m in (_rss_mib(str(pid)) for pid in pids) if m is not None]  # some may have exited
    return sum(sizes) if sizes else None


GAUGES = {"rss": current_rss_mib, "heap": heap_in_use_mib, "python": python_traced_mib, "children": children_rss_mib}


def series_summary(samples: list[tuple[float, float]], warmup_share: float) -> dict[str, Any]:
    """Flat or not, after warm-up (the first `warmup_share` of the run): the range, and the
    least-squares slope (a leak is a steady slope; an allocator that breathes shows in the range)."""
    if len(samples) < 4:
        return {"samples": len(samples)}
    end = samples[-1][0]
    steady = [(t, m) for t, m in samples if t >= warmup_share * end]
    ts = [t for t, _ in steady]
    ms = [m for _, m in steady]
    mean_t, mean_m = sum(ts) / len(ts), sum(ms) / len(ms)
    var = sum((t - mean_t) ** 2 for t in ts)
    slope = sum((t - mean_t) * (m - mean_m) for t, m in steady) / var if var else 0.0
    return {
        "samples": len(samples),
        "seconds": round(end, 1),
        "start_mib": round(samples[0][1], 1),
        "after_warmup_mib": round(ms[0], 1),
        "end_mib": round(ms[-1], 1),
        "max_mib": round(max(m for _, m in samples), 1),
        "min_after_warmup_mib": round(min(ms), 1),
        "max_after_warmup_mib": round(max(ms), 1),
        "slope_mib_per_min": round(slope * 60, 2),
        "series": [[round(t, 1), round(m, 1)] for t, m in samples],
    }


def top_growth(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, limit: int = 10) -> list[dict[str, Any]]:
    """The source lines whose live allocations grew most from `before` to `after`."""
    stats = after.compare_to(before, "lineno")
    grown = sorted((s for s in stats if s.size_diff > 0), key=lambda s: s.size_diff, reverse=True)[:limit]
    return [
        {
            "where": f"{s.traceback[0].filename}:{s.traceback[0].lineno}",
            "grew_kib": round(s.size_diff / 1024, 1),
            "blocks_grew": s.count_diff,
            "now_kib": round(s.size / 1024, 1),
        }
        for s in grown
    ]


class MemorySampler:
    """Samples every gauge every `interval_s` on a thread, from `__enter__` to `__exit__`.

    `trace_python` starts tracemalloc for the run (and stops it after, if it started it);
    `expected_s`, the planned length, says when warm-up ends for the first heap snapshot."""

    def __init__(
        self,
        interval_s: float = 5.0,
        warmup_share: float = 0.2,
        trace_python: bool = False,
        expected_s: float | None = None,
    ) -> None:
        self.interval_s = interval_s
        self.warmup_share = warmup_share
        self.trace_python = trace_python
        self.expected_s = expected_s
        self.samples: dict[str, list[tuple[float, float]]] = {name: [] for name in GAUGES}
        self._snapshots: list[tracemalloc.Snapshot] = []
        self._started_tracing = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-memory", daemon=True)

    def __enter__(self) -> MemorySampler:
        if self.trace_python and not tracemalloc.is_tracing():
            tracemalloc.start(1)
            self._started_tracing = True
        self._t0 = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sample()
        if tracemalloc.is_tracing() and self.trace_python:
            self._snapshots.append(_snapshot())
            if self._started_tracing:
                tracemalloc.stop()

    def _sample(self) -> None:
        t = time.monotonic() - self._t0
        for name, gauge in GAUGES.items():
            value = gauge()
            if value is not None:
                self.samples[name].append((t, value))

    def _run(self) -> None:
        warmup_at = self.warmup_share * self.expected_s if self.expected_s else None
        while True:
            self._sample()
            if (
                warmup_at is not None
                and not self._snapshots
                and self.trace_python
                and tracemalloc.is_tracing()
                and time.monotonic() - self._t0 >= warmup_at
            ):
                self._snapshots.append(_snapshot())
            if self._stop.wait(self.interval_s):
                return

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {name: series_summary(s, self.warmup_share) for name, s in self.samples.items() if s}
        if len(self._snapshots) == 2:
            out["python_growth"] = top_growth(*self._snapshots)
        return out


def _snapshot() -> tracemalloc.Snapshot:
    # tracemalloc's own bookkeeping is not the program's memory.
    return tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
