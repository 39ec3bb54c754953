"""What the bench needs from the services, under names of its own run (topics, Redis key
prefixes, Milvus Lite files or collections on a server), and removing it again."""

from __future__ import annotations

import logging
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import milvus
from bench.corpus import kafka_message
from ingestor.config import Settings
from ingestor.corpus import Record

log = logging.getLogger(__name__)


DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


class Services:
    """Creates what the bench needs under unique names, and removes it again."""

    def __init__(
        self, settings: Settings, redis_url: str, partitions: int, keep: bool, server: str | None = None
    ) -> None:
        self.settings = settings
        self.redis_url = redis_url
        self.partitions = partitions
        self.keep = keep
        self.server = server  # a Milvus server; None: a Lite file per variant
        self.run_id = uuid.uuid4().hex[:8]
        self.topics: list[str] = []
        self.redis_prefixes: list[str] = []
        self.collections: list[str] = []  # on the server
        self.tmp = Path(tempfile.mkdtemp(prefix="ingestor-bench-"))

    def name(self, what: str) -> str:
        return f"bench-{self.run_id}-{what}"

    def topic(self, what: str, records: Sequence[Record]) -> str:
        from kafka import KafkaProducer
        from kafka.admin import KafkaAdminClient, NewTopic

        from ingestor.kafka_common import client_kwargs

        topic = self.name(what)
        admin = KafkaAdminClient(**client_kwargs(self.settings.kafka))
        try:
            admin.create_topics([NewTopic(topic, num_partitions=self.partitions, replication_factor=1)])
        finally:
            admin.close()
        self.topics.append(topic)
        if records:
            producer = KafkaProducer(
                **client_kwargs(self.settings.kafka), acks="all", linger_ms=20, max_request_size=8 << 20
            )
            try:
                futures = [producer.send(topic, key=k, value=v) for k, v in map(kafka_message, records)]
                producer.flush()
                for f in futures:
                    f.get(timeout=30)
            finally:
                producer.close()
        return topic

    def redis_prefix(self, what: str) -> str:
        prefix = self.name(what)
        self.redis_prefixes.append(prefix)
        return prefix

    def milvus_uri(self, what: str) -> str:
        return self.server or str(self.tmp / f"{what}.db")

    def collection(self, what: str) -> str:
        """A collection name of this run: on a server, unique (and dropped at the end)."""
        if self.server is None:
            return what
        name = f"{what}_{self.run_id}"
        if name not in self.collections:
            self.collections.append(name)
        return name

    def cleanup(self) -> None:
        if self.keep:
            log.warning(
                "keeping topics %s, Redis prefixes %s, collections %s and %s",
                self.topics,
                self.redis_prefixes,
                self.collections,
                self.tmp,
            )
            return
        if self.server is not None and self.collections:
            try:
                for name in self.collections:
                    drop_collection(self.server, name)
            except Exception as exc:
                log.warning("could not drop the bench's collections %s: %s", self.collections, exc)
        if self.topics:
            try:
                from kafka.admin import KafkaAdminClient

                from ingestor.kafka_common import client_kwargs

                admin = KafkaAdminClient(**client_kwargs(self.settings.kafka))
                try:
                    admin.delete_topics(self.topics)
                finally:
                    admin.close()
            except Exception as exc:
                log.warning("could not delete the bench topics %s: %s", self.topics, exc)
        if self.redis_prefixes:
            try:
                import redis

                client = redis.Redis.from_url(self.redis_url)
                for prefix in self.redis_prefixes:
                    batch: list[bytes] = []
                    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
                        batch.append(key)
                        if len(batch) >= 1000:
                            client.delete(*batch)
                            batch = []
                    if batch:
                        client.delete(*batch)
                client.close()
            except Exception as exc:
                log.warning("could not delete the bench's Redis keys: %s", exc)
        shutil.rmtree(self.tmp, ignore_errors=True)


def milvus_rows(uri: str, collection: str, fields: list[str], in_process: bool = False) -> list[dict[str, Any]]:
    """Every row of a collection (a Lite file or a server), these fields only (`milvus.rows`)."""
    with _sink(uri, collection, in_process) as sink:
        return milvus.rows(sink, fields)


def record_fields(chunked: bool) -> list[str]:
    """The fields `held` reads: with chunking, each entity's record and its place among the
    record's chunks."""
    return ["id", "doc_id", "chunk_index", "chunk_count"] if chunked else ["id"]


@dataclass
class Held:
    """What a collection holds, by record."""

    rows: int  # entities: one per record, or with chunking one per chunk
    record_ids: set[str]  # the records' own ids (`doc_id` with chunking)
    whole: bool  # every entity once; with chunking, every record's chunks 0..count-1, once each

    def match(self, expected: set[str]) -> bool:
        """Exactly these records, each whole and once."""
        return self.whole and self.record_ids == expected


def held(rows: list[dict[str, Any]], chunked: bool) -> Held:
    """`rows` (read with `record_fields(chunked)`, at least) by record."""
    ids = [r["id"] for r in rows]
    whole = len(ids) == len(set(ids))
    if not chunked:
        return Held(len(rows), set(ids), whole)
    chunks: dict[str, list[tuple[int, int]]] = {}
    for r in rows:
        chunks.setdefault(str(r["doc_id"]), []).append((int(r["chunk_index"]), int(r["chunk_count"])))
    for parts in chunks.values():
        whole = whole and sorted(parts) == [(i, parts[0][1]) for i in range(parts[0][1])]
    return Held(len(rows), set(chunks), whole)


def milvus_held(uri: str, collection: str, chunked: bool, in_process: bool = False) -> Held:
    return held(milvus_rows(uri, collection, record_fields(chunked), in_process), chunked)


def drop_collection(uri: str, collection: str) -> None:
    with _sink(uri, collection) as sink:
        milvus.drop(sink)


@contextmanager
def _sink(uri: str, collection: str, in_process: bool = False) -> Iterator[Any]:
    from ingestor.config import MilvusSettings
    from ingestor.sink import MilvusSink

    sink = MilvusSink(MilvusSettings(uri=uri, collection=collection, lite_in_process=in_process))
    try:
        sink.connect()
        yield sink
    finally:
        sink.close()
