"""The command line: `ingestor run | serve | check | stats | search | produce | dlq replay | config`."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ingestor import __version__
from ingestor.config import Settings, load_settings
from ingestor.config.reference import flag_help
from ingestor.errors import ConfigError, NotFound, Reason, RetriableError, StartupError, UsageError
from ingestor.logs import setup_logging

app = typer.Typer(
    add_completion=False,
    context_settings={"max_content_width": 110, "help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
    rich_markup_mode=None,
    help=(
        "Stream text records from Kafka into Milvus as embeddings.\n\n"
        "Settings come from flags, INGESTOR_<SECTION>__<FIELD> variables and a YAML file (--config); "
        "`ingestor config show` prints them all and docs/configuration.md describes each. Exit codes: 0 ok, "
        "1 a dependency is unavailable, 2 a configuration or start-up error."
    ),
)
dlq_app = typer.Typer(no_args_is_help=True, help="Inspect and replay the dead-letter topic.")
app.add_typer(dlq_app, name="dlq", short_help="Replay the dead-letter topic.")
config_app = typer.Typer(no_args_is_help=True, help="Show, validate and document the settings.")
app.add_typer(config_app, name="config", short_help="Show, validate and document the settings.")
console = Console()
err_console = Console(stderr=True, soft_wrap=True)  # one message, one line (logs and tests grep it)
log = logging.getLogger("ingestor")


def _example(*lines: str) -> str:
    """A command's epilog: its examples, kept as written (click rewraps paragraphs without \\b)."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


def _at_least(low: float) -> Any:
    """A flag's check of its lower bound (click's own would print `[x>=1]` into the help)."""

    def check(value: float | None) -> float | None:
        if value is not None and value < low:
            raise typer.BadParameter(f"must be at least {low:g}, got {value:g}")
        return value

    return check


def _flag(name: str, path: str, metavar: str) -> Any:
    return typer.Option(name, metavar=metavar, help=flag_help(path), show_default=False)


ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", metavar="FILE", help="YAML settings file (its keys: docs/configuration.md) [default: none]"
    ),
]
BootstrapOpt = Annotated[str | None, _flag("--bootstrap-servers", "kafka.bootstrap_servers", "HOST:PORT,...")]
TopicsOpt = Annotated[str | None, _flag("--topics", "kafka.topics", "TOPIC,...")]
GroupOpt = Annotated[str | None, _flag("--group-id", "kafka.group_id", "GROUP")]
RedisOpt = Annotated[str | None, _flag("--redis-url", "redis.url", "URL")]
MilvusOpt = Annotated[str | None, _flag("--milvus-uri", "milvus.uri", "URI")]
CollectionOpt = Annotated[str | None, _flag("--collection", "milvus.collection", "NAME")]
ModelOpt = Annotated[str | None, _flag("--model", "model.name", "NAME")]
DeviceOpt = Annotated[str | None, _flag("--device", "model.device", "DEVICE")]
PrecisionOpt = Annotated[str | None, _flag("--precision", "model.precision", "fp32|fp16|bf16|int8")]
BackendOpt = Annotated[str | None, _flag("--backend", "model.backend", "torch|onnx|openvino")]
LogFormatOpt = Annotated[str | None, _flag("--log-format", "runtime.log_format", "text|json")]
LogLevelOpt = Annotated[str | None, _flag("--log-level", "runtime.log_level", "LEVEL")]
TimeoutOpt = Annotated[
    float,
    typer.Option(
        "--timeout",
        metavar="SECONDS",
        callback=_at_least(0.1),
        help="Longest wait for each dependency, asked all at once [default: 5]",
        show_default=False,
    ),
]
UntilCaughtUpOpt = Annotated[
    bool,
    typer.Option("--until-caught-up", help="Exit 0 once everything up to the end offsets seen at start is committed"),
]
DevicesOpt = Annotated[
    str | None,
    typer.Option(
        "--devices",
        metavar="auto|cpu|0,1,...",
        help="Worker processes per device, all in one consumer group: auto (every GPU, else the CPU), cpu, or "
        "GPU indices [default: one worker, no supervisor]",
    ),
]
WorkersPerDeviceOpt = Annotated[
    int | None,
    typer.Option(
        "--workers-per-device",
        metavar="K",
        callback=_at_least(1),
        help="Worker processes per device (--devices cpu is one device) [default: 1 on the CPU; on GPUs "
        "min(4, cores per GPU // 2), or 1 with a Milvus Lite file]",
    ),
]
WorkersOpt = Annotated[
    int | None,
    typer.Option(
        "--workers",
        metavar="K",
        callback=_at_least(1),
        help="The older name of --workers-per-device; the same count [default: as --workers-per-device]",
    ),
]


def _overrides(
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
    host: str | None = None,
    port: str | None = None,
) -> dict[str, dict[str, Any]]:
    """The settings the flags give, by section (None: not given)."""
    return {
        "serve": {"host": host, "port": port},
        "kafka": {"bootstrap_servers": bootstrap_servers, "topics": topics, "group_id": group_id},
        "redis": {"url": redis_url},
        "milvus": {"uri": milvus_uri, "collection": collection},
        "model": {"name": model, "device": device, "backend": backend, "precision": precision},
        "runtime": {"log_format": log_format, "log_level": log_level.upper() if log_level else None},
    }


def _settings(config: Path | None = None, quiet: bool = False, **flags: str | None) -> Settings:
    """The settings, and logging set up by them; `quiet`: a one-shot command's, WARNING and up."""
    settings = load_settings(config, _overrides(**flags))
    level = "WARNING" if quiet and not flags.get("log_level") else settings.runtime.log_level
    setup_logging(level, settings.runtime.log_format)
    return settings


def _version(value: bool) -> None:
    if value:
        checkout = Path(__file__).resolve().parent.parent
        console.print(f"ingestor {__version__} ({checkout})", highlight=False)
        raise typer.Exit(0)


@app.callback()
def _main(
    version: Annotated[
        bool | None,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and where it runs from"),
    ] = None,
) -> None:
    pass


@app.command(
    short_help="Consume, embed and upsert until stopped.",
    epilog=_example(
        "ingestor run --bootstrap-servers kafka:9092 --topics documents --milvus-uri http://milvus:19530",
        "ingestor run --until-caught-up           # a batch job: exit 0 once the topic is ingested",
        "ingestor run --devices auto              # K worker processes per GPU",
    ),
)
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
    until_caught_up: UntilCaughtUpOpt = False,
    devices: DevicesOpt = None,
    workers_per_device: WorkersPerDeviceOpt = None,
    workers: WorkersOpt = None,
) -> None:
    """Consume, embed and upsert until stopped (SIGTERM/SIGINT drains and exits 0) or, with
    --until-caught-up, until everything present at start is committed.

    Each flag sets one setting; every other setting has its variable (docs/configuration.md, or
    `ingestor config show`)."""
    settings = _settings(
        config,
        bootstrap_servers=bootstrap_servers,
        topics=topics,
        group_id=group_id,
        redis_url=redis_url,
        milvus_uri=milvus_uri,
        collection=collection,
        model=model,
        device=device,
        precision=precision,
        log_format=log_format,
        log_level=log_level,
        backend=backend,
    )
    plan = _plan(settings, devices, workers, workers_per_device)
    if plan is not None:
        raise typer.Exit(_supervise(settings, plan))
    from ingestor.daemon import Daemon
    from ingestor.hooks import install_from_environment
    from ingestor.supervisor import export_restarts

    export_restarts()
    install_from_environment()  # INGESTOR_HOOKS: set by the test harness only
    daemon = Daemon(settings, until_caught_up=until_caught_up)
    daemon.install_signal_handlers()
    raise typer.Exit(daemon.run())


def _plan(settings: Settings, devices: str | None, workers: int | None, per_device: int | None) -> list[Any] | None:
    """The supervisor's worker plan, or None for one worker in this process; what `run` refuses
    about it (ConfigError, StartupError) is raised here, for `check` too."""
    from ingestor.supervisor import plan_workers, usable_cores, workers_option

    count = workers_option(workers, per_device)
    if devices is None and (count or 1) <= 1:
        return None
    try:
        import torch

        cuda_count = torch.cuda.device_count()
    except Exception:
        cuda_count = 0
    plans = plan_workers(
        devices or "cpu", count, usable_cores(), cuda_count, settings.metrics.port, lite=settings.milvus.is_lite
    )
    if len(plans) > 1 and settings.milvus.is_lite:
        raise StartupError(
            f"{len(plans)} workers cannot share the Milvus Lite file {settings.milvus.uri}: run a Milvus server "
            "(`deploy/local/services.sh up --milvus-server` starts one on 127.0.0.1:19530; or serve the file to "
            "all of them: `python -m ingestor.lite --data-dir DIR --port 19540`, which `services.sh up "
            "--lite-server` starts) and set milvus.uri to its http:// address"
        )
    return plans


def _supervise(settings: Settings, plans: list[Any]) -> int:
    from ingestor.supervisor import Supervisor, describe_plan, warn_if_few_partitions

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


@app.command(
    short_help="Serve embeddings and search with the collection's model.",
    epilog=_example(
        "ingestor serve                                    # http://127.0.0.1:8080",
        "ingestor serve --host 0.0.0.0 --milvus-uri http://milvus:19530",
    ),
)
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
    host: Annotated[str | None, _flag("--host", "serve.host", "ADDRESS")] = None,
    port: Annotated[str | None, _flag("--port", "serve.port", "PORT")] = None,
) -> None:
    """Embed queries with exactly the model, backend, precision and chunking that filled the
    collection (the settings of `ingestor run`; a collection written with another identity is
    refused, exit 2), and search it: OpenAI's POST /v1/embeddings and GET /v1/models, TEI's POST
    /embed, POST /search with a structured filter, and /metrics, /healthz, /readyz. Texts of
    concurrent requests share forward passes on one model thread. Runs until SIGTERM or SIGINT."""
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
        host=host,
        port=port,
    )
    from ingestor.serve.server import serve as run_server

    raise typer.Exit(run_server(settings))


@app.command(
    short_help="Preflight: what run would refuse, and each dependency.",
    epilog=_example(
        "ingestor check",
        "ingestor check --milvus-uri http://milvus:19530 --collection docs --timeout 10",
    ),
)
def check(
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
    until_caught_up: UntilCaughtUpOpt = False,
    devices: DevicesOpt = None,
    workers_per_device: WorkersPerDeviceOpt = None,
    workers: WorkersOpt = None,
    timeout: TimeoutOpt = 5.0,
) -> None:
    """Check what `ingestor run` with the same options would check at start, without consuming,
    writing or creating anything: the settings, Kafka (topics, partitions, the group's lag), Redis
    and Milvus at once (each within --timeout, one line each as it finishes), then the model with
    the chunk settings and the collection's fields, dimension and chunking mode.

    Exit 0 when all are ok, 1 when a dependency does not answer, 2 for a setting run would refuse."""
    del until_caught_up  # accepted so that run's command line checks as it is: nothing to check
    settings = _settings(
        config,
        quiet=True,
        bootstrap_servers=bootstrap_servers,
        topics=topics,
        group_id=group_id,
        redis_url=redis_url,
        milvus_uri=milvus_uri,
        collection=collection,
        model=model,
        device=device,
        precision=precision,
        log_format=log_format,
        log_level=log_level,
        backend=backend,
    )
    _plan(settings, devices, workers, workers_per_device)
    from ingestor.commands.check import run_checks

    worst = 0
    for r in run_checks(settings, timeout):
        mark = (
            "[green]ok  [/green]" if r.ok and not r.skipped else "[yellow]skip[/yellow]" if r.ok else "[red]FAIL[/red]"
        )
        console.print(f"{mark} {r.name:<7}{escape(r.detail)}", highlight=False, soft_wrap=True)
        worst = max(worst, r.code)
    raise typer.Exit(worst)


@app.command(
    short_help="Rows, cache, lag per partition, DLQ depth.",
    epilog=_example("ingestor stats", "ingestor stats --collection docs --timeout 10"),
)
def stats(
    config: ConfigOpt = None,
    bootstrap_servers: BootstrapOpt = None,
    topics: TopicsOpt = None,
    group_id: GroupOpt = None,
    redis_url: RedisOpt = None,
    milvus_uri: MilvusOpt = None,
    collection: CollectionOpt = None,
    timeout: TimeoutOpt = 5.0,
) -> None:
    """Collection rows, cache keys and memory, the group's lag per partition and each dead-letter
    topic's depth. Each dependency is asked at once, within --timeout; one that fails shows why and
    makes the exit code non-zero. Creates nothing."""
    settings = _settings(
        config,
        quiet=True,
        bootstrap_servers=bootstrap_servers,
        topics=topics,
        group_id=group_id,
        redis_url=redis_url,
        milvus_uri=milvus_uri,
        collection=collection,
    )
    from ingestor.commands.stats import render_stats

    raise typer.Exit(render_stats(settings, console, timeout))


@app.command(
    short_help="Print the records nearest a query.",
    epilog=_example('ingestor search "sort a list in place" -k 5', 'ingestor search "tokenizer" --collection docs'),
)
def search(
    query: Annotated[str, typer.Argument(metavar="QUERY", show_default=False, hidden=True)],
    k: Annotated[
        int,
        typer.Option(
            "-k", metavar="N", callback=_at_least(1), help="Number of records to show [default: 5]", show_default=False
        ),
    ] = 5,
    config: ConfigOpt = None,
    milvus_uri: MilvusOpt = None,
    collection: CollectionOpt = None,
    model: ModelOpt = None,
    device: DeviceOpt = None,
    precision: PrecisionOpt = None,
    backend: BackendOpt = None,
) -> None:
    """Embed QUERY with the collection's model and print the nearest records, one row per record
    (its best chunk). Never creates a collection: a missing one is an error (exit 1)."""
    settings = _settings(
        config,
        quiet=True,
        milvus_uri=milvus_uri,
        collection=collection,
        model=model,
        device=device,
        precision=precision,
        backend=backend,
    )
    from ingestor.sink import MilvusSink

    sink = MilvusSink(settings.milvus, chunked=settings.chunking.enabled)
    try:
        _require_collection(settings, sink)
        from ingestor.chunking import splitter_for
        from ingestor.embedder import Embedder
        from ingestor.identity import of_model

        embedder = Embedder(settings.model)
        identity = of_model(embedder, splitter_for(settings.chunking, embedder))
        if not sink.open_existing(embedder.dimension, embedder.identity, identity):
            _require_collection(settings, sink)
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


def _require_collection(settings: Settings, sink: Any) -> None:
    """NotFound unless the collection exists; says which do. A Lite file that does not exist is
    not opened (that would create it)."""
    m = settings.milvus
    if m.is_lite and not Path(m.uri).exists():
        raise NotFound(f"no Milvus Lite file at {m.uri}: nothing was ingested there (set milvus.uri)")
    if not sink.exists():
        names = sink.collection_names()
        there = f"the collections there: {', '.join(names)}" if names else "it holds no collection"
        raise NotFound(f"no collection {m.collection!r} at {m.uri} ({there}); set milvus.collection")


@app.command(
    short_help="Publish a JSONL or text file to Kafka.",
    epilog=_example("ingestor produce my.jsonl", "ingestor produce notes.txt --topic documents --limit 100"),
)
def produce(
    file: Annotated[Path, typer.Argument(metavar="FILE", show_default=False, hidden=True)],
    config: ConfigOpt = None,
    bootstrap_servers: BootstrapOpt = None,
    topic: Annotated[
        str | None,
        typer.Option("--topic", metavar="TOPIC", help="Topic to publish to [default: the first of kafka.topics]"),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option("--limit", metavar="N", callback=_at_least(1), help="Publish at most N records [default: all]"),
    ] = None,
) -> None:
    """Publish FILE, JSONL (one JSON object a line) or plain text lines, to Kafka, with a progress
    bar. A JSON line goes as it is (its `id` is the key); a text line is wrapped as {"text": line}."""
    settings = _settings(config, quiet=True, bootstrap_servers=bootstrap_servers)
    if not file.is_file():
        raise UsageError(f"{file}: no such file" if not file.exists() else f"{file}: not a file")
    from ingestor.commands.produce import publish_file
    from ingestor.config.sections import check_topic_name
    from ingestor.logs import quiet_kafka_clients

    # kafka-python warns of each produce it retries while a new topic's leader is elected; a failure
    # that outlasts its retries is this command's to report, in one line.
    quiet_kafka_clients()

    target = topic or settings.kafka.topics[0]
    try:
        check_topic_name(target)
    except ValueError as exc:
        raise UsageError(f"--topic: {exc}") from None
    count = publish_file(settings.kafka, file, target, limit, console)
    console.print(f"published {count} record(s) to [bold]{target}[/bold]")


REASONS = [r.value for r in Reason]


@dlq_app.command(
    "replay",
    short_help="Re-publish dead letters to their source topic.",
    epilog=_example(
        "ingestor dlq replay --reason invalid_json --dry-run",
        "ingestor dlq replay --reason embed_failed --partition 3 --from-offset 1200 --to-offset 1300",
    ),
)
def dlq_replay(
    config: ConfigOpt = None,
    bootstrap_servers: BootstrapOpt = None,
    topics: TopicsOpt = None,
    reason: Annotated[
        list[str] | None,
        typer.Option(
            "--reason",
            metavar="REASON",
            help=f"Only records dead-lettered for this reason (repeatable): {', '.join(REASONS)} [default: all]",
        ),
    ] = None,
    partition: Annotated[
        int | None,
        typer.Option(
            "--partition",
            metavar="N",
            callback=_at_least(0),
            help="Only records from this partition of the source topic [default: all]",
        ),
    ] = None,
    from_offset: Annotated[
        int | None,
        typer.Option(
            "--from-offset",
            metavar="N",
            callback=_at_least(0),
            help="Only source offsets >= N (of every partition, or --partition's) [default: the first]",
        ),
    ] = None,
    to_offset: Annotated[
        int | None,
        typer.Option(
            "--to-offset",
            metavar="N",
            callback=_at_least(0),
            help="Only source offsets <= N (of every partition, or --partition's) [default: the last]",
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be replayed; publish nothing")] = False,
) -> None:
    """Re-publish dead-lettered records to their source topic, with their key, value and headers,
    once their cause is fixed."""
    unknown = [r for r in reason or [] if r not in REASONS]
    if unknown:
        raise UsageError(f"--reason {unknown[0]}: no such reason; the reasons are {', '.join(REASONS)}")
    if from_offset is not None and to_offset is not None and from_offset > to_offset:
        raise UsageError(f"--from-offset {from_offset} is past --to-offset {to_offset}")
    settings = _settings(config, quiet=True, bootstrap_servers=bootstrap_servers, topics=topics)
    from ingestor.commands.replay import Selection, replay_dead_letters
    from ingestor.logs import quiet_kafka_clients

    quiet_kafka_clients()  # as in produce: what fails for good is reported once, by this command

    wanted = Selection(set(reason or []), partition, from_offset, to_offset)
    n = replay_dead_letters(settings, wanted, dry_run, console)
    console.print(f"{'would replay' if dry_run else 'replayed'} {n} record(s)")


# -- config ------------------------------------------------------------------------------------------


def _config_command(short: str, *examples: str) -> Any:
    return config_app.command(short_help=short, epilog=_example(*examples))


@_config_command(
    "Print the effective settings and their sources.", "ingestor config show", "ingestor config show -c s.yaml"
)
def show(
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
) -> None:
    """Print every setting's effective value (secrets as **********) and where it came from: a
    flag, a variable, the file, or the default. Takes the flags of `run`."""
    flags = {
        "bootstrap_servers": bootstrap_servers,
        "topics": topics,
        "group_id": group_id,
        "redis_url": redis_url,
        "milvus_uri": milvus_uri,
        "collection": collection,
        "model": model,
        "device": device,
        "precision": precision,
        "log_format": log_format,
        "log_level": log_level,
        "backend": backend,
    }
    settings = load_settings(config, _overrides(**flags))
    from ingestor.config.reference import effective_rows, sources

    rows = [("setting", "value", "source")] + effective_rows(settings, sources(config, _overrides(**flags)))
    widths = [max(len(r[i]) for r in rows) for i in (0, 1)]
    # Plain lines, never wrapped: one setting a line, for grep and diff.
    for path, value, source in rows:
        sys.stdout.write(f"{path:<{widths[0]}}  {value:<{widths[1]}}  {source}\n")
    sys.stdout.flush()


@_config_command("Check the settings without connecting.", "ingestor config validate -c settings.yaml")
def validate(config: ConfigOpt = None) -> None:
    """Check the settings (the environment's INGESTOR_* variables and the file) as every command
    does first, without connecting anywhere: exit 0 and `ok`, or 2 and what is wrong."""
    load_settings(config)
    console.print("ok: the settings are valid", highlight=False)


@_config_command("Print the configuration reference (Markdown).", "ingestor config reference > docs/configuration.md")
def reference() -> None:
    """Print docs/configuration.md: every setting with its variable, type, default, allowed values
    and description, generated from the code."""
    from ingestor.config.reference import reference_markdown

    sys.stdout.write(reference_markdown())
    sys.stdout.flush()


def main() -> None:
    """The console script `ingestor`."""
    from ingestor.checkout import redirect_to_invoking_checkout

    redirect_to_invoking_checkout(sys.argv[1:])
    _exit(_run_app())


def _run_app() -> int:
    """Run the command line; the exit code (2: bad configuration or a start-up check failed; 1: a
    dependency a one-shot command needs is unavailable)."""
    try:
        # With standalone_mode=False click *returns* the code of a `typer.Exit` instead of raising.
        code = app(standalone_mode=False, prog_name="ingestor")
        return code if isinstance(code, int) else 0
    except ConfigError as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        return 2
    except StartupError as exc:
        err_console.print(f"[red]cannot start:[/red] {escape(str(exc))}", highlight=False)
        return 2
    except UsageError as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        return 2
    except NotFound as exc:
        err_console.print(f"[red]not found:[/red] {escape(str(exc))}", highlight=False)
        return 1
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
        message = getattr(exc, "format_message", None)
        if callable(message) and type(exc).__name__ != "NoArgsIsHelpError":
            # One line, as every other error: click's message and where to read the usage.
            ctx = getattr(exc, "ctx", None)
            where = f"; see `{ctx.command_path} --help`" if ctx is not None else ""
            err_console.print(f"[red]error:[/red] {escape(message())}{escape(where)}", highlight=False)
            return code
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
