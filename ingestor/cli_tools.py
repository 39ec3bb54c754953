"""The one-shot commands: `stats`, `search`, `produce`, `dlq replay` and `config`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from ingestor.cli_common import (
    BackendOpt,
    BootstrapOpt,
    CollectionOpt,
    ConfigOpt,
    DeviceOpt,
    GroupOpt,
    LogFormatOpt,
    LogLevelOpt,
    MilvusOpt,
    ModelOpt,
    PrecisionOpt,
    RedisOpt,
    TimeoutOpt,
    TopicsOpt,
    app,
    at_least,
    config_app,
    console,
    dlq_app,
    example,
    flag_overrides,
    settings_from_flags,
)
from ingestor.config import Settings, load_settings
from ingestor.errors import NotFound, Reason, UsageError


@app.command(
    short_help="Rows, cache, lag per partition, DLQ depth.",
    epilog=example("ingestor stats", "ingestor stats --collection docs --timeout 10"),
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
    settings = settings_from_flags(
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
    epilog=example('ingestor search "sort a list in place" -k 5', 'ingestor search "tokenizer" --collection docs'),
)
def search(
    query: Annotated[str, typer.Argument(metavar="QUERY", show_default=False, hidden=True)],
    k: Annotated[
        int,
        typer.Option(
            "-k", metavar="N", callback=at_least(1), help="Number of records to show [default: 5]", show_default=False
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
    settings = settings_from_flags(
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
    epilog=example("ingestor produce my.jsonl", "ingestor produce notes.txt --topic documents --limit 100"),
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
        typer.Option("--limit", metavar="N", callback=at_least(1), help="Publish at most N records [default: all]"),
    ] = None,
) -> None:
    """Publish FILE, JSONL (one JSON object a line) or plain text lines, to Kafka, with a progress
    bar. A JSON line goes as it is (its `id` is the key); a text line is wrapped as {"text": line}."""
    settings = settings_from_flags(config, quiet=True, bootstrap_servers=bootstrap_servers)
    if not file.is_file():
        raise UsageError(f"{file}: no such file" if not file.exists() else f"{file}: not a file")
    from ingestor.commands.produce import publish_file
    from ingestor.config.values import check_topic_name
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
    epilog=example(
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
            callback=at_least(0),
            help="Only records from this partition of the source topic [default: all]",
        ),
    ] = None,
    from_offset: Annotated[
        int | None,
        typer.Option(
            "--from-offset",
            metavar="N",
            callback=at_least(0),
            help="Only source offsets >= N (of every partition, or --partition's) [default: the first]",
        ),
    ] = None,
    to_offset: Annotated[
        int | None,
        typer.Option(
            "--to-offset",
            metavar="N",
            callback=at_least(0),
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
    settings = settings_from_flags(config, quiet=True, bootstrap_servers=bootstrap_servers, topics=topics)
    from ingestor.commands.replay import Selection, replay_dead_letters
    from ingestor.logs import quiet_kafka_clients

    quiet_kafka_clients()  # as in produce: what fails for good is reported once, by this command

    wanted = Selection(set(reason or []), partition, from_offset, to_offset)
    n = replay_dead_letters(settings, wanted, dry_run, console)
    console.print(f"{'would replay' if dry_run else 'replayed'} {n} record(s)")


# -- config ------------------------------------------------------------------------------------------


def _config_command(short: str, *examples: str) -> Any:
    return config_app.command(short_help=short, epilog=example(*examples))


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
    settings = load_settings(config, flag_overrides(**flags))
    from ingestor.config.reference import effective_rows, sources

    rows = [("setting", "value", "source")] + effective_rows(settings, sources(config, flag_overrides(**flags)))
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
