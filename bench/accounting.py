"""What a benchmark variant cost: rates, percentiles, the metrics it moved, and the CPU this
process, its children and everything else on the machine used meanwhile (from /proc)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.memory import child_pids, cpu_seconds


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return float(ordered[rank - 1])


def rate(count: float, seconds: float | None) -> float | None:
    return count / seconds if seconds and seconds > 0 else None


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def metrics_snapshot() -> dict[str, float]:
    from ingestor import metrics as m

    records = m.RECORDS.totals()
    stages = {f"stage_{s}_s": float(m.STAGE_CPU.labels(s)._value.get()) for s in m.STAGES}
    return {
        **stages,
        "consumed": records["consumed"],
        "embedded": m.total(m.RECORDS_EMBEDDED),
        "cache_hits": m.total(m.RECORDS_CACHE_HIT),
        "skipped": records["skipped"],
        "upserted": records["upserted"],
        "dead_lettered": records["dead_lettered"],
        "superseded": records["superseded"],
        "dropped": records["dropped"],
        "forward_passes": m.total(m.EMBED_SECONDS, "_count"),
        "embed_s": m.total(m.EMBED_SECONDS, "_sum"),
        "padded_tokens": m.total(m.BATCH_TOKENS, "_sum"),
        "batch_texts": m.total(m.BATCH_RECORDS, "_sum"),
        "milvus_write_s": m.total(m.WRITE_SECONDS, "_sum"),
        "milvus_writes": m.total(m.WRITE_SECONDS, "_count"),
        "redis_s": m.total(m.CACHE_SECONDS, "_sum"),
        "prepare_s": m.total(m.PREPARE_SECONDS, "_sum"),
    }


def metrics_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: round(after[k] - before[k], 4) for k in before}


def stage_cpu_us(counts: dict[str, float], cpu_s: float, records: int) -> dict[str, float]:
    """µs of CPU per record in each pipeline stage (`ingestor_stage_cpu_seconds_total`), and
    `other`: the rest of `cpu_s` (the Kafka client's and gRPC's own threads, waiting loops)."""
    from ingestor import metrics as m

    out = {s: round(1e6 * counts.get(f"stage_{s}_s", 0.0) / records, 1) for s in m.STAGES}
    out["other"] = round(1e6 * cpu_s / records - sum(out.values()), 1)
    return out


def with_cpu(run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Adds, over the whole call (set-up included): `cpu_s`, the CPU seconds of this process (all
    threads); `children_cpu_s`, those of its child processes (the Milvus Lite server); and
    `others_cpu_share`, the share of the machine's CPU time that other processes used meanwhile
    (Linux; a benchmark on a busy machine is noisy, and this says how busy)."""
    wall0, own0, busy0, kids0 = time.perf_counter(), time.process_time(), _busy_cpu_s(), _children_cpu_s()
    out = run()
    wall, own, busy = time.perf_counter() - wall0, time.process_time() - own0, _busy_cpu_s()
    kids = _children_cpu_s() - kids0
    out["cpu_s"] = round(own, 3)
    out["children_cpu_s"] = round(kids, 3)
    if busy is not None and busy0 is not None and wall > 0:
        out["others_cpu_share"] = round(max(0.0, (busy - busy0) - own - kids) / (wall * (os.cpu_count() or 1)), 3)
    return out


def _children_cpu_s() -> float:
    """CPU seconds of this process's children so far: the finished ones it waited for, and the
    live ones (from /proc; Linux)."""
    t = os.times()
    live = (cpu_seconds(pid) for pid in child_pids() or ())
    return t.children_user + t.children_system + sum(s for s in live if s is not None)


def _busy_cpu_s() -> float | None:
    """CPU seconds all processes spent so far (from /proc/stat), or None off Linux."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "cpu"
