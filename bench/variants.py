"""The bench's variants, each measured on its own: (a) plain encode, (b) the naive loop, (c)/(d)
the daemon cold and warm, (e) steady load, (f) the ceiling with a null forward pass, the sink
alone, and the precision comparison. See `bench` for what each means."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

from bench.accounting import metrics_delta, metrics_snapshot, percentile, rate, ratio, with_cpu
from bench.corpus import kafka_message
from bench.memory import MemorySampler, child_pids, cpu_seconds
from bench.services import Services
from ingestor.config import ModelSettings, Settings
from ingestor.corpus import SAMPLE, Record, load_corpus
from ingestor.observer import Latency, Observer
from ingestor.records import Parsed

BATCH_SIZES = {"cpu": (16, 32, 64, 128), "gpu": (32, 64, 128, 256)}  # tried for the ceiling (a)


TUNE_SUBSET = {"cpu": 256, "gpu": 1024}  # texts they are tried on


NAIVE_BATCH = 64


STEADY_RATE = 20.0  # records per second in (e)


def encode_seconds(model: Any, texts: list[str], batch_size: int) -> tuple[float, Any]:
    started = time.perf_counter()
    vectors = model.encode(texts, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)
    return time.perf_counter() - started, vectors


def warm_up(model: Any, texts: list[str]) -> None:
    """A few batches, short and long, so no timed variant pays for first-call set-up."""
    ordered = sorted(texts, key=len)
    sample = ordered[:32] + ordered[len(ordered) // 2 : len(ordered) // 2 + 32] + ordered[-32:]
    model.encode(sample, batch_size=32, convert_to_numpy=True, show_progress_bar=False)


def corpus_tokens(embedder: Any, texts: list[str]) -> int:
    """Tokens the texts occupy in forward passes: after truncation, special tokens included."""
    return sum(p.tokens for p in embedder.prepare(texts))


def device_kind(model: Any) -> str:
    return "cpu" if str(getattr(model, "device", "cpu")).startswith("cpu") else "gpu"


def tune_subset(texts: list[str], size: int) -> list[str]:
    """An evenly strided subset, so it has the corpus's mix of lengths."""
    if len(texts) <= size:
        return list(texts)
    step = len(texts) / size
    return [texts[int(i * step)] for i in range(size)]


def bench_plain(model: Any, texts: list[str], tokens: int, records: int | None = None) -> dict[str, Any]:
    """Batch sizes tried on a subset; the best two then on the whole corpus, the faster counts.
    `texts` are what the daemon embeds for `records` records (more with chunking: their chunks);
    the rate is per record, as the daemon's is."""
    records = records or len(texts)
    kind = device_kind(model)
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
        "records": records,
        "texts": len(texts),
        "tokens": tokens,
        "seconds": round(seconds, 3),
        "texts_per_s": rate(records, seconds),
        "tokens_per_s": rate(tokens, seconds),
        "batch_size": best,
        "tried_texts_per_s": {str(k): v for k, v in tried.items()},
        "full_corpus_texts_per_s": {str(k): round(len(texts) / v[0], 2) for k, v in full.items()},
        "tune_subset": len(subset),
        "_vectors": vectors,
    }


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
    chunks = [
        [
            Entity(
                f"r{i}-{j}",
                vectors[j],
                texts[j % len(texts)],
                {"source": "sink-rate", "j": j},
                "0" * 64,
                "m",
                False,
                "t",
                0,
                i * chunk + j,
            )
            for j in range(chunk)
        ]
        for i in range(max(2, rows // chunk))
    ]
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
        return {
            "rows": written,
            "chunk": chunk,
            "seconds": round(seconds, 3),
            "rows_per_s": rate(written, seconds),
            "lite_child_cpu_us_per_row": round(1e6 * (server_cpu() - k0) / written, 1) if child else None,
            "client_cpu_us_per_row": round(1e6 * (time.process_time() - s0) / written, 1),
        }
    finally:
        sink.close()


def sink_alone(svc: Services, rows: int, dimension: int = 384) -> dict[str, Any]:
    """`sink_rate` into the bench's sink: a fresh Milvus Lite file, or on a server a collection of
    the run's own (dropped with the run's other names)."""
    return sink_rate(svc.milvus_uri("sink"), svc.collection("sink"), rows, dimension=dimension)


def bench_naive(
    model: Any,
    settings: Settings,
    svc: Services,
    records: list[Record],
    tokens: int,
    dimension: int,
    pieces: Callable[[Record], list[str]] | None = None,
    timeout_s: float = 3600.0,
) -> dict[str, Any]:
    """`pieces`: the texts to embed for a record (with chunking, its chunks: cut beforehand and not
    timed, so the naive loop does the daemon's forward work without its splitting cost)."""
    from kafka import KafkaConsumer
    from pymilvus import MilvusClient

    from ingestor.kafka_common import client_kwargs

    cut = {r.id: pieces(r) for r in records} if pieces is not None else None
    topic = svc.topic("naive", records)
    uri = svc.milvus_uri("naive")
    collection = svc.collection("naive")
    client = MilvusClient(uri=uri)
    client.create_collection(
        collection,
        dimension=dimension,
        id_type="string",
        max_length=512,
        metric_type="COSINE",
        consistency_level="Strong",
    )
    consumer = KafkaConsumer(
        topic,
        **client_kwargs(settings.kafka),
        group_id=svc.name("naive-group"),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_poll_records=NAIVE_BATCH,
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
            rows: list[tuple[str, str]] = []  # (entity id, text to embed)
            for d in docs:
                if cut is None:
                    rows.append((d["id"], d["text"]))
                else:
                    rows += [(f"{d['id']}#{i}", piece) for i, piece in enumerate(cut[d["id"]])]
            vectors = model.encode(
                [text for _, text in rows], batch_size=NAIVE_BATCH, convert_to_numpy=True, show_progress_bar=False
            )
            client.insert(
                collection, [{"id": i, "vector": v.tolist(), "text": text} for (i, text), v in zip(rows, vectors)]
            )
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
        "records": done,
        "tokens": tokens,
        "seconds": round(seconds, 3),
        "texts_per_s": rate(done, seconds),
        "tokens_per_s": rate(tokens, seconds),
        "startup_s": round((started or ended) - created, 3),
        "latency_p50_ms": percentile(latencies, 50),
        "latency_p99_ms": percentile(latencies, 99),
    }


class _Probe(Observer):
    """What a daemon tells its observer: the latencies of its writes, and the times around them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.first_delivery: float | None = None
        self.last_write: float | None = None
        # This process's CPU seconds (all threads) at the first delivery and at the last write.
        self.first_cpu: float | None = None
        self.last_cpu: float | None = None

    def delivered(self, items: list[Parsed]) -> None:
        if self.first_delivery is None:
            self.first_delivery, self.first_cpu = time.perf_counter(), time.process_time()

    def written(self, items: list[Latency]) -> None:
        now, cpu = time.perf_counter(), time.process_time()
        with self.lock:
            self.latencies += [float(i.written_ms - i.timestamp_ms) for i in items]
            self.last_write, self.last_cpu = now, cpu

    def span_cpu_s(self) -> float | None:
        """CPU this process spent from the first record handed over to the last write."""
        if self.first_cpu is None or self.last_cpu is None:
            return None
        return self.last_cpu - self.first_cpu

    def landed(self) -> int:
        with self.lock:
            return len(self.latencies)


def timed_daemon(settings: Settings, embedder: Any, probe: _Probe, until_caught_up: bool) -> Any:
    from ingestor.daemon import Daemon

    return Daemon(settings, until_caught_up=until_caught_up, embedder=embedder, observer=probe)


class NullForward:
    """An embedder whose forward pass returns a constant unit vector at once; everything else
    (tokenising, padding, identity, dimension, device and so its batch limits) is the real one's."""

    def __init__(self, real: Any) -> None:
        import numpy as np

        self._real = real
        self.identity = f"{real.identity}+null-forward"  # its vectors must never meet real ones
        self._unit = np.full(real.dimension, real.dimension**-0.5, dtype=np.float32)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def forward(self, features: dict[str, Any]) -> Any:
        return self._vectors(int(next(iter(features.values())).shape[0]))

    def encode(self, texts: list[str]) -> Any:
        return self._vectors(len(texts))

    def _vectors(self, n: int) -> Any:
        import numpy as np

        return np.tile(self._unit, (n, 1))


def bench_ceiling(settings: Settings, embedder: Any, records: list[Record], tokens: int) -> dict[str, Any]:
    out = bench_daemon(settings, NullForward(embedder), records, tokens)
    d = out["diagnostics"]
    shares = {
        "batcher (cache lookup, tokenising, padding)": d.get("batcher_share"),
        "Milvus writes": d.get("milvus_write_share"),
        "Redis": d.get("redis_share"),
    }
    busiest = max(((k, v) for k, v in shares.items() if v is not None), key=lambda kv: kv[1], default=None)
    out["busiest_stage"] = None if busiest is None else {"stage": busiest[0], "share": busiest[1]}
    return out


def daemon_settings(
    base: Settings, topic: str, group: str, milvus_uri: str, collection: str, redis_url: str, redis_prefix: str
) -> Settings:
    from pydantic import SecretStr

    return base.model_copy(
        update={
            "kafka": base.kafka.model_copy(update={"topics": [topic], "group_id": group}),
            "milvus": base.milvus.model_copy(update={"uri": milvus_uri, "collection": collection}),
            "redis": base.redis.model_copy(update={"url": SecretStr(redis_url), "key_prefix": redis_prefix}),
            "metrics": base.metrics.model_copy(update={"port": 0}),
        }
    )


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
        "records": n,
        "tokens": tokens,
        "seconds": round(seconds, 3),
        "texts_per_s": rate(n, seconds),
        "tokens_per_s": rate(tokens, seconds),
        "startup_s": round(start - created, 3),
        "wall_s": round(ended - created, 3),
        "latency_p50_ms": percentile(probe.latencies, 50),
        "latency_p99_ms": percentile(probe.latencies, 99),
        "written": probe.landed(),
        "counts": counts,
        "diagnostics": diagnostics,
        "span_cpu_s": None if probe.span_cpu_s() is None else round(probe.span_cpu_s(), 3),
    }


def bench_steady(
    settings: Settings,
    embedder: Any,
    records: list[Record],
    svc: Services,
    seconds: float,
    per_second: float,
    trace_memory: bool = False,
) -> dict[str, Any]:
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
    memory = MemorySampler(interval_s=max(1.0, min(10.0, seconds / 60)), trace_python=trace_memory, expected_s=seconds)
    try:
        with memory:
            started = time.perf_counter()
            for i in range(total):
                delay = started + i / per_second - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                rec = records[i % len(records)]
                key, value = kafka_message(Record(f"steady-{i}-{rec.id}", rec.text, rec.metadata))
                producer.send(topic, key=key, value=value)
                published += 1
            producer.flush()
            produced_s = time.perf_counter() - started
    finally:
        producer.close()
    deadline = time.monotonic() + max(60.0, seconds)
    while probe.landed() < published and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.05)
    daemon.stop_requested.set()
    thread.join(timeout=settings.runtime.shutdown_timeout_s + 30)
    counts = metrics_delta(before, metrics_snapshot())
    if errors:
        raise RuntimeError(f"the steady-load daemon failed: {errors[0]!r}") from errors[0]
    bound = settings.batch.max_wait_ms + 500
    p99 = percentile(probe.latencies, 99)
    return {
        "records": published,
        "written": probe.landed(),
        "seconds": round(produced_s, 3),
        "offered_per_s": rate(published, produced_s),
        "exit_code": exit_codes[0] if exit_codes else None,
        "latency_p50_ms": percentile(probe.latencies, 50),
        "latency_p99_ms": p99,
        "latency_max_ms": max(probe.latencies) if probe.latencies else None,
        "latency_bound_ms": bound,
        "within_bound": p99 is not None and p99 <= bound,
        "memory": memory.summary(),
        "counts": counts,
    }


def compare_precision(
    base_model: ModelSettings, other: str, texts: list[str], torch_threads: int | None = None
) -> dict[str, Any]:
    """Plain encode of `texts` in torch fp32 (key "fp32") and in the setting `other` (a label such
    as bf16 or onnx-int8), each at its best batch size."""
    import numpy as np

    from ingestor.config import parse_variant
    from ingestor.embedder import Embedder

    variants = {
        "fp32": base_model.model_copy(update={"backend": "torch", "precision": "fp32"}),
        other: base_model.model_copy(update=parse_variant(other)),
    }
    results: dict[str, Any] = {}
    vectors: dict[str, Any] = {}
    tokens = 0
    model: Any = None
    for label, model_settings in variants.items():
        model = None  # one model in memory at a time
        embedder = Embedder(model_settings, torch_threads)
        if label == "fp32":
            tokens = corpus_tokens(embedder, texts)
        model = embedder.model
        del embedder
        warm_up(model, texts)
        out = with_cpu(lambda m=model: bench_plain(m, texts, tokens))
        vectors[label] = np.asarray(out.pop("_vectors"), dtype=np.float32)
        results[label] = out
    a, b = vectors["fp32"], vectors[other]
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    cosine = (a * b).sum(axis=1)
    return {
        "fp32": results["fp32"],
        other: results[other],
        "other": other,
        "tokens": tokens,
        "speedup": ratio(results[other]["texts_per_s"], results["fp32"]["texts_per_s"]),
        "cosine_min": float(cosine.min()),
        "cosine_mean": float(cosine.mean()),
    }


def warm_corpus(corpus: list[Record], head: list[Record]) -> list[Record]:
    """(d)'s records: half repeat texts of `head` (new ids), half new texts; interleaved."""
    half = max(1, len(head) // 2)
    repeats = [Record(f"warm-rep-{i}-{r.id}", r.text, r.metadata) for i, r in enumerate(head[::2][:half])]
    unused = corpus[len(head) : len(head) + half]
    fresh = [Record(f"warm-new-{i}-{r.id}", r.text, r.metadata) for i, r in enumerate(unused)]
    for i in range(len(fresh), half):  # the corpus ran out: (c)'s texts, changed
        r = head[(2 * i + 1) % len(head)]
        fresh.append(Record(f"warm-new-{i}-{r.id}", f"{r.text} (revised)", r.metadata))
    out: list[Record] = []
    for a, b in zip(repeats, fresh):
        out += [a, b]
    return out
