"""The command line: `ingestor run | serve | produce | search | check | stats | dlq replay`."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated, NoReturn

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

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML settings file")]
BootstrapOpt = Annotated[str | None, typer.Option("--bootstrap-servers", help=describe("kafka.bootstrap_servers"))]
TopicsOpt = Annotated[str | None, typer.Option("--topics", help=describe("kafka.topics"))]
GroupOpt = Annotated[str | None, typer.Option("--group-id", help=describe("kafka.group_id"))]
RedisOpt = Annotated[str | None, typer.Option("--redis-url", help=describe("redis.url"))]
MilvusOpt = Annotated[str | None, typer.Option("--milvus-uri", help=describe("milvus.uri"))]
CollectionOpt = Annotated[str | None, typer.Option("--collection", help=describe("milvus.collection"))]
ModelOpt = Annotated[str | None, typer.Option("--model", help=describe("model.name"))]
DeviceOpt = Annotated[str | None, typer.Option("--device", help=describe("model.device"))]
PrecisionOpt = Annotated[str | None, typer.Option("--precision", help=describe("model.precision"))]
BackendOpt = Annotated[str | None, typer.Option("--backend", help=describe("model.backend"))]
LogFormatOpt = Annotated[str | None, typer.Option("--log-format", help=describe("runtime.log_format"))]
LogLevelOpt = Annotated[str | None, typer.Option("--log-level", help=describe("runtime.log_level"))]


def _settings(
    config: Path | None = None,
    bootstrap_servers: str | None = None,
    topics: str | None = None,
    group_id: str | None = None,
    redis_url: str | None = None,
    milvus_uri: str | None = None,
    collection: str | None = None,
    model: str | None = None,
    device: str | None = None,
    precision: str | None = None,
    log_format: str | None = None,
    log_level: str | None = None,
    backend: str | None = None,
    serve: dict[str, object] | None = None,
) -> Settings:
    settings = load_settings(
        config,
        {
            "kafka": {"bootstrap_servers": bootstrap_servers, "topics": topics, "group_id": group_id},
            "redis": {"url": redis_url},
            "milvus": {"uri": milvus_uri, "collection": collection},
            "model": {"name": model, "device": device, "backend": backend, "precision": precision},
            "runtime": {"log_format": log_format, "log_level": log_level.upper() if log_level else None},
            "serve": serve or {},
        },
    )
    setup_logging(settings.runtime.log_level, settings.runtime.log_format)
    return settings


@app.command()
def run(
    config: ConfigOpt = None,
    bootstrap_servers: BootstrapOpt = None,
    topics: TopicsOpt = None,
    group_id: GroupOpt = None,
    redis_url: RedisOpt = None,
    milvus_uri: MilvusOpt = None,
    collection: CollectionOpt = None,
    model: ModelOpt = None,
    device: DeviceOpt = None,
    precision: PrecisionOpt = None,
    backend: BackendOpt = None,
    log_format: LogFormatOpt = None,
    log_level: LogLevelOpt = None,
    until_caught_up: Annotated[
        bool,
        typer.Option(
            "--until-caught-up", help="Exit 0 once everything up to the end offsets seen at start is committed"
        ),
    ] = False,
    devices: Annotated[
        str | None,
        typer.Option(
            "--devices",
            help=(
                "auto (every GPU, else the CPU), cpu, or GPU indices like 0,1: worker processes per device, all in "
                "one consumer group"
            ),
        ),
    ] = None,
    workers_per_device: Annotated[
        int | None,
        typer.Option(
            "--workers-per-device",
            min=1,
            help=(
                "Worker processes per device (--devices cpu is one device); default 1 on the CPU, and on GPUs "
                "min(4, cores per GPU // 2), or 1 with a Milvus Lite file"
            ),
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            min=1,
            help="The older name of --workers-per-device: per GPU with GPU devices, in all with --devices cpu",
        ),
    ] = None,
) -> None:
    """Consume, embed and upsert until stopped (SIGTERM/SIGINT) or caught up."""
    from ingestor.supervisor import workers_option

    count = workers_option(workers, workers_per_device)
    settings = _settings(
        config,
        bootstrap_servers,
        topics,
        group_id,
        redis_url,
        milvus_uri,
        collection,
        model,
        device,
        precision,
        log_format,
        log_level,
        backend,
    )
    if devices is not None or (count or 1) > 1:
        raise typer.Exit(_supervise(settings, devices or "cpu", count))
    from ingestor.daemon import Daemon
    from ingestor.hooks import install_from_environment
    from ingestor.supervisor import export_restarts

    export_restarts()
    install_from_environment()  # INGESTOR_HOOKS: set by the test harness only
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
    plans = plan_workers(
        devices, per_device, usable_cores(), cuda_count, settings.metrics.port, lite=settings.milvus.is_lite
    )
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
def serve(
    config: ConfigOpt = None,
    redis_url: RedisOpt = None,
    milvus_uri: MilvusOpt = None,
    collection: CollectionOpt = None,
    model: ModelOpt = None,
    device: DeviceOpt = None,
    precision: PrecisionOpt = None,
    backend: BackendOpt = None,
    log_format: LogFormatOpt = None,
    log_level: LogLevelOpt = None,
    host: Annotated[str | None, typer.Option("--host", help=describe("serve.host"))] = None,
    port: Annotated[int | None, typer.Option("--port", help=describe("serve.port"))] = None,
) -> None:
    """Serve embeddings (OpenAI /v1/embeddings, TEI /embed) and /search with the collection's model."""
    settings = _settings(
        config,
        redis_url=redis_url,
        milvus_uri=milvus_uri,
        collection=collection,
        model=model,
        device=device,
        precision=precision,
        log_format=log_format,
        log_level=log_level,
        backend=backend,
        serve={"host": host, "port": port},
    )
    from ingestor.serve.server import serve as run_server

    raise typer.Exit(run_server(settings))


@app.command()
def produce(
    file: Annotated[Path, typer.Argument(help="JSONL file (one JSON object a line) or plain text lines")],
    config: ConfigOpt = None,
    bootstrap_servers: BootstrapOpt = None,
    topic: Annotated[str | None, typer.Option("--topic", help="Topic (default: the first of kafka.topics)")] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Publish at most N records")] = None,
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
    config: ConfigOpt = None,
    milvus_uri: MilvusOpt = None,
    collection: CollectionOpt = None,
    model: ModelOpt = None,
    device: DeviceOpt = None,
    precision: PrecisionOpt = None,
    backend: BackendOpt = None,
) -> None:
    """Embed a query with the same model and print the nearest records."""
    settings = _settings(
        config,
        milvus_uri=milvus_uri,
        collection=collection,
        model=model,
        device=device,
        precision=precision,
        backend=backend,
        log_level="WARNING",
    )
    from ingestor.chunking import splitter_for
    from ingestor.embedder import Embedder
    from ingestor.identity import of_model
    from ingestor.sink import MilvusSink

    embedder = Embedder(settings.model)
    identity = of_model(embedder, splitter_for(settings.chunking, embedder))
    sink = MilvusSink(settings.milvus, chunked=settings.chunking.enabled)
    sink.connect()
    try:
        if not sink.open_for_search(embedder.dimension, embedder.identity, identity):
            raise StartupError(f"there is no Milvus collection {settings.milvus.collection!r} at {settings.milvus.uri}")
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
    config: ConfigOpt = None,
    bootstrap_servers: BootstrapOpt = None,
    redis_url: RedisOpt = None,
    milvus_uri: MilvusOpt = None,
    model: ModelOpt = None,
    device: DeviceOpt = None,
) -> None:
    """Test each dependency and the model; one line each; non-zero exit if any fails."""
    settings = _settings(
        config,
        bootstrap_servers,
        redis_url=redis_url,
        milvus_uri=milvus_uri,
        model=model,
        device=device,
        log_level="WARNING",
    )
    from ingestor.commands.check import run_checks

    results = run_checks(settings)
    for r in results:
        mark = "[green]ok  [/green]" if r.ok else ("[yellow]skip[/yellow]" if r.skipped else "[red]FAIL[/red]")
        console.print(f"{mark} {r.name:<7} {escape(r.detail)}")
    raise typer.Exit(0 if all(r.ok or r.skipped for r in results) else 1)


@app.command()
def stats(
    config: ConfigOpt = None,
    bootstrap_servers: BootstrapOpt = None,
    redis_url: RedisOpt = None,
    milvus_uri: MilvusOpt = None,
    collection: CollectionOpt = None,
) -> None:
    """Collection rows, cache keys and memory, consumer lag per partition, DLQ depth."""
    settings = _settings(
        config,
        bootstrap_servers,
        redis_url=redis_url,
        milvus_uri=milvus_uri,
        collection=collection,
        log_level="WARNING",
    )
    from ingestor.commands.stats import render_stats

    render_stats(settings, console)


@dlq_app.command("replay")
def dlq_replay(
    config: ConfigOpt = None,
    bootstrap_servers: BootstrapOpt = None,
    reason: Annotated[
        list[str] | None, typer.Option("--reason", help="Only records with this reason (repeatable)")
    ] = None,
    from_offset: Annotated[int | None, typer.Option("--from-offset", help="Only source offsets >= N")] = None,
    to_offset: Annotated[int | None, typer.Option("--to-offset", help="Only source offsets <= N")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be replayed")] = False,
) -> None:
    """Re-publish dead-lettered records to their source topic, once their cause is fixed."""
    settings = _settings(config, bootstrap_servers, log_level="WARNING")
    from ingestor.commands.replay import replay_dead_letters

    n = replay_dead_letters(settings, set(reason or []), from_offset, to_offset, dry_run, console)
    console.print(f"{'would replay' if dry_run else 'replayed'} {n} record(s)")


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
