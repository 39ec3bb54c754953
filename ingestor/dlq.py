"""The dead-letter topic: a bad record is re-published with its original key and value bytes and
headers saying why. Its offset becomes committable only once the broker acknowledged the write;
an unreachable DLQ is a retriable failure, never a reason to skip the record."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from kafka import KafkaProducer

from ingestor import metrics
from ingestor.config import DlqSettings, KafkaSettings
from ingestor.kafka_common import client_kwargs, kafka_call, kafka_errors
from ingestor.records import Rejected
from ingestor.text import clip_utf8

log = logging.getLogger(__name__)

MAX_ERROR_HEADER_BYTES = 2_000
NULL_VALUE_HEADER = "ingestor.null_value"


def dlq_headers(item: Rejected) -> list[tuple[str, bytes]]:
    p = item.raw.position
    error = clip_utf8(item.error, MAX_ERROR_HEADER_BYTES).encode("utf-8", "replace")
    ours = [
        ("ingestor.reason", item.reason.encode()),
        ("ingestor.error", error),
        ("ingestor.topic", p.tp.topic.encode()),
        ("ingestor.partition", str(p.tp.partition).encode()),
        ("ingestor.offset", str(p.offset).encode()),
    ]
    if item.raw.key is None and item.raw.value is None:
        # A record with neither key nor value cannot be re-published as such by most clients:
        # it travels with an empty value and this header, and `dlq replay` restores the null.
        ours.append((NULL_VALUE_HEADER, b"true"))
    # Keep the producer's own headers, minus any stale ingestor.* from an earlier dead-lettering.
    theirs = [(k, v) for k, v in item.raw.headers if not k.startswith("ingestor.")]
    return ours + theirs


class DeadLetterQueue:
    def __init__(self, kafka: KafkaSettings, settings: DlqSettings) -> None:
        self.settings = settings
        self._kafka = kafka
        self._producer: KafkaProducer | None = None

    def _get(self) -> KafkaProducer:
        if self._producer is None:
            with kafka_errors("dlq", "cannot create the dead-letter producer"):
                self._producer = KafkaProducer(
                    **client_kwargs(self._kafka),
                    acks="all",
                    retries=5,
                    max_block_ms=self.settings.ack_timeout_ms,
                    max_request_size=max(2 * self._kafka.max_record_bytes, 1 << 20) + (64 << 10),
                )
        return self._producer

    def send(self, items: Sequence[Rejected]) -> None:
        """Publish and wait for every acknowledgement; raises RetriableError if any is missing."""
        if not items:
            return
        producer = self._get()
        # kafka-python's (idempotent) producer turns a non-retriable error such as MESSAGE_TOO_LARGE
        # into a fatal state that fails every later send: a failed write retries on a new one.
        with kafka_errors("dlq", "dead-letter write not acknowledged", on_error=self._discard):
            futures = [
                producer.send(
                    self.settings.topic_for(item.raw.position.tp.topic),
                    key=item.raw.key,
                    value=b"" if item.raw.key is None and item.raw.value is None else item.raw.value,
                    headers=dlq_headers(item),
                )
                for item in items
            ]
            producer.flush(timeout=self.settings.ack_timeout_ms / 1000.0)
            for future in futures:
                future.get(timeout=self.settings.ack_timeout_ms / 1000.0)
        for item in items:
            metrics.RECORDS.dead_lettered(item.reason)
        log.info("dead-lettered %d record(s): %s", len(items), ", ".join(sorted({i.reason for i in items})))

    def _discard(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:  # a poisoned producer's goodbye: whatever it raises, a new one follows
            kafka_call(
                "closing the failed dead-letter producer",
                lambda: producer.close(timeout=0),
                last=True,
                dependency="dlq",
            )

    def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:  # at shutdown: what it raises must not mask the outcome
            kafka_call(
                "closing the dead-letter producer", lambda: producer.close(timeout=5), last=True, dependency="dlq"
            )
