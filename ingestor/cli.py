"""The command line: `ingestor run | serve | check | stats | search | produce | dlq replay | config`."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.markup import escape

import ingestor.cli_tools  # noqa: F401  (registers its commands on `app`)
from ingestor import __version__
from ingestor.cli_common import (
    BackendOpt,
    BootstrapOpt,
    CollectionOpt,
    ConfigOpt,
    DeviceOpt,
    DevicesOpt,
    GroupOpt,
    LogFormatOpt,
    LogLevelOpt,
    MilvusOpt,
    ModelOpt,
    PrecisionOpt,
    RedisOpt,
    TimeoutOpt,
    TopicsOpt,
    UntilCaughtUpOpt,
    WorkersOpt,
    WorkersPerDeviceOpt,
    app,
    console,
    err_console,
    example,
    flag_option,
    log,
    settings_from_flags,
)
from ingestor.config import Settings
from ingestor.errors import ConfigError, NotFound, RetriableError, StartupError, UsageError


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
    epilog=example(
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
    settings = settings_from_flags(
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
    epilog=example(
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
    host: Annotated[str | None, flag_option("--host", "serve.host", "ADDRESS")] = None,
    port: Annotated[str | None, flag_option("--port", "serve.port", "PORT")] = None,
) -> None:
    """Embed queries with exactly the model, backend, precision and chunking that filled the
    collection (the settings of `ingestor run`; a collection written with another identity is
    refused, exit 2), and search it: OpenAI's POST /v1/embeddings and GET /v1/models, TEI's POST
    /embed, POST /search with a structured filter, and /metrics, /healthz, /readyz. Texts of
    concurrent requests share forward passes on one model thread. Runs until SIGTERM or SIGINT."""
    settings = settings_from_flags(
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
    epilog=example(
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
    settings = settings_from_flags(
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


def main() -> None:
    """The console script `ingestor`."""
    from ingestor.checkout import redirect_to_invoking_checkout

    redirect_to_invoking_checkout(sys.argv[1:])
    exit_without_teardown(_run_app())


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


def exit_without_teardown(code: int) -> NoReturn:
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
