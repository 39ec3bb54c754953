"""`ingestor check`: the preflight of `ingestor run`. Kafka, Redis and Milvus are checked at once,
each within `timeout_s`, and each reports one line as soon as it finishes; the model is loaded
meanwhile and checked as `run` checks it at start (the chunk settings, then the collection's
fields, dimension and chunking mode). Nothing is consumed, written or created.

A result's code is the exit code it asks for: 0 ok, 1 a dependency that does not answer (it may
heal), 2 a setting `run` would refuse at start (a refused login, a collection that does not fit)."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ingestor.config import Settings
from ingestor.errors import IngestorError, RetriableError, StartupError

DEPENDENCIES = ("kafka", "redis", "milvus")
# Of a check's bound, what its client's own timeouts get: the rest covers importing the client and
# building the line, so that a client that gives up reports its own reason, not just the bound.
CLIENT_SHARE = 0.7


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    code: int  # 0 ok, 1 unavailable, 2 refused: what `run` would exit with
    detail: str
    skipped: bool = False

    @property
    def ok(self) -> bool:
        return self.code == 0


# A Milvus Lite file is served by a child process that `check` and `stats` start themselves: a
# Python process importing Milvus Lite, seconds on a busy machine. Its start is not the dependency's
# answer, so it gets this much on top of the bound.
LITE_START_S = 30.0


def lite_allowance(settings: Settings) -> float:
    m = settings.milvus
    return LITE_START_S if m.lite_child and Path(m.uri).exists() else 0.0


def bounded(
    checks: dict[str, Callable[[], CheckResult]],
    timeout_s: float,
    extra_s: dict[str, float] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[CheckResult]:
    """Run the checks at once, each on a thread of its own; yield each result as it finishes, and
    for each still running at `timeout_s` (plus its `extra_s`), a result saying so. A call that hangs
    past it is left behind on its daemon thread (the command exits without waiting for it)."""
    done: queue.Queue[CheckResult] = queue.Queue()
    for name, check in checks.items():
        threading.Thread(target=_into, args=(name, check, done), name=f"check-{name}", daemon=True).start()
    start = clock()
    deadlines = {name: start + timeout_s + (extra_s or {}).get(name, 0.0) for name in checks}
    pending = list(checks)  # in the order asked: those late together are said in that order
    while pending:
        try:
            result = done.get(timeout=max(0.0, min(deadlines[n] for n in pending) - clock()))
        except queue.Empty:
            result = None
        if result is not None and result.name in pending:
            pending.remove(result.name)
            yield result
        for name in [n for n in pending if clock() >= deadlines[n]]:
            pending.remove(name)
            yield CheckResult(name, 1, f"no answer within {deadlines[name] - start:g}s")


def _into(name: str, check: Callable[[], CheckResult], done: queue.Queue[CheckResult]) -> None:
    try:
        done.put(check())
    except StartupError as exc:
        done.put(CheckResult(name, 2, str(exc)))
    except IngestorError as exc:
        done.put(CheckResult(name, 1, str(exc).removeprefix(f"{name}: ")))
    except Exception as exc:  # a check must report, whatever its library raised
        done.put(CheckResult(name, 1, f"{type(exc).__name__}: {exc}"))


# -- kafka -------------------------------------------------------------------------------------------


def kafka_consumer(settings: Settings, timeout_s: float) -> Any:
    """A consumer of the daemon's group and isolation level that only looks: it commits nothing,
    creates no topic, and waits at most `timeout_s` for the brokers."""
    from kafka import KafkaConsumer

    from ingestor.kafka_common import client_kwargs

    ms = max(1_000, int(timeout_s * CLIENT_SHARE * 1000))
    kwargs = client_kwargs(settings.kafka)
    kwargs["request_timeout_ms"] = kwargs["bootstrap_timeout_ms"] = min(kwargs["request_timeout_ms"], ms)
    return KafkaConsumer(
        **kwargs,
        group_id=settings.kafka.group_id,
        enable_auto_commit=False,
        allow_auto_create_topics=False,
        isolation_level=settings.kafka.isolation_level,
    )


def topic_lag(consumer: Any, topic: str) -> tuple[int, int]:
    """(partitions, the group's lag over them) of an existing topic; a partition the group never
    committed counts from its beginning, as `auto_offset_reset=earliest` would read it."""
    from kafka import TopicPartition

    parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
    if not parts:
        return 0, 0
    ends, begins = consumer.end_offsets(parts), consumer.beginning_offsets(parts)
    lag = 0
    for tp in parts:
        committed = consumer.committed(tp)
        lag += max(0, ends[tp] - (begins[tp] if committed is None else committed))
    return len(parts), lag


def check_kafka(settings: Settings, timeout_s: float) -> CheckResult:
    from ingestor.kafka_common import kafka_errors

    k = settings.kafka
    with kafka_errors("kafka", k.bootstrap_servers, at_start=True):
        consumer = kafka_consumer(settings, timeout_s)
        try:
            existing = consumer.topics()  # every topic's name: asks for none by name, so creates none
            parts = []
            missing = []
            for topic in k.topics:
                if topic not in existing:
                    missing.append(topic)
                    continue
                count, lag = topic_lag(consumer, topic)
                parts.append(f"{topic} ({count} partition(s), lag {lag})")
        finally:
            consumer.close(autocommit=False)
    found = f"group {k.group_id}: " + (", ".join(parts) if parts else "no topic of kafka.topics exists")
    if missing:
        found += f"; not created yet: {', '.join(missing)} (run waits for it)"
    return CheckResult("kafka", 0, f"{k.bootstrap_servers}, {found}")


# -- redis -------------------------------------------------------------------------------------------


def check_redis(settings: Settings, timeout_s: float) -> CheckResult:
    if settings.redis.url is None:
        return CheckResult("redis", 0, "no redis.url configured: run goes without a cache", skipped=True)
    from ingestor.cache import connect, refusal

    client = connect(settings.redis, timeout_s=min(timeout_s * CLIENT_SHARE, 5.0))
    try:
        client.ping()
        version = client.info("server").get("redis_version", "?")
    except Exception as exc:
        reason = refusal(exc)
        if reason is not None:
            raise StartupError(reason) from None
        raise RetriableError("redis", f"{type(exc).__name__}: {exc}") from None
    finally:
        client.close()
    return CheckResult("redis", 0, f"redis {version} answers")


# -- milvus ------------------------------------------------------------------------------------------


class MilvusProbe:
    """The Milvus check, and what it learnt for the model's check: the collection's description
    (None: there is none yet) once `ready` is set."""

    def __init__(self, settings: Settings, timeout_s: float) -> None:
        self.settings = settings
        self.timeout_s = timeout_s
        self.ready = threading.Event()
        self.info: dict[str, Any] | None = None
        self.stored_model: str | None = None
        self.answered = False

    def __call__(self) -> CheckResult:
        try:
            return self._check()
        finally:
            self.ready.set()

    def _check(self) -> CheckResult:
        m = self.settings.milvus
        name = m.collection
        if m.is_lite and not Path(m.uri).exists():
            self.answered = True
            return CheckResult("milvus", 0, f"{m.uri}: no Milvus Lite file yet; run creates it and {name!r}")
        from ingestor.sink import MilvusSink

        bounded_settings = m.model_copy(update={"timeout_s": min(m.timeout_s, self.timeout_s * CLIENT_SHARE)})
        sink = MilvusSink(bounded_settings, chunked=self.settings.chunking.enabled)
        try:
            sink.connect()
            self.info = sink.describe_existing()
            if self.info is not None and sink.is_loaded():  # loading it is run's to do, not check's
                self.stored_model = sink.stored_model()
            version = sink.server_version
        finally:
            sink.close()
        self.answered = True
        state = "exists" if self.info is not None else "does not exist yet: run creates it"
        return CheckResult("milvus", 0, f"{m.uri} (Milvus {version}): collection {name!r} {state}")


# -- the model ---------------------------------------------------------------------------------------


def check_model(settings: Settings, milvus: MilvusProbe, wait_s: float) -> CheckResult:
    """Load the model as `run` does and check what `run` checks against it at start."""
    from ingestor.chunking import splitter_for
    from ingestor.embedder import Embedder
    from ingestor.identity import UnreadableIdentity, from_properties, mismatch, of_model
    from ingestor.sink import MilvusSink

    embedder = Embedder(settings.model, settings.runtime.torch_threads)
    vector = embedder.encode(["a probe sentence"])
    splitter = splitter_for(settings.chunking, embedder)  # StartupError: exit 2, run's own message
    detail = f"{embedder.identity} on {embedder.device}, dimension {vector.shape[1]}"
    if splitter is not None:
        detail += f", chunks of at most {splitter.max_tokens} tokens"
    milvus.ready.wait(wait_s)
    if milvus.info is not None:
        where = f"{settings.milvus.collection!r} at {settings.milvus.uri}"
        try:
            recorded = from_properties(milvus.info.get("properties"))
        except UnreadableIdentity as exc:
            raise StartupError(f"Milvus collection {where}: {exc}. Use another milvus.collection") from None
        reason = None if recorded is None else mismatch(recorded, of_model(embedder, splitter), where)
        if reason is not None:
            raise StartupError(reason)  # run refuses it (exit 2) with the same message
        MilvusSink(settings.milvus, chunked=settings.chunking.enabled).verify(
            milvus.info, embedder.dimension, embedder.identity
        )
        detail += f"; collection {settings.milvus.collection!r} fits"
        stored = milvus.stored_model
        if stored is not None and stored.split("@")[0] != embedder.identity.split("@")[0]:
            # run takes it (same dimension), but searches would compare vectors of two models.
            detail += f" (note: it holds vectors of {stored}; replay the topic to re-embed them)"
    return CheckResult("model", 0, detail)


def run_checks(settings: Settings, timeout_s: float, model: bool = True) -> Iterator[CheckResult]:
    """Each dependency's result as it finishes (within `timeout_s`), then the model's."""
    from ingestor.logs import quiet_kafka_clients

    quiet_kafka_clients()
    milvus = MilvusProbe(settings, timeout_s)
    results: queue.Queue[CheckResult] = queue.Queue()
    if model:
        threading.Thread(
            target=_into,
            args=("model", lambda: check_model(settings, milvus, timeout_s), results),
            name="check-model",
            daemon=True,
        ).start()
    yield from bounded(
        {
            "kafka": lambda: check_kafka(settings, timeout_s),
            "redis": lambda: check_redis(settings, timeout_s),
            "milvus": milvus,
        },
        timeout_s,
        {"milvus": lite_allowance(settings)},
    )
    milvus.ready.set()  # a Milvus that did not answer in time: the model's check goes on without it
    if model:
        yield results.get()
