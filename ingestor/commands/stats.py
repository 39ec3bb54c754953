"""`ingestor stats`: collection rows, cache keys and memory, consumer lag per partition, DLQ depth."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ingestor.config import Settings
from ingestor.errors import RetriableError
from ingestor.kafka_common import client_kwargs, kafka_errors


def render_stats(settings: Settings, console: Console) -> None:
    table = Table(title="ingestor stats", show_header=True)
    table.add_column("what")
    table.add_column("value", justify="right")
    # Milvus
    from ingestor.sink import MilvusSink

    sink = MilvusSink(settings.milvus)
    try:
        exists = sink.exists()
        table.add_row(f"milvus rows ({settings.milvus.collection})", str(sink.count()) if exists else "no collection")
    except Exception as exc:
        table.add_row("milvus", f"[red]{type(exc).__name__}[/red]")
    finally:
        sink.close()
    # Redis
    if settings.redis.url is not None:
        try:
            from ingestor.cache import connect

            r = connect(settings.redis, timeout_s=2)
            table.add_row("cache keys", str(r.dbsize()))
            table.add_row("cache memory", str(r.info("memory").get("used_memory_human")))
        except Exception as exc:
            table.add_row("redis", f"[red]{type(exc).__name__}[/red]")
    # Kafka lag and DLQ depth
    try:
        with kafka_errors("kafka", settings.kafka.bootstrap_servers):
            _kafka_rows(settings, table)
    except RetriableError as exc:
        table.add_row("kafka", f"[red]{escape(str(exc).removeprefix('kafka: '))}[/red]")
    console.print(table)


def _kafka_rows(settings: Settings, table: Table) -> None:
    """Lag per partition of each topic, and the depth of its dead-letter topic."""
    from kafka import KafkaConsumer, TopicPartition

    # The daemon's isolation level: under read_committed the end offsets are last stable
    # offsets, so an open transaction, or a partition ending in a transaction marker, is not
    # counted as lag the daemon could ever consume.
    consumer = KafkaConsumer(
        **client_kwargs(settings.kafka),
        group_id=settings.kafka.group_id,
        enable_auto_commit=False,
        isolation_level=settings.kafka.isolation_level,
    )
    try:
        for topic in settings.kafka.topics:
            parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
            ends = consumer.end_offsets(parts) if parts else {}
            for tp in parts:
                committed = consumer.committed(tp) or 0
                table.add_row(f"lag {tp.topic}[{tp.partition}]", str(max(0, ends[tp] - committed)))
            dlq_topic = settings.dlq.topic_for(topic)
            dparts = [TopicPartition(dlq_topic, p) for p in sorted(consumer.partitions_for_topic(dlq_topic) or [])]
            if dparts:
                dends, dbegins = consumer.end_offsets(dparts), consumer.beginning_offsets(dparts)
                table.add_row(f"dlq depth {dlq_topic}", str(sum(dends[p] - dbegins[p] for p in dparts)))
            else:
                table.add_row(f"dlq depth {dlq_topic}", "0 (no topic)")
    finally:
        consumer.close(autocommit=False)
