"""`ingestor check`: one line per dependency and the model, each tested with a real call."""

from __future__ import annotations

from dataclasses import dataclass

from ingestor.config import Settings
from ingestor.errors import RetriableError
from ingestor.kafka_common import client_kwargs, kafka_errors


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    ok: bool
    detail: str
    skipped: bool = False


def _kafka(settings: Settings) -> CheckResult:
    from kafka import KafkaConsumer

    try:
        with kafka_errors("kafka", settings.kafka.bootstrap_servers):
            consumer = KafkaConsumer(**client_kwargs(settings.kafka))
            try:
                topics = consumer.topics()
            finally:
                consumer.close()
    except RetriableError as exc:  # names a refusal's setting, as `ingestor run` would
        return CheckResult("kafka", False, str(exc).removeprefix("kafka: "))
    missing = [t for t in settings.kafka.topics if t not in topics]
    note = f"; topics not created yet: {', '.join(missing)}" if missing else ""
    return CheckResult("kafka", True, f"{settings.kafka.bootstrap_servers}: {len(topics)} topic(s){note}")


def _redis(settings: Settings) -> CheckResult:
    if settings.redis.url is None:
        return CheckResult("redis", False, "no redis.url configured: the cache is off", skipped=True)
    from ingestor.cache import connect, refusal

    try:
        client = connect(settings.redis, timeout_s=2)
        client.ping()
        version = client.info("server").get("redis_version", "?")
        client.close()
    except Exception as exc:
        return CheckResult("redis", False, refusal(exc) or f"{type(exc).__name__}: {exc}")
    return CheckResult("redis", True, f"redis {version} answers")


def _milvus(settings: Settings) -> CheckResult:
    from ingestor.sink import MilvusSink

    sink = MilvusSink(settings.milvus)
    try:
        sink.connect()
        exists = sink.exists()
    except Exception as exc:
        return CheckResult("milvus", False, f"{settings.milvus.uri}: {exc}")
    finally:
        sink.close()
    present = "exists" if exists else "will be created"
    return CheckResult("milvus", True, f"{settings.milvus.uri}: collection {settings.milvus.collection!r} {present}")


def _model(settings: Settings) -> CheckResult:
    from ingestor.embedder import Embedder

    try:
        embedder = Embedder(settings.model)
        vector = embedder.encode(["a probe sentence"])
    except Exception as exc:
        return CheckResult("model", False, f"{settings.model.name}: {exc}")
    return CheckResult("model", True, f"{embedder.identity} on {embedder.device}, dimension {vector.shape[1]}")


def run_checks(settings: Settings) -> list[CheckResult]:
    return [_kafka(settings), _redis(settings), _milvus(settings), _model(settings)]
