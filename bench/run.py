"""The whole bench run: every variant in order, on one loaded model, and the ratios between them."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.accounting import cpu_name, rate, ratio, stage_cpu_us, with_cpu
from bench.corpus import cycled
from bench.memory import peak_rss_mib
from bench.services import DEFAULT_REDIS_URL, Services, milvus_held
from bench.variants import (
    BATCH_SIZES,
    NAIVE_BATCH,
    STEADY_RATE,
    bench_ceiling,
    bench_daemon,
    bench_naive,
    bench_plain,
    bench_steady,
    compare_precision,
    corpus_tokens,
    daemon_settings,
    device_kind,
    encode_seconds,
    sink_alone,
    warm_corpus,
    warm_up,
)
from ingestor.config import Settings
from ingestor.corpus import SAMPLE, Record, load_corpus

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
    cycles: int = 1  # the corpus this many times over (`corpus.cycled`)
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


def default_limit(corpus_size: int, device: str) -> int:
    """1000 on a CPU, 2000 on a GPU; at most two thirds of the corpus (see the module doc)."""
    wanted = 1000 if device == "cpu" else 2000
    return max(1, min(wanted, (2 * corpus_size) // 3))


def bench_corpus(path: Path, cycles: int = 1) -> list[Record]:
    """The bench's corpus: the file's records, `cycles` times over, every text distinct."""
    corpus = load_corpus(path)
    return cycled(corpus, cycles * len(corpus)) if cycles > 1 else corpus


def embedded_texts(settings: Settings, embedder: Any) -> Callable[[Record], list[str]]:
    """What the daemon embeds for a record under these settings: its chunks' texts with chunking
    (the splitter it builds), else the record's text."""
    from ingestor.chunking import splitter_for

    splitter = splitter_for(settings.chunking, embedder)
    if splitter is None:
        return lambda record: [record.text]
    return lambda record: [c.text for c in splitter.split(record.text)]


def run_sink_rate(
    settings: Settings, milvus_uri: str | None = None, rows: int = 24_576, keep: bool = False
) -> dict[str, Any]:
    """The sink's own write rate, alone (`python -m bench --sink-rate`): no Kafka, no model, no
    Redis; into a fresh Milvus Lite file, or a collection of its own on a server (dropped after)."""
    svc = Services(settings, DEFAULT_REDIS_URL, 1, keep, milvus_uri)
    try:
        out = sink_alone(svc, rows)
    finally:
        svc.cleanup()
    out["sink"] = milvus_uri or "Milvus Lite (a fresh file, served from a child process)"
    out["collection"] = svc.collection("sink")
    return out


def run_bench(
    settings: Settings, options: BenchOptions, progress: Callable[[str], None] = lambda s: None, embedder: Any = None
) -> dict[str, Any]:
    """Run every variant; returns all figures (JSON-ready)."""
    import torch

    from ingestor.config import parse_variant
    from ingestor.embedder import Embedder, resolve_device

    corpus = bench_corpus(options.input, options.cycles)
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
        "device_name": torch.cuda.get_device_name(device) if device.startswith("cuda") else cpu_name(),
        "precision": settings.model.variant,
        "model": settings.model.name,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "input": str(options.input),
        "cycles": options.cycles,
        "corpus_records": len(corpus),
        "limit": limit,
        "chunking": settings.chunking.enabled,
        "load_average": {"cpus": os.cpu_count(), "before": [round(x, 2) for x in os.getloadavg()]},
    }

    if options.compare_precision:
        other = options.compare_precision
        progress(
            f"plain encode of {limit} texts in torch fp32 and in {other} on {device} (the model loads twice; "
            "a backend's first use exports its weights)"
        )
        comparison = compare_precision(
            settings.model.model_copy(update={"device": device}), other, texts, settings.runtime.torch_threads
        )
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
    # Every variant embeds the same texts for the same records: with chunking (as the daemon cuts
    # them) a record's chunks, else its text; rates are records per second throughout.
    pieces = embedded_texts(settings, embedder)
    texts = [t for r in head for t in pieces(r)]
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

        sizes = BATCH_SIZES[device_kind(model)]
        progress(f"(a) plain encode of {limit} texts: trying batch sizes {', '.join(map(str, sizes))}")
        plain = with_cpu(lambda: bench_plain(model, texts, tokens, records=limit))
        plain.pop("_vectors")
        result["plain"] = plain

        if not options.skip_naive:
            progress(f"(b) naive consume → encode(batch {NAIVE_BATCH}) → insert → commit of {limit} records")
            result["naive"] = with_cpu(
                lambda: bench_naive(model, settings, svc, head, tokens, embedder.dimension, pieces)
            )

        progress(f"the sink alone: {options.sink_rows} rows into {result['sink']}")
        result["sink_alone"] = sink_alone(svc, options.sink_rows, embedder.dimension)

        progress(f"(c) the daemon on {limit} records (cold cache)")
        uri = svc.milvus_uri("pipeline")
        bench_collection = svc.collection("bench")
        prefix = svc.redis_prefix("cache")
        topic_c = svc.topic("pipeline", head)
        s_c = daemon_settings(settings, topic_c, svc.name("pipeline-group"), uri, bench_collection, redis_url, prefix)
        pipeline = with_cpu(lambda: bench_daemon(s_c, embedder, head, tokens))
        chunked, in_process = settings.chunking.enabled, settings.milvus.lite_in_process
        held_c = milvus_held(uri, bench_collection, chunked, in_process)
        pipeline["milvus_rows"] = held_c.rows  # entities: with chunking, one per chunk
        pipeline["milvus_records"] = len(held_c.record_ids)
        pipeline["milvus_ids_match"] = held_c.match({r.id for r in head})
        result["pipeline"] = pipeline

        warm_records = warm_corpus(corpus, head)
        n_repeat = sum(1 for r in warm_records if r.id.startswith("warm-rep-"))
        warm_tokens = corpus_tokens(embedder, [t for r in warm_records for t in pieces(r)])
        progress(f"(d) the daemon on {len(warm_records)} records, {n_repeat} repeating texts of (c)")
        topic_d = svc.topic("warm", warm_records)
        s_d = daemon_settings(settings, topic_d, svc.name("warm-group"), uri, bench_collection, redis_url, prefix)
        warm = with_cpu(lambda: bench_daemon(s_d, embedder, warm_records, warm_tokens))
        held_d = milvus_held(uri, bench_collection, chunked, in_process)
        warm["repeated_records"] = n_repeat
        warm["new_records"] = len(warm_records) - n_repeat
        warm["cache_hits"] = int(warm["counts"]["cache_hits"])
        # Of the texts the model would embed (with chunking, chunks): those the cache had.
        warm["cache_hit_share"] = ratio(warm["cache_hits"], warm["cache_hits"] + warm["counts"]["embedded"])
        warm["milvus_rows"] = held_d.rows
        warm["milvus_records"] = len(held_d.record_ids)
        warm["milvus_ids_match"] = held_d.match({r.id for r in head} | {r.id for r in warm_records})
        result["warm"] = warm

        # The ceiling once more, after the services' variants: on a machine that others share,
        # the faster of the two runs is the fairer ceiling (both are reported).
        progress(f"(a) plain encode again, batch size {plain['batch_size']}")
        again = with_cpu(lambda: {"seconds": encode_seconds(model, texts, plain["batch_size"])[0]})
        plain["runs"] = [
            {k: plain[k] for k in ("seconds", "cpu_s", "others_cpu_share") if k in plain},
            {k: round(v, 3) for k, v in again.items()},
        ]
        if again["seconds"] < plain["seconds"]:
            plain.update(
                seconds=round(again["seconds"], 3),
                texts_per_s=rate(limit, again["seconds"]),
                tokens_per_s=rate(tokens, again["seconds"]),
                cpu_s=again["cpu_s"],
                others_cpu_share=again.get("others_cpu_share"),
            )

        if options.steady_seconds > 0:
            progress(f"(e) steady load: {options.steady_rate:g} records/s for {options.steady_seconds:g}s")
            topic_e = svc.topic("steady", [])
            s_e = daemon_settings(
                settings,
                topic_e,
                svc.name("steady-group"),
                uri,
                svc.collection("steady"),
                redis_url,
                svc.redis_prefix("steady"),
            )
            result["steady"] = with_cpu(
                lambda: bench_steady(
                    s_e, embedder, corpus, svc, options.steady_seconds, options.steady_rate, options.trace_memory
                )
            )

        if not options.skip_ceiling:
            records_f = cycled(corpus, 4 * limit, tag="f")
            tokens_f = corpus_tokens(embedder, [t for r in records_f for t in pieces(r)])
            progress(f"(f) the daemon on {len(records_f)} records with a null forward pass (the pipeline's ceiling)")
            topic_f = svc.topic("ceiling", records_f)
            s_f = daemon_settings(
                settings,
                topic_f,
                svc.name("ceiling-group"),
                svc.milvus_uri("ceiling"),
                svc.collection("ceiling"),
                redis_url,
                svc.redis_prefix("ceiling"),
            )
            ceiling = with_cpu(lambda: bench_ceiling(s_f, embedder, records_f, tokens_f))
            # CPU of this process per record, all threads, from the first record handed over to the
            # last write (the span its rate is measured over): the pipeline's own cost. With the
            # daemon's start-up and shutdown as well: `cpu_us_per_record_with_startup`.
            n_f = len(records_f)
            span_cpu = ceiling["span_cpu_s"] if ceiling.get("span_cpu_s") is not None else ceiling["cpu_s"]
            ceiling["cpu_us_per_record"] = round(1e6 * span_cpu / n_f, 1)
            ceiling["cpu_us_per_record_with_startup"] = round(1e6 * ceiling["cpu_s"] / n_f, 1)
            ceiling["stage_cpu_us_per_record"] = stage_cpu_us(ceiling["counts"], span_cpu, n_f)
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
