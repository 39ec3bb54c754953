"""Prometheus metrics, all prefixed `ingestor_`. Defined once here; modules import what they count.

Counters of records follow one identity that the integration tests check:
consumed = upserted + skipped + deleted + dead-lettered (+ dropped on revoke, replayed elsewhere).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_TOKEN_BUCKETS = (64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)

RECORDS_CONSUMED = Counter("ingestor_records_consumed_total", "Records read from Kafka")
RECORDS_EMBEDDED = Counter("ingestor_records_embedded_total", "Texts run through the model")
RECORDS_CACHE_HIT = Counter("ingestor_records_cache_hit_total", "Texts whose vector came from the Redis cache")
RECORDS_SKIPPED = Counter("ingestor_records_skipped_total", "Records skipped as unchanged (no embed, no write)")
RECORDS_UPSERTED = Counter("ingestor_records_upserted_total", "Records written to Milvus")
RECORDS_DELETED = Counter("ingestor_records_deleted_total", "Tombstones applied to Milvus")
RECORDS_DEAD_LETTERED = Counter(
    "ingestor_records_dead_lettered_total", "Records sent to the dead-letter topic", ["reason"]
)
RECORDS_DROPPED = Counter(
    "ingestor_records_dropped_total", "Records dropped because their partition was revoked (the new owner replays)"
)
RECORDS_TRUNCATED = Counter("ingestor_records_truncated_total", "Texts cut at the model's maximum sequence length")
RECORDS_IN_FLIGHT = Gauge("ingestor_records_in_flight", "Records read and not yet done")
PARTITIONS_PAUSED = Gauge("ingestor_partitions_paused", "Partitions paused by backpressure or a retry")
PARTITIONS_ASSIGNED = Gauge("ingestor_partitions_assigned", "Partitions owned by this worker")
PARTITIONS_BLOCKED = Gauge(
    "ingestor_partitions_blocked", "Partitions paused because their next batch cannot be decoded (retried, never skipped)",
    ["reason"],
)
UNDECODABLE_BATCHES = Counter(
    "ingestor_undecodable_batches_total", "Fetched batches that could not be decoded, per attempt", ["reason"]
)
CONSUMER_LAG = Gauge(
    "ingestor_consumer_lag_records",
    "End offset (the last stable offset under read_committed) minus committed offset", ["topic", "partition"],
)
BATCH_RECORDS = Histogram("ingestor_batch_records", "Texts per forward pass", buckets=_SIZE_BUCKETS)
BATCH_TOKENS = Histogram("ingestor_batch_tokens", "Padded tokens per forward pass", buckets=_TOKEN_BUCKETS)
PREPARE_SECONDS = Histogram(
    "ingestor_prepare_duration_seconds", "Batcher time per window: cache lookup, tokenising and padding",
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
DEPENDENCY_ERRORS = Counter("ingestor_dependency_errors_total", "Errors talking to a dependency", ["dependency", "kind"])
COMMITS = Counter("ingestor_offset_commits_total", "Offset commits", ["result"])
WORKER_RESTARTS = Counter("ingestor_worker_restarts_total", "Worker processes restarted by the supervisor")
