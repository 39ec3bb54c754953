"""`ingestor dlq replay`: re-publish dead-lettered records to their source topic, with their
original key, value and headers (our `ingestor.*` headers removed). Kafka's errors are translated
as `ingestor run` does at start: a refusal is a StartupError (exit 2), anything else a
RetriableError (exit 1)."""

from __future__ import annotations

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from rich.console import Console

from ingestor.config import Settings
from ingestor.kafka_common import client_kwargs, kafka_errors


def _header(headers: list[tuple[str, bytes]], name: str) -> str | None:
    for k, v in headers or []:
        if k == name:
            return v.decode("utf-8", "replace")
    return None


def replay_dead_letters(
    settings: Settings,
    reasons: set[str],
    from_offset: int | None,
    to_offset: int | None,
    dry_run: bool,
    console: Console,
) -> int:
    topics = ", ".join(dict.fromkeys(settings.dlq.topic_for(t) for t in settings.kafka.topics))
    with kafka_errors("kafka", f"cannot replay {topics} at {settings.kafka.bootstrap_servers}", at_start=True):
        return _replay(settings, reasons, from_offset, to_offset, dry_run, console)


def _replay(
    settings: Settings,
    reasons: set[str],
    from_offset: int | None,
    to_offset: int | None,
    dry_run: bool,
    console: Console,
) -> int:
    kwargs = client_kwargs(settings.kafka)
    consumer = KafkaConsumer(**kwargs, enable_auto_commit=False, group_id=None)
    producer = None if dry_run else KafkaProducer(**kwargs, acks="all")
    replayed = 0
    try:
        for topic in settings.kafka.topics:
            dlq_topic = settings.dlq.topic_for(topic)
            parts = [TopicPartition(dlq_topic, p) for p in sorted(consumer.partitions_for_topic(dlq_topic) or [])]
            if not parts:
                continue
            consumer.assign(parts)
            consumer.seek_to_beginning(*parts)
            ends = consumer.end_offsets(parts)
            remaining = {tp for tp in parts if ends[tp] > consumer.position(tp)}
            while remaining:
                for tp, records in consumer.poll(timeout_ms=1000).items():
                    for r in records:
                        headers = list(r.headers or [])
                        reason = _header(headers, "ingestor.reason")
                        source_offset = int(_header(headers, "ingestor.offset") or -1)
                        target = _header(headers, "ingestor.topic") or topic
                        wanted = (
                            (not reasons or reason in reasons)
                            and (from_offset is None or source_offset >= from_offset)
                            and (to_offset is None or source_offset <= to_offset)
                        )
                        if wanted:
                            replayed += 1
                            if producer is None:  # a dry run
                                console.print(f"{target} offset {source_offset}: {reason}")
                            else:
                                kept = [(k, v) for k, v in headers if not k.startswith("ingestor.")]
                                if _header(headers, "ingestor.null_value") == "true":
                                    # A tombstone without a key deletes nothing, whatever is fixed.
                                    replayed -= 1
                                    console.print(f"{target} offset {source_offset}: null record, not replayed")
                                else:
                                    producer.send(target, key=r.key, value=r.value, headers=kept)
                    if consumer.position(tp) >= ends[tp]:
                        remaining.discard(tp)
        if producer is not None:
            producer.flush()
    finally:
        consumer.close(autocommit=False)
        if producer is not None:
            producer.close()
    return replayed
