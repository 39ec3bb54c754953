"""`ingestor bench`: how fast is the pipeline, measured against what it competes with, in one run.

All variants run in this one process, on the same device, with the same precision and the same
already-loaded, warmed-up model (loading is never timed):

  (a) plain    `SentenceTransformer.encode` over the whole corpus at its best batch size: 16, 32,
               64 and 128 (GPU: 32 to 256) are tried on a subset, the best two on the whole
               corpus; the best once more after (d). The fastest whole-corpus run counts (a
               shared machine slows some runs). `encode` sorts by length itself: the ceiling.
  (b) naive    the loop a tutorial writes: KafkaConsumer.poll(max_records=64) → encode(texts in
               arrival order, batch_size=64) → MilvusClient.insert → consumer.commit().
  (c) pipeline the full daemon, in-process (`Daemon(until_caught_up=True)`), through real Kafka,
               Redis and Milvus Lite: fresh topic, group, Milvus Lite file and Redis key prefix.
  (d) warm     (c) again on as many records, half of them repeating texts (c) embedded (new ids,
               so their vectors come from the cache), half new texts from the unused part of the
               corpus (or, if the corpus has none left, (c)'s texts with " (revised)" appended).
  (e) steady   ~20 records/s for `--steady-seconds` into a running daemon; p50/p99 of Kafka record
               timestamp → acknowledged Milvus write, against `batch.max_wait_ms` + 500 ms.
  (f) ceiling  (c) on four times as many records with the forward pass replaced by a constant
               vector (tokenising, padding, Redis, Milvus and Kafka all real): what the pipeline
               around the model can carry on this machine. Where (f) < (a), the device would wait
               on the pipeline, and (f)'s stage shares say on which stage.

Throughput of (b)–(d) runs from the first record handed over by Kafka to the last acknowledged
Milvus write (group join and the daemon's start-up are reported apart, not timed). Tokens are the
model tokenizer's count after truncation, special tokens included, padding excluded — one count
per corpus, the same for every variant.

Corpus size: `--limit` records for (a)–(c); by default 1000 on a CPU and 2000 on a GPU, in either
case at most two thirds of the corpus, so that (d) finds unused texts for its new half.

`--compare-precision P` runs a different, service-free bench instead: plain encode of the corpus
in torch fp32 and in P, each at its best batch size; throughput ratio and min/mean cosine between
them. P is a torch precision (fp16, bf16) or a backend with its precision (onnx, onnx-int8,
openvino, openvino-bf16, openvino-int8; those run on the CPU, so both sides then do). Loading,
and exporting a backend's weights the first time, is not timed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingestor.config import ModelSettings, Settings
from ingestor.memory import MemorySampler, child_pids, cpu_seconds, peak_rss_mib

log = logging.getLogger(__name__)

SAMPLE = Path(__file__).resolve().parent / "data" / "sample.jsonl"
BATCH_SIZES = {"cpu": (16, 32, 64, 128), "gpu": (32, 64, 128, 256)}  # tried for the ceiling (a)
TUNE_SUBSET = {"cpu": 256, "gpu": 1024}  # texts they are tried on
NAIVE_BATCH = 64
STEADY_RATE = 20.0  # records per second in (e)
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

TARGETS = {
    "pipeline_vs_plain": 0.90,
    "pipeline_vs_naive": 2.5,
    "warm_vs_cold": 1.8,
    "precision_speedup": 2.0,
    "precision_min_cosine": 0.99,
    "precision_int8_min_cosine": 0.95,  # int8 trades some agreement for speed; retrieval barely notices
}


@dataclass
class BenchOptions:
    input: Path = SAMPLE
    limit: int | None = None
    steady_seconds: float = 30.0
    steady_rate: float = STEADY_RATE
    skip_naive: bool = False
    compare_precision: str | None = None
    partitions: int = 4
    json_path: Path | None = None
    skip_ceiling: bool = False
    trace_memory: bool = False  # tracemalloc through (e): Python's own memory, and who grew it
    keep: bool = False  # keep topics, Redis keys and the Milvus Lite files (for debugging)
    milvus_uri: str | None = None  # a Milvus server for every variant; None: fresh Milvus Lite files
    sink_rows: int = 24_576  # rows of the sink's own write rate, measured alone


@dataclass
class Record:
    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def kafka(self) -> tuple[bytes, bytes]:
        value = {"id": self.id, "text": self.text}
        if self.metadata:
            value["metadata"] = self.metadata
        return self.id.encode("utf-8"), json.dumps(value, ensure_ascii=False).encode("utf-8")


# -- small helpers ----------------------------------------------------------------------------------


def load_corpus(path: Path) -> list[Record]:
    out: list[Record] = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        line = line.strip()
        if not line:
            continue
        if line.startswith("{"):
            obj = json.loads(line)
            meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
            out.append(Record(str(obj.get("id", f"line-{n}")), str(obj["text"]), meta))
        else:
            out.append(Record(f"line-{n}", line))
    return out


def default_limit(corpus_size: int, device: str) -> int:
    """1000 on a CPU, 2000 on a GPU; at most two thirds of the corpus (see the module doc)."""
    wanted = 1000 if device == "cpu" else 2000
    return max(1, min(wanted, (2 * corpus_size) // 3))


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return float(ordered[rank - 1])


def rate(count: float, seconds: float | None) -> float | None:
    return count / seconds if seconds and seconds > 0 else None


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def metrics_snapshot() -> dict[str, float]:
    from ingestor import metrics as m

    records = m.RECORDS.totals()
    return {
        "consumed": records["consumed"], "embedded": m.total(m.RECORDS_EMBEDDED),
        "cache_hits": m.total(m.RECORDS_CACHE_HIT), "skipped": records["skipped"],
        "upserted": records["upserted"], "dead_lettered": records["dead_lettered"],
        "superseded": records["superseded"], "dropped": records["dropped"],
        "forward_passes": m.total(m.EMBED_SECONDS, "_count"), "embed_s": m.total(m.EMBED_SECONDS, "_sum"),
        "padded_tokens": m.total(m.BATCH_TOKENS, "_sum"), "batch_texts": m.total(m.BATCH_RECORDS, "_sum"),
        "milvus_write_s": m.total(m.WRITE_SECONDS, "_sum"), "milvus_writes": m.total(m.WRITE_SECONDS, "_count"),
        "redis_s": m.total(m.CACHE_SECONDS, "_sum"), "prepare_s": m.total(m.PREPARE_SECONDS, "_sum"),
    }


def metrics_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: round(after[k] - before[k], 4) for k in before}


# -- the environment: topics, Redis keys, Milvus Lite files -----------------------------------------


class Services:
    """Creates what the bench needs under unique names, and removes it again."""

    def __init__(self, settings: Settings, redis_url: str, partitions: int, keep: bool,
                 server: str | None = None) -> None:
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
            producer = KafkaProducer(**client_kwargs(self.settings.kafka), acks="all", linger_ms=20,
                                     max_request_size=8 << 20)
            try:
                futures = [producer.send(topic, key=k, value=v) for k, v in (r.kafka() for r in records)]
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
            log.warning("keeping topics %s, Redis prefixes %s, collections %s and %s", self.topics,
                        self.redis_prefixes, self.collections, self.tmp)
            return
        if self.server is not None and self.collections:
            from ingestor.lite import milvus_client

            try:
                with milvus_client(self.server) as client:
                    for name in self.collections:
                        if client.has_collection(name):
                            client.drop_collection(name)
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
    """Every row of a collection (a Lite file or a server), these fields only; an iterator, so
    duplicates would show."""
    from ingestor.lite import milvus_client

    with milvus_client(uri, in_process) as client:
        if not client.has_collection(collection):
            return []
        client.load_collection(collection)  # a reopened Lite file starts with it released
        it = client.query_iterator(collection, batch_size=1000, filter="", output_fields=fields,
                                   consistency_level="Strong")
        rows: list[dict[str, Any]] = []
        while page := it.next():
            rows.extend(page)
        it.close()
        return rows


def milvus_ids(uri: str, collection: str, in_process: bool = False) -> list[str]:
    """Every id in a collection (duplicates would show)."""
    return [r["id"] for r in milvus_rows(uri, collection, ["id"], in_process)]


# -- (a) plain encode ----------------------------------------------------------------------------


def encode_seconds(model: Any, texts: list[str], batch_size: int) -> tuple[float, Any]:
    started = time.perf_counter()
    vectors = model.encode(texts, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)
    return time.perf_counter() - started, vectors


def warm_up(model: Any, texts: list[str]) -> None:
    """A few batches, short and long, so no timed variant pays for first-call set-up."""
    ordered = sorted(texts, key=len)
    sample = ordered[:32] + ordered[len(ordered) // 2:len(ordered) // 2 + 32] + ordered[-32:]
    model.encode(sample, batch_size=32, convert_to_numpy=True, show_progress_bar=False)


def corpus_tokens(embedder: Any, texts: list[str]) -> int:
    """Tokens the texts occupy in forward passes: after truncation, special tokens included."""
    return sum(p.tokens for p in embedder.prepare(texts))


def _kind(model: Any) -> str:
    return "cpu" if str(getattr(model, "device", "cpu")).startswith("cpu") else "gpu"


def tune_subset(texts: list[str], size: int) -> list[str]:
    """An evenly strided subset, so it has the corpus's mix of lengths."""
    if len(texts) <= size:
        return list(texts)
    step = len(texts) / size
    return [texts[int(i * step)] for i in range(size)]


def bench_plain(model: Any, texts: list[str], tokens: int) -> dict[str, Any]:
    """Batch sizes tried on a subset; the best two then on the whole corpus, the faster counts."""
    kind = _kind(model)
    subset = tune_subset(texts, TUNE_SUBSET[kind])
    tried = {}
    for bs in BATCH_SIZES[kind]:
        seconds, _ = encode_seconds(model, subset, bs)
        tried[bs] = round(len(subset) / seconds, 2)
    finalists = sorted(tried, key=lambda b: tried[b], reverse=True)[:2]
    full: dict[int, tuple[float, Any]] = {}
    for bs in finalists:
        full[bs] = encode_seconds(model, texts, bs)
    best = min(full, key=lambda b: full[b][0])
    seconds, vectors = full[best]
    return {
        "records": len(texts), "tokens": tokens, "seconds": round(seconds, 3),
        "texts_per_s": rate(len(texts), seconds), "tokens_per_s": rate(tokens, seconds),
        "batch_size": best, "tried_texts_per_s": {str(k): v for k, v in tried.items()},
        "full_corpus_texts_per_s": {str(k): round(len(texts) / v[0], 2) for k, v in full.items()},
        "tune_subset": len(subset), "_vectors": vectors,
    }


# -- the sink alone --------------------------------------------------------------------------------


def sink_rate(uri: str, collection: str, rows: int, chunk: int = 512, dimension: int = 384) -> dict[str, Any]:
    """How many rows per second the sink takes through `MilvusSink.upsert`, alone: no Kafka, no
    model, no Redis. The pipeline can go no faster: read (f) against it. Rows carry stored sample
    texts and metadata, as the pipeline's do; the CPU per row of a Lite child (when the sink is a
    Lite file) and of this process are reported beside the rate."""
    import numpy as np

    from ingestor.config import MilvusSettings
    from ingestor.sink import Entity, MilvusSink

    texts = [r.text for r in load_corpus(SAMPLE)[:chunk]]
    vectors = np.random.default_rng(0).standard_normal((chunk, dimension)).astype(np.float32)
    chunks = [[Entity(f"r{i}-{j}", vectors[j], texts[j % len(texts)], {"source": "sink-rate", "j": j}, "0" * 64,
                      "m", False, "t", 0, i * chunk + j) for j in range(chunk)]
              for i in range(max(2, rows // chunk))]
    sink = MilvusSink(MilvusSettings(uri=uri, collection=collection))
    sink.connect()
    sink.ensure_collection(dimension, "m")
    try:
        sink.upsert(chunks[0])  # the first write builds the collection's state: not timed
        child = next(iter(child_pids() or ()), None) if not uri.startswith("http") else None

        def server_cpu() -> float:
            return (cpu_seconds(child) or 0.0) if child else 0.0

        written = sum(len(c) for c in chunks[1:])
        k0, s0, t0 = server_cpu(), time.process_time(), time.perf_counter()
        for c in chunks[1:]:
            sink.upsert(c)
        seconds = time.perf_counter() - t0
        return {"rows": written, "chunk": chunk, "seconds": round(seconds, 3), "rows_per_s": rate(written, seconds),
                "lite_child_cpu_us_per_row": round(1e6 * (server_cpu() - k0) / written, 1) if child else None,
                "client_cpu_us_per_row": round(1e6 * (time.process_time() - s0) / written, 1)}
    finally:
        sink.close()


# -- (b) the naive loop ---------------------------------------------------------------------------


def bench_naive(model: Any, settings: Settings, svc: Services, records: list[Record], tokens: int,
                dimension: int, timeout_s: float = 3600.0) -> dict[str, Any]:
    from kafka import KafkaConsumer
    from pymilvus import MilvusClient

    from ingestor.kafka_common import client_kwargs

    topic = svc.topic("naive", records)
    uri = svc.milvus_uri("naive")
    collection = svc.collection("naive")
    client = MilvusClient(uri=uri)
    client.create_collection(collection, dimension=dimension, id_type="string", max_length=512,
                             metric_type="COSINE", consistency_level="Strong")
    consumer = KafkaConsumer(
        topic, **client_kwargs(settings.kafka), group_id=svc.name("naive-group"), auto_offset_reset="earliest",
        enable_auto_commit=False, max_poll_records=NAIVE_BATCH,
    )
    latencies: list[float] = []
    created = time.perf_counter()
    started: float | None = None
    done = 0
    try:
        deadline = time.monotonic() + timeout_s
        while done < len(records):
            if time.monotonic() > deadline:
                raise RuntimeError(f"naive loop: only {done} of {len(records)} records after {timeout_s}s")
            polled = consumer.poll(timeout_ms=1000, max_records=NAIVE_BATCH)
            batch = [r for rs in polled.values() for r in rs]
            if not batch:
                continue
            if started is None:
                started = time.perf_counter()
            docs = [json.loads(r.value) for r in batch]
            vectors = model.encode([d["text"] for d in docs], batch_size=NAIVE_BATCH, convert_to_numpy=True,
                                   show_progress_bar=False)
            client.insert(collection, [{"id": d["id"], "vector": v.tolist(), "text": d["text"]}
                                    for d, v in zip(docs, vectors)])
            consumer.commit()
            now_ms = time.time() * 1000
            latencies += [now_ms - r.timestamp for r in batch]
            done += len(batch)
        ended = time.perf_counter()
    finally:
        consumer.close(autocommit=False)
        client.close()
    seconds = ended - (started or ended)
    return {
        "records": done, "tokens": tokens, "seconds": round(seconds, 3),
        "texts_per_s": rate(done, seconds), "tokens_per_s": rate(tokens, seconds),
        "startup_s": round((started or ended) - created, 3),
        "latency_p50_ms": percentile(latencies, 50), "latency_p99_ms": percentile(latencies, 99),
    }


# -- (c), (d), (e): the daemon ----------------------------------------------------------------------


class _Probe:
    """Collects the record_latency hook's figures and the times around them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.first_delivery: float | None = None
        self.last_write: float | None = None

    def record(self, items: list[Any]) -> None:
        now = time.perf_counter()
        with self.lock:
            self.latencies += [float(i.written_ms - i.timestamp_ms) for i in items]
            self.last_write = now

    def written(self) -> int:
        with self.lock:
            return len(self.latencies)


def timed_daemon(settings: Settings, embedder: Any, probe: _Probe, until_caught_up: bool) -> Any:
    from ingestor.daemon import Daemon

    class TimedDaemon(Daemon):
        def start(self) -> None:
            super().start()
            assert self.source is not None
            deliver = self.source.deliver

            def timed(items: list[Any]) -> None:
                if probe.first_delivery is None:
                    probe.first_delivery = time.perf_counter()
                deliver(items)

            self.source.deliver = timed

    return TimedDaemon(settings, until_caught_up=until_caught_up, embedder=embedder, record_latency=probe.record)


class NullForward:
    """An embedder whose forward pass returns a constant unit vector at once; everything else
    (tokenising, padding, identity, dimension, device and so its batch limits) is the real one's."""

    def __init__(self, real: Any) -> None:
        import numpy as np

        self._real = real
        self.identity = f"{real.identity}+null-forward"  # its vectors must never meet real ones
        self._unit = np.full(real.dimension, real.dimension ** -0.5, dtype=np.float32)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def forward(self, features: dict[str, Any]) -> Any:
        return self._vectors(int(next(iter(features.values())).shape[0]))

    def encode(self, texts: list[str]) -> Any:
        return self._vectors(len(texts))

    def _vectors(self, n: int) -> Any:
        import numpy as np

        return np.tile(self._unit, (n, 1))


def ceiling_records(corpus: list[Record], n: int) -> list[Record]:
    """`n` records cycling through the corpus, each with an id and a text of its own (a repeated
    text would come from the cache and skip the very stages this measures)."""
    out = []
    for i in range(n):
        cycle, rec = divmod(i, len(corpus))
        source = corpus[rec]
        text = source.text if cycle == 0 else f"{source.text} ({cycle})"
        out.append(Record(f"ceiling-{cycle}-{source.id}", text, source.metadata))
    return out


def bench_ceiling(settings: Settings, embedder: Any, records: list[Record], tokens: int) -> dict[str, Any]:
    out = bench_daemon(settings, NullForward(embedder), records, tokens)
    d = out["diagnostics"]
    shares = {"batcher (cache lookup, tokenising, padding)": d.get("batcher_share"),
              "Milvus writes": d.get("milvus_write_share"), "Redis": d.get("redis_share")}
    busiest = max(((k, v) for k, v in shares.items() if v is not None), key=lambda kv: kv[1], default=None)
    out["busiest_stage"] = None if busiest is None else {"stage": busiest[0], "share": busiest[1]}
    return out


def daemon_settings(base: Settings, topic: str, group: str, milvus_uri: str, collection: str,
                    redis_url: str, redis_prefix: str) -> Settings:
    from pydantic import SecretStr

    return base.model_copy(update={
        "kafka": base.kafka.model_copy(update={"topics": [topic], "group_id": group}),
        "milvus": base.milvus.model_copy(update={"uri": milvus_uri, "collection": collection}),
        "redis": base.redis.model_copy(update={"url": SecretStr(redis_url), "key_prefix": redis_prefix}),
        "metrics": base.metrics.model_copy(update={"port": 0}),
    })


def bench_daemon(settings: Settings, embedder: Any, records: list[Record], tokens: int) -> dict[str, Any]:
    probe = _Probe()
    daemon = timed_daemon(settings, embedder, probe, until_caught_up=True)
    before = metrics_snapshot()
    created = time.perf_counter()
    rc = daemon.run()
    ended = time.perf_counter()
    counts = metrics_delta(before, metrics_snapshot())
    if rc != 0:
        raise RuntimeError(f"the daemon exited {rc}")
    start = probe.first_delivery or created
    seconds = (probe.last_write or ended) - start
    n = len(records)
    diagnostics = {
        "model_busy_share": ratio(counts["embed_s"], seconds),
        # Padded tokens through the model per real token of the corpus (cache hits make it < 1).
        "padding_overhead": ratio(counts["padded_tokens"], tokens),
        "mean_texts_per_forward_pass": ratio(counts["batch_texts"], counts["forward_passes"]),
        "mean_padded_tokens_per_forward_pass": ratio(counts["padded_tokens"], counts["forward_passes"]),
        "batcher_share": ratio(counts["prepare_s"], seconds),
        "milvus_write_share": ratio(counts["milvus_write_s"], seconds),
        "redis_share": ratio(counts["redis_s"], seconds),
    }
    return {
        "records": n, "tokens": tokens, "seconds": round(seconds, 3),
        "texts_per_s": rate(n, seconds), "tokens_per_s": rate(tokens, seconds),
        "startup_s": round(start - created, 3), "wall_s": round(ended - created, 3),
        "latency_p50_ms": percentile(probe.latencies, 50), "latency_p99_ms": percentile(probe.latencies, 99),
        "written": probe.written(), "counts": counts, "diagnostics": diagnostics,
    }


def bench_steady(settings: Settings, embedder: Any, records: list[Record], svc: Services, seconds: float,
                 per_second: float, trace_memory: bool = False) -> dict[str, Any]:
    from kafka import KafkaProducer

    from ingestor.kafka_common import client_kwargs

    topic = settings.kafka.topics[0]
    probe = _Probe()
    daemon = timed_daemon(settings, embedder, probe, until_caught_up=False)
    exit_codes: list[int] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            exit_codes.append(daemon.run())
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    thread = threading.Thread(target=run, name="bench-steady-daemon", daemon=True)
    before = metrics_snapshot()
    thread.start()
    # Publish only once the daemon owns its partitions: a group join is not steady state.
    deadline = time.monotonic() + 120
    while not (daemon.source is not None and daemon.source.tracker.owned()):
        if errors or not thread.is_alive() or time.monotonic() > deadline:
            daemon.stop_requested.set()
            raise RuntimeError(f"the steady-load daemon did not get its partitions: {errors or exit_codes}")
        time.sleep(0.05)
    total = max(1, int(round(seconds * per_second)))
    producer = KafkaProducer(**client_kwargs(settings.kafka), acks=1, linger_ms=0, max_request_size=8 << 20)
    published = 0
    memory = MemorySampler(interval_s=max(1.0, min(10.0, seconds / 60)), trace_python=trace_memory,
                           expected_s=seconds)
    try:
        with memory:
            started = time.perf_counter()
            for i in range(total):
                delay = started + i / per_second - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                rec = records[i % len(records)]
                key, value = Record(f"steady-{i}-{rec.id}", rec.text, rec.metadata).kafka()
                producer.send(topic, key=key, value=value)
                published += 1
            producer.flush()
            produced_s = time.perf_counter() - started
    finally:
        producer.close()
    deadline = time.monotonic() + max(60.0, seconds)
    while probe.written() < published and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.05)
    daemon.stop_requested.set()
    thread.join(timeout=settings.runtime.shutdown_timeout_s + 30)
    counts = metrics_delta(before, metrics_snapshot())
    if errors:
        raise RuntimeError(f"the steady-load daemon failed: {errors[0]!r}") from errors[0]
    bound = settings.batch.max_wait_ms + 500
    p99 = percentile(probe.latencies, 99)
    return {
        "records": published, "written": probe.written(), "seconds": round(produced_s, 3),
        "offered_per_s": rate(published, produced_s), "exit_code": exit_codes[0] if exit_codes else None,
        "latency_p50_ms": percentile(probe.latencies, 50), "latency_p99_ms": p99,
        "latency_max_ms": max(probe.latencies) if probe.latencies else None,
        "latency_bound_ms": bound, "within_bound": p99 is not None and p99 <= bound,
        "memory": memory.summary(), "counts": counts,
    }


# -- precision comparison ----------------------------------------------------------------------------


def compare_precision(base_model: ModelSettings, other: str, texts: list[str],
                      torch_threads: int | None = None) -> dict[str, Any]:
    """Plain encode of `texts` in torch fp32 (key "fp32") and in the setting `other` (a label such
    as bf16 or onnx-int8), each at its best batch size."""
    import numpy as np

    from ingestor.config import parse_variant
    from ingestor.embedder import Embedder

    variants = {"fp32": base_model.model_copy(update={"backend": "torch", "precision": "fp32"}),
                other: base_model.model_copy(update=parse_variant(other))}
    results: dict[str, Any] = {}
    vectors: dict[str, Any] = {}
    tokens = 0
    for label, model_settings in variants.items():
        embedder = Embedder(model_settings, torch_threads)
        if label == "fp32":
            tokens = corpus_tokens(embedder, texts)
        warm_up(embedder.model, texts)
        out = with_cpu(lambda: bench_plain(embedder.model, texts, tokens))
        vectors[label] = np.asarray(out.pop("_vectors"), dtype=np.float32)
        results[label] = out
        del embedder
    a, b = vectors["fp32"], vectors[other]
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    cosine = (a * b).sum(axis=1)
    return {
        "fp32": results["fp32"], other: results[other], "other": other, "tokens": tokens,
        "speedup": ratio(results[other]["texts_per_s"], results["fp32"]["texts_per_s"]),
        "cosine_min": float(cosine.min()), "cosine_mean": float(cosine.mean()),
    }


# -- the whole run ------------------------------------------------------------------------------------


def run_bench(settings: Settings, options: BenchOptions, progress: Callable[[str], None] = lambda s: None,
              embedder: Any = None) -> dict[str, Any]:
    """Run every variant; returns all figures (JSON-ready)."""
    import torch

    from ingestor.config import parse_variant
    from ingestor.embedder import Embedder, resolve_device

    corpus = load_corpus(options.input)
    if not corpus:
        raise ValueError(f"no records in {options.input}")
    backend = settings.model.backend
    if options.compare_precision:
        backend = parse_variant(options.compare_precision)["backend"]  # onnx/openvino: compare on the CPU
    device = resolve_device(settings.model.device, backend)
    limit = options.limit or default_limit(len(corpus), device)
    limit = max(1, min(limit, len(corpus)))
    head = corpus[:limit]
    texts = [r.text for r in head]
    result: dict[str, Any] = {
        "device": device,
        "device_name": torch.cuda.get_device_name(device) if device.startswith("cuda") else _cpu_name(),
        "precision": settings.model.variant, "model": settings.model.name,
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "input": str(options.input), "corpus_records": len(corpus), "limit": limit,
        "load_average": {"cpus": os.cpu_count(), "before": [round(x, 2) for x in os.getloadavg()]},
    }

    if options.compare_precision:
        other = options.compare_precision
        progress(f"plain encode of {limit} texts in torch fp32 and in {other} on {device} (the model loads twice; "
                 "a backend's first use exports its weights)")
        comparison = compare_precision(settings.model.model_copy(update={"device": device}), other, texts,
                                       settings.runtime.torch_threads)
        result["precision"] = f"torch fp32 vs {other}"
        result["tokens"] = comparison["tokens"]
        result["precision_comparison"] = comparison
        result["peak_rss_mib"] = peak_rss_mib()
        result["load_average"]["after"] = [round(x, 2) for x in os.getloadavg()]
        result["targets"] = {k: v for k, v in TARGETS.items() if k.startswith("precision")}
        return result

    if embedder is None:
        progress(f"loading the model on {device} ({settings.model.precision})")
        embedder = Embedder(settings.model.model_copy(update={"device": device}), settings.runtime.torch_threads)
    model = embedder.model
    tokens = corpus_tokens(embedder, texts)
    result["tokens"] = tokens
    result["batch_settings"] = settings.batch.for_device(device).model_dump()
    redis_url = settings.redis.url.get_secret_value() if settings.redis.url is not None else DEFAULT_REDIS_URL
    svc = Services(settings, redis_url, options.partitions, options.keep, options.milvus_uri)
    result["sink"] = options.milvus_uri or "Milvus Lite (a file per variant, served from a child process)"
    result["run_id"] = svc.run_id
    try:
        progress("warming the model up")
        warm_up(model, texts)

        sizes = BATCH_SIZES[_kind(model)]
        progress(f"(a) plain encode of {limit} texts: trying batch sizes {', '.join(map(str, sizes))}")
        plain = with_cpu(lambda: bench_plain(model, texts, tokens))
        plain.pop("_vectors")
        result["plain"] = plain

        if not options.skip_naive:
            progress(f"(b) naive consume → encode(batch {NAIVE_BATCH}) → insert → commit of {limit} records")
            result["naive"] = with_cpu(lambda: bench_naive(model, settings, svc, head, tokens, embedder.dimension))

        progress(f"the sink alone: {options.sink_rows} rows into {result['sink']}")
        result["sink_alone"] = sink_rate(svc.milvus_uri("sink"), svc.collection("sink"), options.sink_rows,
                                         dimension=embedder.dimension)

        progress(f"(c) the daemon on {limit} records (cold cache)")
        uri = svc.milvus_uri("pipeline")
        bench_collection = svc.collection("bench")
        prefix = svc.redis_prefix("cache")
        topic_c = svc.topic("pipeline", head)
        s_c = daemon_settings(settings, topic_c, svc.name("pipeline-group"), uri, bench_collection, redis_url, prefix)
        pipeline = with_cpu(lambda: bench_daemon(s_c, embedder, head, tokens))
        ids_c = milvus_ids(uri, bench_collection, settings.milvus.lite_in_process)
        pipeline["milvus_rows"] = len(ids_c)
        pipeline["milvus_ids_match"] = len(ids_c) == len(set(ids_c)) and set(ids_c) == {r.id for r in head}
        result["pipeline"] = pipeline

        warm_records = warm_corpus(corpus, head)
        n_repeat = sum(1 for r in warm_records if r.id.startswith("warm-rep-"))
        warm_tokens = corpus_tokens(embedder, [r.text for r in warm_records])
        progress(f"(d) the daemon on {len(warm_records)} records, {n_repeat} repeating texts of (c)")
        topic_d = svc.topic("warm", warm_records)
        s_d = daemon_settings(settings, topic_d, svc.name("warm-group"), uri, bench_collection, redis_url, prefix)
        warm = with_cpu(lambda: bench_daemon(s_d, embedder, warm_records, warm_tokens))
        ids_all = milvus_ids(uri, bench_collection, settings.milvus.lite_in_process)
        warm["repeated_records"] = n_repeat
        warm["new_records"] = len(warm_records) - n_repeat
        warm["cache_hits"] = int(warm["counts"]["cache_hits"])
        warm["cache_hit_share"] = ratio(warm["cache_hits"], len(warm_records))
        warm["milvus_rows"] = len(ids_all)
        warm["milvus_ids_match"] = (len(ids_all) == len(set(ids_all))
                                    and set(ids_all) == {r.id for r in head} | {r.id for r in warm_records})
        result["warm"] = warm

        # The ceiling once more, after the services' variants: on a machine that others share,
        # the faster of the two runs is the fairer ceiling (both are reported).
        progress(f"(a) plain encode again, batch size {plain['batch_size']}")
        again = with_cpu(lambda: {"seconds": encode_seconds(model, texts, plain["batch_size"])[0]})
        plain["runs"] = [{k: plain[k] for k in ("seconds", "cpu_s", "others_cpu_share") if k in plain},
                         {k: round(v, 3) for k, v in again.items()}]
        if again["seconds"] < plain["seconds"]:
            plain.update(seconds=round(again["seconds"], 3), texts_per_s=rate(limit, again["seconds"]),
                         tokens_per_s=rate(tokens, again["seconds"]), cpu_s=again["cpu_s"],
                         others_cpu_share=again.get("others_cpu_share"))

        if options.steady_seconds > 0:
            progress(f"(e) steady load: {options.steady_rate:g} records/s for {options.steady_seconds:g}s")
            topic_e = svc.topic("steady", [])
            s_e = daemon_settings(settings, topic_e, svc.name("steady-group"), uri, svc.collection("steady"),
                                  redis_url, svc.redis_prefix("steady"))
            result["steady"] = with_cpu(lambda: bench_steady(s_e, embedder, corpus, svc, options.steady_seconds,
                                                             options.steady_rate, options.trace_memory))

        if not options.skip_ceiling:
            records_f = ceiling_records(corpus, 4 * limit)
            tokens_f = corpus_tokens(embedder, [r.text for r in records_f])
            progress(f"(f) the daemon on {len(records_f)} records with a null forward pass (the pipeline's ceiling)")
            topic_f = svc.topic("ceiling", records_f)
            s_f = daemon_settings(settings, topic_f, svc.name("ceiling-group"), svc.milvus_uri("ceiling"),
                                  svc.collection("ceiling"), redis_url, svc.redis_prefix("ceiling"))
            ceiling = with_cpu(lambda: bench_ceiling(s_f, embedder, records_f, tokens_f))
            # CPU of this process per record, all threads, set-up included: the pipeline's own cost.
            ceiling["cpu_us_per_record"] = round(1e6 * ceiling["cpu_s"] / len(records_f), 1)
            result["ceiling"] = ceiling
    finally:
        svc.cleanup()

    naive = result.get("naive", {})
    result["ratios"] = {
        "pipeline_vs_plain": ratio(pipeline["texts_per_s"], plain["texts_per_s"]),
        "pipeline_vs_naive": ratio(pipeline["texts_per_s"], naive.get("texts_per_s")),
        "warm_vs_cold": ratio(warm["texts_per_s"], pipeline["texts_per_s"]),
        "ceiling_vs_plain": ratio(result.get("ceiling", {}).get("texts_per_s"), plain["texts_per_s"]),
    }
    result["targets"] = {k: v for k, v in TARGETS.items() if not k.startswith("precision")}
    result["peak_rss_mib"] = peak_rss_mib()
    result["load_average"]["after"] = [round(x, 2) for x in os.getloadavg()]
    return result


def with_cpu(run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Adds, over the whole call (set-up included): `cpu_s`, the CPU seconds of this process (all
    threads); `children_cpu_s`, those of its child processes (the Milvus Lite server); and
    `others_cpu_share`, the share of the machine's CPU time that other processes used meanwhile
    (Linux; a benchmark on a busy machine is noisy, and this says how busy)."""
    wall0, own0, busy0, kids0 = time.perf_counter(), time.process_time(), _busy_cpu_s(), _children_cpu_s()
    out = run()
    wall, own, busy = time.perf_counter() - wall0, time.process_time() - own0, _busy_cpu_s()
    kids = _children_cpu_s() - kids0
    out["cpu_s"] = round(own, 3)
    out["children_cpu_s"] = round(kids, 3)
    if busy is not None and busy0 is not None and wall > 0:
        out["others_cpu_share"] = round(max(0.0, (busy - busy0) - own - kids) / (wall * (os.cpu_count() or 1)), 3)
    return out


def _children_cpu_s() -> float:
    """CPU seconds of this process's children so far: the finished ones it waited for, and the
    live ones (from /proc; Linux)."""
    t = os.times()
    live = (cpu_seconds(pid) for pid in child_pids() or ())
    return t.children_user + t.children_system + sum(s for s in live if s is not None)


def _busy_cpu_s() -> float | None:
    """CPU seconds all processes spent so far (from /proc/stat), or None off Linux."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def warm_corpus(corpus: list[Record], head: list[Record]) -> list[Record]:
    """(d)'s records: half repeat texts of `head` (new ids), half new texts; interleaved."""
    half = max(1, len(head) // 2)
    repeats = [Record(f"warm-rep-{i}-{r.id}", r.text, r.metadata) for i, r in enumerate(head[::2][:half])]
    unused = corpus[len(head):len(head) + half]
    fresh = [Record(f"warm-new-{i}-{r.id}", r.text, r.metadata) for i, r in enumerate(unused)]
    for i in range(len(fresh), half):  # the corpus ran out: (c)'s texts, changed
        r = head[(2 * i + 1) % len(head)]
        fresh.append(Record(f"warm-new-{i}-{r.id}", f"{r.text} (revised)", r.metadata))
    out: list[Record] = []
    for a, b in zip(repeats, fresh):
        out += [a, b]
    return out


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "cpu"


# -- presentation ----------------------------------------------------------------------------------------


def public(result: dict[str, Any]) -> dict[str, Any]:
    """The figures without private entries (vectors)."""
    return json.loads(json.dumps(result, default=lambda o: o.item() if hasattr(o, "item") else None))


def _f(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def render(result: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    rss = result.get("peak_rss_mib", {})
    console.print(f"device [bold]{result['device']}[/bold] ({result['device_name']}), precision "
                  f"[bold]{result['precision']}[/bold], torch {result['torch']} with {result['torch_threads']} "
                  f"thread(s); {result['limit']} of {result['corpus_records']} records, {result['tokens']:,} tokens; "
                  f"peak RSS {_f(rss.get('self'))} MiB")
    load = result.get("load_average", {})
    if "after" in load:
        busy = max(load["before"][0], load["after"][0]) > load["cpus"] + 0.5
        console.print(f"load average (1/5/15 min) {load['before']} before, {load['after']} after, on {load['cpus']} "
                      f"CPU(s){': other processes competed for the CPU, so the figures are noisy' if busy else ''}",
                      highlight=False)
    if "precision_comparison" in result:
        cmp_ = result["precision_comparison"]
        other = cmp_["other"]
        table = Table(title=f"plain encode, torch fp32 vs {other}")
        for col in ("setting", "batch size", "seconds", "texts/s", "tokens/s", "others' CPU"):
            table.add_column(col, justify="right", no_wrap=True)
        for p in ("fp32", other):
            r = cmp_[p]
            share = r.get("others_cpu_share")
            table.add_row("torch fp32" if p == "fp32" else p, str(r["batch_size"]), _f(r["seconds"], 2),
                          _f(r["texts_per_s"]), _f(r["tokens_per_s"], 0), "–" if share is None else f"{100 * share:.0f}%")
        console.print(table)
        target = TARGETS["precision_int8_min_cosine" if other.endswith("int8") else "precision_min_cosine"]
        console.print(f"speed-up {other}/torch fp32: [bold]{_f(cmp_['speedup'], 2)}×[/bold] (target ≥ "
                      f"{TARGETS['precision_speedup']}×); cosine to torch fp32: min {cmp_['cosine_min']:.5f}, mean "
                      f"{cmp_['cosine_mean']:.5f} (target min ≥ {target})")
        return
    sink = result.get("sink_alone")
    if sink:
        console.print(f"sink: {result.get('sink')}; alone it took [bold]{_f(sink['rows_per_s'], 0)}[/bold] rows/s "
                      f"({sink['rows']} rows in upserts of {sink['chunk']}, {_f(sink['client_cpu_us_per_row'])} µs of "
                      f"this process's CPU per row)", highlight=False)
    table = Table(title="throughput and latency")
    for col in ("variant", "records", "seconds", "texts/s", "tokens/s", "p50 ms", "p99 ms"):
        table.add_column(col, justify="right" if col != "variant" else "left", no_wrap=True)
    notes: list[str] = []
    plain = result["plain"]
    table.add_row("a plain", _f(plain["records"]), _f(plain["seconds"], 2), _f(plain["texts_per_s"]),
                  _f(plain["tokens_per_s"], 0), "–", "–")
    tried = ", ".join(f"{k}: {v}" for k, v in plain["tried_texts_per_s"].items())
    full = ", ".join(f"{k}: {v}" for k, v in plain["full_corpus_texts_per_s"].items())
    runs = ", ".join(f"{_f(plain['records'] / r['seconds'])}" for r in plain.get("runs", []))
    notes.append(f"a: encode at batch size {plain['batch_size']} (texts/s on {plain['tune_subset']} texts: {tried}; "
                 f"whole corpus: {full}; at the best size before and after b-d: {runs}; the faster counts)")
    busy = {k: result[k].get("others_cpu_share") for k in ("plain", "naive", "pipeline", "warm", "steady")
            if k in result and result[k].get("others_cpu_share") is not None}
    if busy:
        notes.append("share of the CPU other processes took meanwhile: "
                     + ", ".join(f"{k} {100 * v:.0f}%" for k, v in busy.items()))
    if "naive" in result:
        n = result["naive"]
        table.add_row("b naive", _f(n["records"]), _f(n["seconds"], 2), _f(n["texts_per_s"]),
                      _f(n["tokens_per_s"], 0), _f(n["latency_p50_ms"], 0), _f(n["latency_p99_ms"], 0))
        notes.append(f"b: poll {NAIVE_BATCH} → encode in arrival order → insert → commit")
    c = result["pipeline"]
    table.add_row("c pipeline", _f(c["records"]), _f(c["seconds"], 2), _f(c["texts_per_s"]),
                  _f(c["tokens_per_s"], 0), _f(c["latency_p50_ms"], 0), _f(c["latency_p99_ms"], 0))
    diag = c.get("diagnostics", {})
    ids_c = "match" if c["milvus_ids_match"] else "DO NOT MATCH"
    notes.append(f"c: cold cache; {c['milvus_rows']} rows in Milvus, ids {ids_c}; "
                 f"model busy {_f(100 * (diag.get('model_busy_share') or 0), 0)}% of the span, padded/real tokens "
                 f"{_f(diag.get('padding_overhead'), 2)}, {_f(diag.get('mean_texts_per_forward_pass'))} texts per "
                 f"forward pass, Milvus writes {_f(100 * (diag.get('milvus_write_share') or 0), 0)}%; "
                 f"start-up {_f(c.get('startup_s'), 1)} s (not timed)")
    d = result["warm"]
    table.add_row("d warm", _f(d["records"]), _f(d["seconds"], 2), _f(d["texts_per_s"]),
                  _f(d["tokens_per_s"], 0), _f(d["latency_p50_ms"], 0), _f(d["latency_p99_ms"], 0))
    notes.append(f"d: {d['repeated_records']} records repeat texts of c, {d['new_records']} new; "
                 f"{d['cache_hits']} cache hits; ids {'match' if d['milvus_ids_match'] else 'DO NOT MATCH'}")
    if "steady" in result:
        e = result["steady"]
        table.add_row("e steady", _f(e["records"]), _f(e["seconds"], 2), "–", "–",
                      _f(e["latency_p50_ms"], 0), _f(e["latency_p99_ms"], 0))
        notes.append(f"e: {_f(e['offered_per_s'])} records/s offered, {e['written']} written; p99 "
                     f"{'within' if e['within_bound'] else 'OVER'} max_wait_ms + 500 = {e['latency_bound_ms']} ms")
        notes.extend(memory_notes(e.get("memory", {})))
    if "ceiling" in result:
        f = result["ceiling"]
        table.add_row("f ceiling", _f(f["records"]), _f(f["seconds"], 2), _f(f["texts_per_s"]),
                      _f(f["tokens_per_s"], 0), _f(f["latency_p50_ms"], 0), _f(f["latency_p99_ms"], 0))
        diag = f.get("diagnostics", {})
        busiest = f.get("busiest_stage") or {}
        notes.append(f"f: null forward pass, {f['written']} written; busiest stage {busiest.get('stage', '–')} "
                     f"({_f(100 * (busiest.get('share') or 0), 0)}% of the span; batcher "
                     f"{_f(100 * (diag.get('batcher_share') or 0), 0)}%, Milvus writes "
                     f"{_f(100 * (diag.get('milvus_write_share') or 0), 0)}%, Redis "
                     f"{_f(100 * (diag.get('redis_share') or 0), 0)}%); this process's CPU "
                     f"{_f(f.get('cpu_us_per_record'), 0)} µs per record; f / a "
                     f"{_f(result['ratios'].get('ceiling_vs_plain'), 2)}{_ceiling_verdict(result['ratios'].get('ceiling_vs_plain'))}")
    console.print(table)
    for note in notes:
        console.print(note, highlight=False)
    ratios = Table(title="ratios (same run, same device)")
    for col in ("ratio", "measured", "target", "met"):
        ratios.add_column(col, justify="right" if col != "ratio" else "left", no_wrap=True)
    names = {"pipeline_vs_plain": "c / a", "pipeline_vs_naive": "c / b", "warm_vs_cold": "d / c"}
    for key, label in names.items():
        value = result["ratios"].get(key)
        target = TARGETS[key]
        ratios.add_row(label, _f(value, 2), f"≥ {target}", "–" if value is None else _f(value >= target))
    console.print(ratios)


GAUGE_NAMES = {"rss": "resident memory", "heap": "malloc heap in use", "python": "Python objects (tracemalloc)",
               "children": "child processes' resident memory (Milvus Lite)"}


def _ceiling_verdict(f_over_a: float | None) -> str:
    if f_over_a is None:
        return ""
    if f_over_a < 1:
        return ": below 1, the device would wait on the pipeline"
    return ": the pipeline around the model can carry more than the model"


def memory_notes(memory: dict[str, Any]) -> list[str]:
    notes = []
    for gauge, label in GAUGE_NAMES.items():
        m = memory.get(gauge, {})
        if "slope_mib_per_min" in m:
            notes.append(f"e: {label} {m['after_warmup_mib']} MiB after warm-up, {m['end_mib']} at the end, "
                         f"{m['min_after_warmup_mib']}–{m['max_after_warmup_mib']} in between (max {m['max_mib']}), "
                         f"slope {m['slope_mib_per_min']} MiB/min over {m['seconds']} s")
    for g in memory.get("python_growth", [])[:5]:
        notes.append(f"e: grew most after warm-up: {g['where']} +{g['grew_kib']} KiB ({g['blocks_grew']:+} blocks)")
    return notes


def write_json(result: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(public(result), indent=2, sort_keys=True) + "\n", encoding="utf-8")
