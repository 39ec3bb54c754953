"""`ingestor dlq replay`: re-publish dead-lettered records to their source topic, with their
original key, value and headers (our `ingestor.*` headers removed). Kafka's errors are translated
as `ingestor run` does at start: a refusal is a StartupError (exit 2), anything else a
RetriableError (exit 1)."""

from __future__ import annotations

from dataclasses import dataclass

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from rich.console import Console

from ingestor.config import Settings
from ingestor.kafka_common import client_kwargs, kafka_errors


def _header(headers: list[tuple[str, bytes]], name: str) -> str | None:
    for k, v in headers or []:
        if k == name:
            return v.decode("utf-8", "replace")
    return None


@dataclass(frozen=True, slots=True)
class Selection:
    """Which dead letters to replay: by reason (none: all), source partition and source offsets."""

    reasons: set[str]
    partition: int | None = None
    from_offset: int | None = None
    to_offset: int | None = None

    def wants(self, reason: str | None, partition: int, offset: int) -> bool:
        return (
            (not self.reasons or reason in self.reasons)
            and (self.partition is None or partition == self.partition)
            and (self.from_offset is None or offset >= self.from_offset)
            and (self.to_offset is None or offset <= self.to_offset)
        )


def replay_dead_letters(settings: Settings, wanted: Selection, dry_run: bool, console: Console) -> int:
    topics = ", ".join(dict.fromkeys(settings.dlq.topic_for(t) for t in settings.kafka.topics))
    with kafka_errors("kafka", f"cannot replay {topics} at {settings.kafka.bootstrap_servers}", at_start=True):
        return _replay(settings, wanted, dry_run, console)


def _replay(settings: Settings, wanted: Selection, dry_run: bool, console: Console) -> int:
    kwargs = client_kwargs(settings.kafka)
    consumer = KafkaConsumer(**kwargs, enable_auto_commit=False, group_id=None, allow_auto_create_topics=False)
    producer = None if dry_run else KafkaProducer(**kwargs, acks="all")
    replayed = 0
    try:
        existing = consumer.topics()  # asks for no topic by name, so creates none
        done: set[str] = set()
        for topic in dict.fromkeys(settings.kafka.topics):
            dlq_topic = settings.dlq.topic_for(topic)
            if dlq_topic not in existing or dlq_topic in done:  # one dead-letter topic may serve several
                continue
            done.add(dlq_topic)
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
                        source_partition = int(_header(headers, "ingestor.partition") or -1)
                        target = _header(headers, "ingestor.topic") or topic
                        if wanted.wants(reason, source_partition, source_offset):
                            replayed += 1
                            if producer is None:  # a dry run
                                console.print(f"{target}[{source_partition}] offset {source_offset}: {reason}")
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
