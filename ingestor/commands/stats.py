"""`ingestor stats`: collection rows, cache keys and memory, consumer lag per partition, DLQ depth.
Each dependency is asked at once, within `timeout_s` (as `check` does); one that fails shows its
error's message, and makes the exit code 1, as a missing collection does. Nothing is created: not
the collection, not a topic."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ingestor.commands.check import CLIENT_SHARE, CheckResult, bounded, kafka_consumer, lite_allowance
from ingestor.config import Settings
from ingestor.errors import NotFound, RetriableError, StartupError

Rows = list[tuple[str, str]]


def _milvus(settings: Settings, timeout_s: float, rows: Rows) -> CheckResult:
    m = settings.milvus
    if m.is_lite and not Path(m.uri).exists():
        raise NotFound(f"no Milvus Lite file at {m.uri}")
    from ingestor.sink import MilvusSink

    sink = MilvusSink(m.model_copy(update={"timeout_s": min(m.timeout_s, timeout_s * CLIENT_SHARE)}))
    try:
        if not sink.exists():
            names = sink.collection_names()
            there = f"the collections there: {', '.join(names)}" if names else "it holds no collection"
            raise NotFound(f"no collection {m.collection!r} ({there})")
        count = str(sink.count())
    finally:
        sink.close()
    rows.append((f"milvus rows ({m.collection})", count))
    return CheckResult("milvus", 0, "")


def _redis(settings: Settings, timeout_s: float, rows: Rows) -> CheckResult:
    if settings.redis.url is None:
        rows.append(("cache", "off (no redis.url)"))
        return CheckResult("redis", 0, "", skipped=True)
    from ingestor.cache import connect, refusal

    client = connect(settings.redis, timeout_s=min(timeout_s * CLIENT_SHARE, 5.0))
    try:
        keys, memory = client.dbsize(), client.info("memory").get("used_memory_human")
    except Exception as exc:
        reason = refusal(exc)
        if reason is not None:
            raise StartupError(reason) from None
        raise RetriableError("redis", f"{type(exc).__name__}: {exc}") from None
    finally:
        client.close()
    rows += [("cache keys", str(keys)), ("cache memory", str(memory))]
    return CheckResult("redis", 0, "")


def _kafka(settings: Settings, timeout_s: float, rows: Rows) -> CheckResult:
    """Lag per partition of each topic, and the depth of its dead-letter topic. Under
    read_committed the end offsets are last stable offsets, as the daemon sees them."""
    from kafka import TopicPartition

    from ingestor.kafka_common import kafka_errors

    with kafka_errors("kafka", settings.kafka.bootstrap_servers, at_start=True):
        consumer = kafka_consumer(settings, timeout_s)
        try:
            existing = consumer.topics()
            for topic in settings.kafka.topics:
                if topic not in existing:
                    rows.append((f"lag {topic}", "no such topic"))
                    continue
                parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
                ends = consumer.end_offsets(parts)
                for tp in parts:
                    committed = consumer.committed(tp) or 0
                    rows.append((f"lag {tp.topic}[{tp.partition}]", str(max(0, ends[tp] - committed))))
            for dlq_topic in dict.fromkeys(settings.dlq.topic_for(t) for t in settings.kafka.topics):
                if dlq_topic not in existing:
                    rows.append((f"dlq depth {dlq_topic}", "0 (no topic)"))
                    continue
                dparts = [TopicPartition(dlq_topic, p) for p in sorted(consumer.partitions_for_topic(dlq_topic) or [])]
                dends, dbegins = consumer.end_offsets(dparts), consumer.beginning_offsets(dparts)
                rows.append((f"dlq depth {dlq_topic}", str(sum(dends[p] - dbegins[p] for p in dparts))))
        finally:
            consumer.close(autocommit=False)
    return CheckResult("kafka", 0, "")


def render_stats(settings: Settings, console: Console, timeout_s: float) -> int:
    """Print the table; the exit code (0, or the worst of the dependencies' codes)."""
    from ingestor.logs import quiet_kafka_clients

    quiet_kafka_clients()
    rows: dict[str, Rows] = {"milvus": [], "redis": [], "kafka": []}
    results = {
        r.name: r
        for r in bounded(
            {
                "milvus": lambda: _milvus(settings, timeout_s, rows["milvus"]),
                "redis": lambda: _redis(settings, timeout_s, rows["redis"]),
                "kafka": lambda: _kafka(settings, timeout_s, rows["kafka"]),
            },
            timeout_s,
            {"milvus": lite_allowance(settings)},
        )
    }
    table = Table(title="ingestor stats", show_header=True)
    table.add_column("what")
    table.add_column("value", overflow="fold")
    for name in ("milvus", "redis", "kafka"):
        result = results[name]
        if result.ok:
            for what, value in rows[name]:
                table.add_row(escape(what), escape(value))
        else:
            table.add_row(name, f"[red]{escape(result.detail)}[/red]")
    console.print(table)
    return max(r.code for r in results.values())
