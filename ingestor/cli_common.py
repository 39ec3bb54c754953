"""What the commands share: the Typer apps, the options that map onto settings, and loading the
settings (with logging set up by them) from flags, variables and a file."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from ingestor.config import Settings, load_settings
from ingestor.config.reference import flag_help
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


def example(*lines: str) -> str:
    """A command's epilog: its examples, kept as written (click rewraps paragraphs without \\b)."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


def at_least(low: float) -> Any:
    """A flag's check of its lower bound (click's own would print `[x>=1]` into the help)."""

    def check(value: float | None) -> float | None:
        if value is not None and value < low:
            raise typer.BadParameter(f"must be at least {low:g}, got {value:g}")
        return value

    return check


def flag_option(name: str, path: str, metavar: str) -> Any:
    return typer.Option(name, metavar=metavar, help=flag_help(path), show_default=False)


ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", metavar="FILE", help="YAML settings file (its keys: docs/configuration.md) [default: none]"
    ),
]
BootstrapOpt = Annotated[str | None, flag_option("--bootstrap-servers", "kafka.bootstrap_servers", "HOST:PORT,...")]
TopicsOpt = Annotated[str | None, flag_option("--topics", "kafka.topics", "TOPIC,...")]
GroupOpt = Annotated[str | None, flag_option("--group-id", "kafka.group_id", "GROUP")]
RedisOpt = Annotated[str | None, flag_option("--redis-url", "redis.url", "URL")]
MilvusOpt = Annotated[str | None, flag_option("--milvus-uri", "milvus.uri", "URI")]
CollectionOpt = Annotated[str | None, flag_option("--collection", "milvus.collection", "NAME")]
ModelOpt = Annotated[str | None, flag_option("--model", "model.name", "NAME")]
DeviceOpt = Annotated[str | None, flag_option("--device", "model.device", "DEVICE")]
PrecisionOpt = Annotated[str | None, flag_option("--precision", "model.precision", "fp32|fp16|bf16|int8")]
BackendOpt = Annotated[str | None, flag_option("--backend", "model.backend", "torch|onnx|openvino")]
LogFormatOpt = Annotated[str | None, flag_option("--log-format", "runtime.log_format", "text|json")]
LogLevelOpt = Annotated[str | None, flag_option("--log-level", "runtime.log_level", "LEVEL")]
TimeoutOpt = Annotated[
    float,
    typer.Option(
        "--timeout",
        metavar="SECONDS",
        callback=at_least(0.1),
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
        callback=at_least(1),
        help="Worker processes per device (--devices cpu is one device) [default: 1 on the CPU; on GPUs "
        "min(4, cores per GPU // 2), or 1 with a Milvus Lite file]",
    ),
]
WorkersOpt = Annotated[
    int | None,
    typer.Option(
        "--workers",
        metavar="K",
        callback=at_least(1),
        help="The older name of --workers-per-device; the same count [default: as --workers-per-device]",
    ),
]


def flag_overrides(
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


def settings_from_flags(config: Path | None = None, quiet: bool = False, **flags: str | None) -> Settings:
    """The settings, and logging set up by them; `quiet`: a one-shot command's, WARNING and up."""
    settings = load_settings(config, flag_overrides(**flags))
    level = "WARNING" if quiet and not flags.get("log_level") else settings.runtime.log_level
    setup_logging(level, settings.runtime.log_format)
    return settings
