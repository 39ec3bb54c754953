"""Prometheus metrics, all prefixed `ingestor_`. Defined once here; modules import what they count.

Every consumed record ends in exactly one outcome, and the record counters add up at every scrape:

    consumed = upserted + skipped + deleted + dead_lettered + superseded + dropped + in_flight

`RECORDS` keeps them under one lock and exports them together, so no scrape sees a record counted
consumed and not yet in flight, or in flight and already settled.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_TOKEN_BUCKETS = (64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)

RECORDS_EMBEDDED = Counter(
    "ingestor_records_embedded_total",
    "Distinct texts run through the model (a text shared by several records counts once; with chunking, chunks)",
)
RECORDS_CACHE_HIT = Counter(
    "ingestor_records_cache_hit_total", "Records whose vector came from the Redis cache (with chunking, chunks)"
)
CHUNKS_UPSERTED = Counter(
    "ingestor_chunks_upserted_total",
    "Chunk entities written to Milvus (chunking on; a record counts as upserted once all of its chunks are)",
)
RECORDS_TRUNCATED = Counter("ingestor_records_truncated_total", "Texts cut at the model's maximum sequence length")
PARTITIONS_PAUSED = Gauge("ingestor_partitions_paused", "Partitions paused by backpressure or a retry")
PARTITIONS_ASSIGNED = Gauge("ingestor_partitions_assigned", "Partitions owned by this worker")
PARTITIONS_BLOCKED = Gauge(
    "ingestor_partitions_blocked",
    "Partitions paused because their next batch cannot be decoded (retried, never skipped)",
    ["reason"],
)
UNDECODABLE_BATCHES = Counter(
    "ingestor_undecodable_batches_total", "Fetched batches that could not be decoded, per attempt", ["reason"]
)
CONSUMER_LAG = Gauge(
    "ingestor_consumer_lag_records",
    "End offset (the last stable offset under read_committed) minus committed offset",
    ["topic", "partition"],
)
BATCH_RECORDS = Histogram("ingestor_batch_records", "Texts per forward pass", buckets=_SIZE_BUCKETS)
BATCH_TOKENS = Histogram("ingestor_batch_tokens", "Padded tokens per forward pass", buckets=_TOKEN_BUCKETS)
PREPARE_SECONDS = Histogram(
    "ingestor_prepare_duration_seconds",
    "Batcher time per window: cache lookup, tokenising and padding",
    buckets=_LATENCY_BUCKETS,
)
EMBED_SECONDS = Histogram("ingestor_embed_duration_seconds", "Forward pass time", buckets=_LATENCY_BUCKETS)
CACHE_SECONDS = Histogram("ingestor_cache_duration_seconds", "Redis round trip time", ["op"], buckets=_LATENCY_BUCKETS)
WRITE_SECONDS = Histogram("ingestor_write_duration_seconds", "Milvus write time", ["op"], buckets=_LATENCY_BUCKETS)
TIME_TO_SEARCHABLE = Histogram(
    "ingestor_time_to_searchable_seconds",
    "From the Kafka record timestamp to the acknowledged Milvus write",
    buckets=_LATENCY_BUCKETS,
)
RETRIES = Counter("ingestor_retries_total", "Retried operations after a retriable failure", ["dependency"])
DEPENDENCY_ERRORS = Counter(
    "ingestor_dependency_errors_total", "Errors talking to a dependency", ["dependency", "kind"]
)
COMMITS = Counter("ingestor_offset_commits_total", "Offset commits", ["result"])
STAGE_CPU = Counter(
    "ingestor_stage_cpu_seconds_total",
    "CPU time the pipeline's threads spent in each stage (poll, parse, plan, resolve, collate, embed, write, "
    "cache, commit); a stage inside another is charged to itself only",
    ["stage"],
)
WORKER_RESTARTS = Counter(
    "ingestor_worker_restarts_total",
    "Restarts of this worker's slot by its supervisor (handed down to each new worker process)",
)

# The query side (`ingestor serve`).
SERVE_REQUESTS = Counter(
    "ingestor_serve_requests_total",
    "Requests answered by `ingestor serve`, by endpoint and status code",
    ["endpoint", "code"],
)
SERVE_SECONDS = Histogram(
    "ingestor_serve_request_duration_seconds", "Time to answer a request", ["endpoint"], buckets=_LATENCY_BUCKETS
)
SERVE_QUEUED_TOKENS = Gauge(
    "ingestor_serve_queued_tokens", "Tokens of query texts admitted and not yet embedded (what admission bounds)"
)
SERVE_QUEUED_TEXTS = Gauge("ingestor_serve_queued_texts", "Query texts admitted and not yet embedded")
SERVE_TEXTS = Counter(
    "ingestor_serve_texts_total", "Query texts embedded, by where the vector came from (model, cache)", ["source"]
)
SERVE_TRUNCATED = Counter(
    "ingestor_serve_texts_truncated_total", "Query texts cut at the model's maximum sequence length"
)


# Where a consumed record can end; each one ends in exactly one of these.
OUTCOMES: dict[str, str] = {
    "upserted": "Records written to Milvus",
    "skipped": "Records skipped as unchanged (no embed, no write)",
    "deleted": "Tombstones applied to Milvus",
    "dead_lettered": "Records sent to the dead-letter topic",
    "superseded": "Records replaced by a later record of the same id before they were written (their offsets "
    "are done with it)",
    "dropped": "Records dropped because their partition was revoked (the new owner replays them)",
}


class RecordLedger:
    """Consumed records and their outcomes, counted under one lock and collected together."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._consumed = 0
        self._settled = dict.fromkeys(OUTCOMES, 0)
        self._dead_lettered: dict[str, int] = {}  # by reason

    def consumed(self, n: int) -> None:
        with self._lock:
            self._consumed += n

    def settled(self, outcome: str, n: int = 1) -> None:
        """`n` records reached `outcome` (dead letters: `dead_lettered`, which carries a reason)."""
        if outcome not in OUTCOMES or outcome == "dead_lettered":
            raise ValueError(f"not an outcome: {outcome}")
        if n:
            with self._lock:
                self._settled[outcome] += n

    def dead_lettered(self, reason: str, n: int = 1) -> None:
        with self._lock:
            self._settled["dead_lettered"] += n
            self._dead_lettered[reason] = self._dead_lettered.get(reason, 0) + n

    def totals(self) -> dict[str, int]:
        """consumed, every outcome, and in_flight (consumed and not yet settled), one snapshot."""
        with self._lock:
            out = {"consumed": self._consumed, **self._settled}
        out["in_flight"] = out["consumed"] - sum(out[k] for k in OUTCOMES)
        return out

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            consumed, settled, letters = self._consumed, dict(self._settled), dict(self._dead_lettered)
        yield _counter("consumed", "Records read from Kafka", consumed)
        for outcome, help_text in OUTCOMES.items():
            if outcome == "dead_lettered":
                family = CounterMetricFamily("ingestor_records_dead_lettered", help_text, labels=["reason"])
                for reason, n in sorted(letters.items()):
                    family.add_metric([reason], n)
                yield family
            else:
                yield _counter(outcome, help_text, settled[outcome])
        yield GaugeMetricFamily(
            "ingestor_records_in_flight",
            "Records consumed and not yet at an outcome",
            value=consumed - sum(settled.values()),
        )


def _counter(name: str, help_text: str, value: int) -> CounterMetricFamily:
    return CounterMetricFamily(f"ingestor_records_{name}", help_text, value=value)


RECORDS = RecordLedger()
REGISTRY.register(RECORDS)

# "columns" and "upsert" are parts of "write": packing the columns, and pymilvus serialising and sending them.
STAGES = ("poll", "parse", "plan", "resolve", "collate", "embed", "write", "columns", "upsert", "cache", "commit")
_STAGE_CHILDREN = {name: STAGE_CPU.labels(name) for name in STAGES}


@dataclass(slots=True)
class _Frame:
    stage: str
    since: float  # thread CPU seconds when it was last charged


_frames = threading.local()


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Charge this thread's CPU time to `name` while inside, and to the enclosing stage before and
    after: per window or batch, never per record (a clock read costs about a microsecond)."""
    stack: list[_Frame] = _frames.__dict__.setdefault("stack", [])
    now = time.thread_time()
    if stack:
        _STAGE_CHILDREN[stack[-1].stage].inc(now - stack[-1].since)
    stack.append(_Frame(name, now))
    try:
        yield
    finally:
        now = time.thread_time()
        _STAGE_CHILDREN[name].inc(now - stack.pop().since)
        if stack:
            stack[-1].since = now


def total(metric: Counter | Histogram, suffix: str = "_total") -> float:
    """The sum of a metric's samples that end with `suffix` (all label values): a counter's
    total, or a histogram's `_sum` or `_count`."""
    return float(sum(s.value for m in metric.collect() for s in m.samples if s.name.endswith(suffix)))
