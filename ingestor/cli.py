"""The command line: `ingestor run | produce | search | check | stats | dlq replay | bench`."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated, NoReturn, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ingestor.config import Settings, describe, load_settings
from ingestor.errors import ConfigError, RetriableError, StartupError
from ingestor.logs import setup_logging

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__, rich_markup_mode=None)
dlq_app = typer.Typer(no_args_is_help=True, help="Inspect and replay the dead-letter topic.")
app.add_typer(dlq_app, name="dlq")
console = Console()
err_console = Console(stderr=True, soft_wrap=True)  # one message, one line (logs and tests grep it)
log = logging.getLogger("ingestor")

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML settings file")]
BootstrapOpt = Annotated[Optional[str], typer.Option("--bootstrap-servers", help=describe("kafka.bootstrap_servers"))]
TopicsOpt = Annotated[Optional[str], typer.Option("--topics", help=describe("kafka.topics"))]
GroupOpt = Annotated[Optional[str], typer.Option("--group-id", help=describe("kafka.group_id"))]
RedisOpt = Annotated[Optional[str], typer.Option("--redis-url", help=describe("redis.url"))]
MilvusOpt = Annotated[Optional[str], typer.Option("--milvus-uri", help=describe("milvus.uri"))]
CollectionOpt = Annotated[Optional[str], typer.Option("--collection", help=describe("milvus.collection"))]
ModelOpt = Annotated[Optional[str], typer.Option("--model", help=describe("model.name"))]
DeviceOpt = Annotated[Optional[str], typer.Option("--device", help=describe("model.device"))]
PrecisionOpt = Annotated[Optional[str], typer.Option("--precision", help=describe("model.precision"))]
BackendOpt = Annotated[Optional[str], typer.Option("--backend", help=describe("model.backend"))]
LogFormatOpt = Annotated[Optional[str], typer.Option("--log-format", help=describe("runtime.log_format"))]
LogLevelOpt = Annotated[Optional[str], typer.Option("--log-level", help=describe("runtime.log_level"))]


def _settings(
    config: Path | None = None, bootstrap_servers: str | None = None, topics: str | None = None,
    group_id: str | None = None, redis_url: str | None = None, milvus_uri: str | None = None,
    collection: str | None = None, model: str | None = None, device: str | None = None,
    precision: str | None = None, log_format: str | None = None, log_level: str | None = None,
    backend: str | None = None,
) -> Settings:
    settings = load_settings(config, {
        "kafka": {"bootstrap_servers": bootstrap_servers, "topics": topics, "group_id": group_id},
        "redis": {"url": redis_url},
        "milvus": {"uri": milvus_uri, "collection": collection},
        "model": {"name": model, "device": device, "backend": backend, "precision": precision},
        "runtime": {"log_format": log_format, "log_level": log_level.upper() if log_level else None},
    })
    setup_logging(settings.runtime.log_level, settings.runtime.log_format)
    return settings


@app.command()
def run(
    config: ConfigOpt = None, bootstrap_servers: BootstrapOpt = None, topics: TopicsOpt = None,
    group_id: GroupOpt = None, redis_url: RedisOpt = None, milvus_uri: MilvusOpt = None,
    collection: CollectionOpt = None, model: ModelOpt = None, device: DeviceOpt = None,
    precision: PrecisionOpt = None, backend: BackendOpt = None, log_format: LogFormatOpt = None,
    log_level: LogLevelOpt = None,
    until_caught_up: Annotated[bool, typer.Option("--until-caught-up", help="Exit 0 once everything up to the end offsets seen at start is committed")] = False,
    devices: Annotated[Optional[str], typer.Option("--devices", help="auto (every GPU, else the CPU), cpu, or GPU indices like 0,1: worker processes per device, all in one consumer group")] = None,
    workers_per_device: Annotated[Optional[int], typer.Option("--workers-per-device", min=1, help="Worker processes per device (--devices cpu is one device); default 1 on the CPU, and on GPUs min(4, cores per GPU // 2), or 1 with a Milvus Lite file")] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", min=1, help="The older name of --workers-per-device: per GPU with GPU devices, in all with --devices cpu")] = None,
) -> None:
    """Consume, embed and upsert until stopped (SIGTERM/SIGINT) or caught up."""
    from ingestor.supervisor import workers_option

    count = workers_option(workers, workers_per_device)
    settings = _settings(config, bootstrap_servers, topics, group_id, redis_url, milvus_uri, collection,
                         model, device, precision, log_format, log_level, backend)
    if devices is not None or (count or 1) > 1:
        raise typer.Exit(_supervise(settings, devices or "cpu", count))
    from ingestor.daemon import Daemon
    from ingestor.supervisor import export_restarts

    export_restarts()
    daemon = Daemon(settings, until_caught_up=until_caught_up)
    daemon.install_signal_handlers()
    raise typer.Exit(daemon.run())


def _supervise(settings: Settings, devices: str, per_device: int | None) -> int:
    from ingestor.supervisor import Supervisor, describe_plan, plan_workers, usable_cores, warn_if_few_partitions

    try:
        import torch

        cuda_count = torch.cuda.device_count()
    except Exception:
        cuda_count = 0
    plans = plan_workers(devices, per_device, usable_cores(), cuda_count, settings.metrics.port,
                         lite=settings.milvus.is_lite)
    if len(plans) > 1 and settings.milvus.is_lite:
        raise StartupError(
            f"{len(plans)} workers cannot share the Milvus Lite file {settings.milvus.uri}: run a Milvus server "
            "(`deploy/local/services.sh up --milvus-server` starts one on 127.0.0.1:19530; or serve the file to "
            "all of them: `python -m ingestor.lite --data-dir DIR --port 19540`, which `services.sh up "
            "--lite-server` starts) and set milvus.uri to its http:// address"
        )
    if settings.kafka.group_instance_id and len(plans) > 1:
        # One static member id per worker: two consumers under one id fence each other out.
        for plan in plans:
            plan.env["INGESTOR_KAFKA__GROUP_INSTANCE_ID"] = f"{settings.kafka.group_instance_id}-{plan.index}"
    log.info("supervising %s", describe_plan(plans))
    warn_if_few_partitions(settings, len(plans))
    # Workers re-read the same environment and config file; the CLI flags travel as arguments.
    args = _drop_option_values(sys.argv[2:], ("--devices", "--workers", "--workers-per-device"))
    return Supervisor(settings, plans, args).run()


def _drop_option_values(args: list[str], names: tuple[str, ...]) -> list[str]:
    out: list[str] = []
    skip = False
    for a in args:
        if skip:
            skip = False
            continue
        if a in names:
            skip = True
            continue
        if a.startswith(tuple(n + "=" for n in names)):
            continue
        out.append(a)
    return out


@app.command()
def produce(
    file: Annotated[Path, typer.Argument(help="JSONL file (one JSON object a line) or plain text lines")],
    config: ConfigOpt = None, bootstrap_servers: BootstrapOpt = None,
    topic: Annotated[Optional[str], typer.Option("--topic", help="Topic (default: the first of kafka.topics)")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", help="Publish at most N records")] = None,
) -> None:
    """Publish a file of records to Kafka, with a progress bar."""
    from ingestor.commands.produce import publish_file

    settings = _settings(config, bootstrap_servers)
    target = topic or settings.kafka.topics[0]
    count = publish_file(settings.kafka, file, target, limit, console)
    console.print(f"published {count} record(s) to [bold]{target}[/bold]")


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="Text to search for")],
    k: Annotated[int, typer.Option("-k", help="Number of results")] = 5,
    config: ConfigOpt = None, milvus_uri: MilvusOpt = None, collection: CollectionOpt = None,
    model: ModelOpt = None, device: DeviceOpt = None, precision: PrecisionOpt = None, backend: BackendOpt = None,
) -> None:
    """Embed a query with the same model and print the nearest records."""
    settings = _settings(config, milvus_uri=milvus_uri, collection=collection, model=model, device=device,
                         precision=precision, backend=backend, log_level="WARNING")
    from ingestor.embedder import Embedder
    from ingestor.sink import MilvusSink

    embedder = Embedder(settings.model)
    sink = MilvusSink(settings.milvus, chunked=settings.chunking.enabled)
    sink.connect()
    sink.ensure_collection(embedder.dimension, embedder.identity)
    try:
        hits = sink.search(embedder.encode([query])[0], k)
    finally:
        sink.close()
    table = Table(title=f"top {k} for {query!r}")
    table.add_column("id", overflow="fold")
    if sink.chunked:  # one row per record: its best chunk, and where that lies in the record's text
        table.add_column("chunk", justify="right")
        table.add_column("span", justify="right")
    table.add_column("score", justify="right")
    table.add_column("text", overflow="fold")
    for hit in hits:
        text = hit["text"] if len(hit["text"]) <= 160 else hit["text"][:157] + "..."
        chunk = [str(hit["chunk_index"]), f"{hit['char_start']}-{hit['char_end']}"] if sink.chunked else []
        table.add_row(escape(str(hit.get("doc_id", hit["id"]))), *chunk, f"{hit['score']:.4f}", escape(text))
    console.print(table)


@app.command()
def check(
    config: ConfigOpt = None, bootstrap_servers: BootstrapOpt = None, redis_url: RedisOpt = None,
    milvus_uri: MilvusOpt = None, model: ModelOpt = None, device: DeviceOpt = None,
) -> None:
    """Test each dependency and the model; one line each; non-zero exit if any fails."""
    settings = _settings(config, bootstrap_servers, redis_url=redis_url, milvus_uri=milvus_uri, model=model,
                         device=device, log_level="WARNING")
    from ingestor.commands.check import run_checks

    results = run_checks(settings)
    for r in results:
        mark = "[green]ok  [/green]" if r.ok else ("[yellow]skip[/yellow]" if r.skipped else "[red]FAIL[/red]")
        console.print(f"{mark} {r.name:<7} {escape(r.detail)}")
    raise typer.Exit(0 if all(r.ok or r.skipped for r in results) else 1)


@app.command()
def stats(config: ConfigOpt = None, bootstrap_servers: BootstrapOpt = None, redis_url: RedisOpt = None,
          milvus_uri: MilvusOpt = None, collection: CollectionOpt = None) -> None:
    """Collection rows, cache keys and memory, consumer lag per partition, DLQ depth."""
    settings = _settings(config, bootstrap_servers, redis_url=redis_url, milvus_uri=milvus_uri,
                         collection=collection, log_level="WARNING")
    from ingestor.commands.stats import render_stats

    render_stats(settings, console)


@dlq_app.command("replay")
def dlq_replay(
    config: ConfigOpt = None, bootstrap_servers: BootstrapOpt = None,
    reason: Annotated[Optional[list[str]], typer.Option("--reason", help="Only records with this reason (repeatable)")] = None,
    from_offset: Annotated[Optional[int], typer.Option("--from-offset", help="Only source offsets >= N")] = None,
    to_offset: Annotated[Optional[int], typer.Option("--to-offset", help="Only source offsets <= N")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be replayed")] = False,
) -> None:
    """Re-publish dead-lettered records to their source topic, once their cause is fixed."""
    settings = _settings(config, bootstrap_servers, log_level="WARNING")
    from ingestor.commands.replay import replay_dead_letters

    n = replay_dead_letters(settings, set(reason or []), from_offset, to_offset, dry_run, console)
    console.print(f"{'would replay' if dry_run else 'replayed'} {n} record(s)")


@app.command()
def bench(
    config: ConfigOpt = None, bootstrap_servers: BootstrapOpt = None, redis_url: RedisOpt = None,
    model: ModelOpt = None, device: DeviceOpt = None, precision: PrecisionOpt = None, backend: BackendOpt = None,
    milvus_uri: Annotated[Optional[str], typer.Option("--milvus-uri", help="A Milvus server (http://host:port) for every variant, in collections of its own (dropped after); default: a fresh Milvus Lite file per variant")] = None,
    input: Annotated[Optional[Path], typer.Option("--input", help="JSONL corpus (default: the bundled sample)")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="Records for (a)-(c); default 1000 on CPU, 2000 on GPU, at most 2/3 of the corpus")] = None,
    steady_seconds: Annotated[float, typer.Option("--steady-seconds", min=0, help="Length of the steady-load run (e); 0 skips it")] = 30.0,
    skip_naive: Annotated[bool, typer.Option("--skip-naive", help="Skip the naive loop (b)")] = False,
    compare_precision: Annotated[Optional[str], typer.Option("--compare-precision", help="Instead of (a)-(e): plain encode in torch fp32 vs this setting (fp16, bf16, onnx, onnx-int8, openvino, openvino-bf16, openvino-int8); speed-up and cosine")] = None,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Also write every figure as JSON to this file")] = None,
    skip_ceiling: Annotated[bool, typer.Option("--skip-ceiling", help="Skip the null-forward-pass run (f)")] = False,
    trace_memory: Annotated[bool, typer.Option("--trace-memory", help="Trace Python's allocations through the steady run (e): its own memory gauge, and the lines that grew most after warm-up (slows Python)")] = False,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the bench's topics, Redis keys and Milvus Lite files")] = False,
    long_documents: Annotated[bool, typer.Option("--long-documents", help="Instead of (a)-(f): long documents with chunking on, chunks/s against plain encode of the same chunks, and the share of chunks an edit takes from the cache (--limit: documents)")] = False,
    cycles: Annotated[int, typer.Option("--cycles", min=1, help="The corpus this many times over, each cycle's texts made distinct by a suffix (none comes from the cache)")] = 1,
    sink_rate: Annotated[bool, typer.Option("--sink-rate", help="Instead of (a)-(f): only the sink's own write rate, with no Kafka, model or Redis")] = False,
    workers: Annotated[Optional[str], typer.Option("--workers", help="Instead of (a)-(f): `ingestor run --devices D --workers K --until-caught-up` for each K of this comma-separated list (1,2,4), on --limit records, all writing to the --milvus-uri server")] = None,
    devices: Annotated[str, typer.Option("--devices", help="With --workers: as for `ingestor run --devices` (GPU indices like 0, or cpu)")] = "0",
    timeout_s: Annotated[float, typer.Option("--timeout-s", min=1, help="With --workers: seconds each `ingestor run` may take before it is killed")] = 300.0,
    log_level: LogLevelOpt = "WARNING",
) -> None:
    """Throughput and latency of the pipeline vs plain encode and a naive loop, in one run."""
    from ingestor.bench import BenchOptions, bench_corpus, render, run_bench, write_json
    from ingestor.corpus import SAMPLE

    if compare_precision is not None:
        compare_precision = _comparable(compare_precision)
    if milvus_uri is not None:
        from ingestor.config import is_lite_uri

        if is_lite_uri(milvus_uri):
            raise ConfigError(f"--milvus-uri must be a Milvus server (http://host:port), not {milvus_uri!r}: "
                              "without it the bench uses fresh Milvus Lite files")
    counts = _worker_counts(workers) if workers is not None else None
    if counts is not None and milvus_uri is None:
        raise ConfigError("--workers needs --milvus-uri: a Milvus server that every worker process writes to")
    settings = _settings(config, bootstrap_servers, redis_url=redis_url, model=model, device=device,
                         precision=precision, backend=backend, log_level=log_level)
    if sink_rate:
        from ingestor.bench import render_sink_rate, run_sink_rate

        result = run_sink_rate(settings, milvus_uri, keep=keep)
        render_sink_rate(result, console)
        if json_path is not None:
            write_json(result, json_path)
            console.print(f"figures written to {json_path}")
        return
    if counts is not None:
        from ingestor.bench import default_limit, render_workers
        from ingestor.bench.services import DEFAULT_REDIS_URL
        from ingestor.bench.workers import run_workers

        assert milvus_uri is not None
        corpus = bench_corpus(input or SAMPLE, cycles)
        records = corpus[:limit or default_limit(len(corpus), "cpu" if devices == "cpu" else "gpu")]
        redis = settings.redis.url.get_secret_value() if settings.redis.url is not None else DEFAULT_REDIS_URL
        results = run_workers(settings, records, counts, devices, milvus_uri, redis, timeout_s, config,
                              progress=lambda msg: err_console.print(f"[dim]{msg}[/dim]"))
        render_workers(results, console)
        if json_path is not None:
            write_json(results, json_path)
            console.print(f"figures written to {json_path}")
        raise typer.Exit(0 if all(r["rc"] == 0 and r["ids_match"] for r in results) else 1)
    if long_documents:
        from ingestor.bench.chunks import render_chunks, run_chunk_bench

        result = run_chunk_bench(settings, milvus_uri, limit, keep=keep,
                                 progress=lambda msg: err_console.print(f"[dim]{msg}[/dim]"))
        render_chunks(result, console)
        if json_path is not None:
            write_json(result, json_path)
            console.print(f"figures written to {json_path}")
        return
    options = BenchOptions(input=input or SAMPLE, cycles=cycles, limit=limit, steady_seconds=steady_seconds,
                           skip_naive=skip_naive,
                           compare_precision=compare_precision, json_path=json_path,
                           skip_ceiling=skip_ceiling, trace_memory=trace_memory, keep=keep, milvus_uri=milvus_uri)
    result = run_bench(settings, options, progress=lambda msg: err_console.print(f"[dim]{msg}[/dim]"))
    render(result, console)
    if json_path is not None:
        write_json(result, json_path)
        console.print(f"figures written to {json_path}")


def _worker_counts(text: str) -> list[int]:
    """--workers 1,2,4 as [1, 2, 4], or ConfigError."""
    try:
        counts = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise ConfigError(f"--workers takes worker counts of at least 1, comma-separated (1,2,4), not {text!r}")
    return counts


def _comparable(label: str) -> str:
    """A --compare-precision label in its canonical form (`onnx` -> `onnx-fp32`), or ConfigError."""
    from ingestor.config import parse_variant

    parsed = parse_variant(label)
    if parsed == {"backend": "torch", "precision": "fp32"}:
        raise ConfigError("--compare-precision fp32 compares torch fp32 with itself: name another setting")
    return parsed["precision"] if parsed["backend"] == "torch" else f"{parsed['backend']}-{parsed['precision']}"


def main() -> None:
    _exit(_run_app())


def _run_app() -> int:
    """Run the command line; the exit code (2: bad configuration or a start-up check failed; 1: a
    dependency a one-shot command needs is unavailable)."""
    try:
        # With standalone_mode=False click *returns* the code of a `typer.Exit` instead of raising.
        code = app(standalone_mode=False)
        return code if isinstance(code, int) else 0
    except ConfigError as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        return 2
    except StartupError as exc:
        err_console.print(f"[red]cannot start:[/red] {escape(str(exc))}", highlight=False)
        return 2
    except RetriableError as exc:  # `ingestor run` waits these out; a one-shot command says so and ends
        err_console.print(f"[red]unavailable:[/red] {escape(str(exc))}; try again once it answers", highlight=False)
        return 1
    except typer.Exit as exc:
        return exc.exit_code
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except (typer.Abort, KeyboardInterrupt):
        return 130
    except Exception as exc:
        # Usage errors (2) and the like: click's, or those of the click that typer >= 0.29 carries
        # inside itself as other classes; both show themselves and carry their exit code.
        code = getattr(exc, "exit_code", None)
        if not isinstance(code, int):
            raise
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        return code


def _exit(code: int) -> NoReturn:
    """Exit without the interpreter's teardown. Everything ingestor opens is closed by then; what
    teardown would add is noise: nanobind, under triton's bindings that torch loads, prints dozens
    of "leaked instances" lines for objects that are simply still alive at exit."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
