"""`python -m bench [options]`, from the repository root: the command line of the bench (see
`bench`); `python -m bench serve [options]` benches the query side (`bench.serve`). Settings come
as for `ingestor run`: `--config`, INGESTOR_* variables, and the flags."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from bench.run import BenchOptions
from ingestor.cli import exit_without_teardown
from ingestor.config import Settings, describe, load_settings
from ingestor.errors import ConfigError, StartupError
from ingestor.logs import setup_logging

app = typer.Typer(add_completion=False, rich_markup_mode=None)
serve_app = typer.Typer(add_completion=False, rich_markup_mode=None)
console = Console()
err_console = Console(stderr=True, soft_wrap=True)


@app.command()
def bench(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML settings file")] = None,
    bootstrap_servers: Annotated[
        str | None, typer.Option("--bootstrap-servers", help=describe("kafka.bootstrap_servers"))
    ] = None,
    redis_url: Annotated[str | None, typer.Option("--redis-url", help=describe("redis.url"))] = None,
    model: Annotated[str | None, typer.Option("--model", help=describe("model.name"))] = None,
    device: Annotated[str | None, typer.Option("--device", help=describe("model.device"))] = None,
    precision: Annotated[str | None, typer.Option("--precision", help=describe("model.precision"))] = None,
    backend: Annotated[str | None, typer.Option("--backend", help=describe("model.backend"))] = None,
    milvus_uri: Annotated[
        str | None,
        typer.Option(
            "--milvus-uri",
            help=(
                "A Milvus server (http://host:port) for every variant, in collections of its own (dropped after); "
                "default: a fresh Milvus Lite file per variant"
            ),
        ),
    ] = None,
    input: Annotated[Path | None, typer.Option("--input", help="JSONL corpus (default: the bundled sample)")] = None,
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit", min=1, help="Records for (a)-(c); default 1000 on CPU, 2000 on GPU, at most 2/3 of the corpus"
        ),
    ] = None,
    steady_seconds: Annotated[
        float, typer.Option("--steady-seconds", min=0, help="Length of the steady-load run (e); 0 skips it")
    ] = 30.0,
    skip_naive: Annotated[bool, typer.Option("--skip-naive", help="Skip the naive loop (b)")] = False,
    compare_precision: Annotated[
        str | None,
        typer.Option(
            "--compare-precision",
            help=(
                "Instead of (a)-(e): plain encode in torch fp32 vs this setting (fp16, bf16, onnx, onnx-int8, "
                "openvino, openvino-bf16, openvino-int8); speed-up and cosine"
            ),
        ),
    ] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write every figure as JSON to this file")
    ] = None,
    skip_ceiling: Annotated[bool, typer.Option("--skip-ceiling", help="Skip the null-forward-pass run (f)")] = False,
    sink_rows: Annotated[
        int, typer.Option("--sink-rows", min=512, help="Rows of the sink's own write rate, measured alone")
    ] = BenchOptions.sink_rows,
    trace_memory: Annotated[
        bool,
        typer.Option(
            "--trace-memory",
            help=(
                "Trace Python's allocations through the steady run (e): its own memory gauge, and the lines that "
                "grew most after warm-up (slows Python)"
            ),
        ),
    ] = False,
    keep: Annotated[
        bool, typer.Option("--keep", help="Keep the bench's topics, Redis keys and Milvus Lite files")
    ] = False,
    long_documents: Annotated[
        bool,
        typer.Option(
            "--long-documents",
            help=(
                "Instead of (a)-(f): long documents with chunking on, chunks/s against plain encode of the same "
                "chunks, and the share of chunks an edit takes from the cache (--limit: documents)"
            ),
        ),
    ] = False,
    cycles: Annotated[
        int,
        typer.Option(
            "--cycles",
            min=1,
            help=(
                "The corpus this many times over, each cycle's texts made distinct by a suffix (none comes from the "
                "cache)"
            ),
        ),
    ] = 1,
    sink_rate: Annotated[
        bool,
        typer.Option(
            "--sink-rate", help="Instead of (a)-(f): only the sink's own write rate, with no Kafka, model or Redis"
        ),
    ] = False,
    workers: Annotated[
        str | None,
        typer.Option(
            "--workers-per-device",
            metavar="K,...",
            help=(
                "Instead of (a)-(f): `ingestor run --devices D --workers-per-device K --until-caught-up` for each "
                "K of this comma-separated list (1,2,4), on --limit records, all writing to the --milvus-uri server"
            ),
        ),
    ] = None,
    devices: Annotated[
        str,
        typer.Option(
            "--devices", help="With --workers-per-device: as for `ingestor run --devices` (GPU indices like 0, or cpu)"
        ),
    ] = "0",
    timeout_s: Annotated[
        float,
        typer.Option(
            "--timeout-s",
            min=1,
            help="With --workers-per-device: seconds each `ingestor run` may take before it is killed",
        ),
    ] = 300.0,
    log_level: Annotated[str | None, typer.Option("--log-level", help=describe("runtime.log_level"))] = "WARNING",
) -> None:
    """Throughput and latency of the pipeline vs plain encode and a naive loop, in one run."""
    from bench.report import render
    from bench.run import bench_corpus, run_bench
    from ingestor.corpus import SAMPLE

    if compare_precision is not None:
        compare_precision = _comparable(compare_precision)
    if milvus_uri is not None:
        from ingestor.config import is_lite_uri

        if is_lite_uri(milvus_uri):
            raise ConfigError(
                f"--milvus-uri must be a Milvus server (http://host:port), not {milvus_uri!r}: "
                "without it the bench uses fresh Milvus Lite files"
            )
    counts = _worker_counts(workers) if workers is not None else None
    if counts is not None and milvus_uri is None:
        raise ConfigError(
            "--workers-per-device needs --milvus-uri: a Milvus server that every worker process writes to"
        )
    settings = _settings(config, bootstrap_servers, redis_url, model, device, precision, backend, log_level)

    def progress(msg: str) -> None:
        err_console.print(f"[dim]{msg}[/dim]")

    if sink_rate:
        from bench.report import render_sink_rate
        from bench.run import run_sink_rate

        result = run_sink_rate(settings, milvus_uri, keep=keep)
        render_sink_rate(result, console)
        _write(result, json_path)
        return
    if counts is not None:
        from bench.report import render_workers
        from bench.run import default_limit
        from bench.services import DEFAULT_REDIS_URL
        from bench.workers import run_workers

        assert milvus_uri is not None
        corpus = bench_corpus(input or SAMPLE, cycles)
        records = corpus[: limit or default_limit(len(corpus), "cpu" if devices == "cpu" else "gpu")]
        redis = settings.redis.url.get_secret_value() if settings.redis.url is not None else DEFAULT_REDIS_URL
        results = run_workers(
            settings, records, counts, devices, milvus_uri, redis, timeout_s, config, progress=progress
        )
        render_workers(results, console)
        _write(results, json_path)
        raise typer.Exit(0 if all(r["rc"] == 0 and r["ids_match"] for r in results) else 1)
    if long_documents:
        from bench.chunks import render_chunks, run_chunk_bench

        result = run_chunk_bench(settings, milvus_uri, limit, keep=keep, progress=progress)
        render_chunks(result, console)
        _write(result, json_path)
        return
    options = BenchOptions(
        input=input or SAMPLE,
        cycles=cycles,
        limit=limit,
        steady_seconds=steady_seconds,
        skip_naive=skip_naive,
        compare_precision=compare_precision,
        json_path=json_path,
        skip_ceiling=skip_ceiling,
        sink_rows=sink_rows,
        trace_memory=trace_memory,
        keep=keep,
        milvus_uri=milvus_uri,
    )
    result = run_bench(settings, options, progress=progress)
    render(result, console)
    _write(result, json_path)


@serve_app.command()
def serve(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML settings file")] = None,
    model: Annotated[str | None, typer.Option("--model", help=describe("model.name"))] = None,
    device: Annotated[str | None, typer.Option("--device", help=describe("model.device"))] = None,
    precision: Annotated[str | None, typer.Option("--precision", help=describe("model.precision"))] = None,
    backend: Annotated[str | None, typer.Option("--backend", help=describe("model.backend"))] = None,
    concurrency: Annotated[
        str, typer.Option("--concurrency", help="Connections sending requests, per level (comma-separated)")
    ] = "1,16,64",
    seconds: Annotated[float, typer.Option("--seconds", min=1, help="Measured seconds per level and server")] = 10.0,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write every figure as JSON to this file")
    ] = None,
    log_level: Annotated[str | None, typer.Option("--log-level", help=describe("runtime.log_level"))] = "WARNING",
) -> None:
    """The query side under load: ingestor serve (s) vs a naive per-request encode server (n) vs
    plain encode in one call (a), at each concurrency."""
    from bench.serve import render_serve, run_serve_bench

    levels = _worker_counts(concurrency, "--concurrency")
    settings = _settings(config, None, None, model, device, precision, backend, log_level)
    result = run_serve_bench(settings, levels, seconds, progress=lambda msg: err_console.print(f"[dim]{msg}[/dim]"))
    render_serve(result, console)
    _write(result, json_path)


def _settings(
    config: Path | None,
    bootstrap_servers: str | None,
    redis_url: str | None,
    model: str | None,
    device: str | None,
    precision: str | None,
    backend: str | None,
    log_level: str | None,
) -> Settings:
    settings = load_settings(
        config,
        {
            "kafka": {"bootstrap_servers": bootstrap_servers},
            "redis": {"url": redis_url},
            "model": {"name": model, "device": device, "backend": backend, "precision": precision},
            "runtime": {"log_level": log_level.upper() if log_level else None},
        },
    )
    setup_logging(settings.runtime.log_level, settings.runtime.log_format)
    return settings


def _write(result: object, path: Path | None) -> None:
    from bench.report import write_json

    if path is not None:
        write_json(result, path)
        console.print(f"figures written to {path}")


def _worker_counts(text: str, option: str = "--workers-per-device") -> list[int]:
    """--workers-per-device (or `option`) 1,2,4 as [1, 2, 4], or ConfigError."""
    try:
        counts = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise ConfigError(f"{option} takes counts of at least 1, comma-separated (1,2,4), not {text!r}")
    return counts


def _comparable(label: str) -> str:
    """A --compare-precision label in its canonical form (`onnx` -> `onnx-fp32`), or ConfigError."""
    from ingestor.config import parse_variant

    parsed = parse_variant(label)
    if parsed == {"backend": "torch", "precision": "fp32"}:
        raise ConfigError("--compare-precision fp32 compares torch fp32 with itself: name another setting")
    return parsed["precision"] if parsed["backend"] == "torch" else f"{parsed['backend']}-{parsed['precision']}"


def main() -> NoReturn:
    """Run the command line and exit with its code (2: bad settings or a start-up check failed),
    without the interpreter's teardown: torch's bindings print noise for objects alive at exit."""
    try:
        if sys.argv[1:2] == ["serve"]:
            code = serve_app(args=sys.argv[2:], prog_name="python -m bench serve", standalone_mode=False)
        else:
            code = app(standalone_mode=False)
        code = code if isinstance(code, int) else 0
    except (ConfigError, StartupError) as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        code = 2
    except typer.Exit as exc:
        code = exc.exit_code
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except (typer.Abort, KeyboardInterrupt):
        code = 130
    except Exception as exc:
        # Usage errors carry their exit code and show themselves.
        exit_code = getattr(exc, "exit_code", None)
        if not isinstance(exit_code, int):
            raise
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        code = exit_code
    exit_without_teardown(code)


if __name__ == "__main__":
    main()
