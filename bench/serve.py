"""`python -m bench serve`: the query side under load, in one process tree on one machine.

Short query texts (the first words of the bundled sample's records, each distinct), sent one per
request to `POST /embed` by `concurrency` connections that each send their next request as soon as
the last one is answered, for `seconds` after a warm-up; at each concurrency:

- (s) `ingestor serve` (a subprocess, no cache: every text goes through the model);
- (n) a naive server on the same ASGI stack, one `encode` per request (`bench.naive_server`);
- (a) plain `encode` of the same texts in one call, in this process: the ceiling.

Reported: requests/s, p50 and p99 latency; for (s) also the mean forward pass and the latency bound
the issue sets (`max_wait_ms` + 2 × the median pass, with the mean standing in for the median).
The load generator is a small asyncio HTTP/1.1 client, so that it takes little of the CPU the
servers need.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.accounting import percentile
from ingestor.config import Settings
from ingestor.corpus import SAMPLE, load_corpus

QUERY_WORDS = 8


def query_texts(n: int) -> list[str]:
    """`n` distinct short queries: the first words of the sample's records, numbered past its end."""
    texts = list(dict.fromkeys(" ".join(r.text.split()[:QUERY_WORDS]) for r in load_corpus(SAMPLE)))
    return [texts[i % len(texts)] + (f" ({i // len(texts)})" if i >= len(texts) else "") for i in range(n)]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Client:
    """One keep-alive HTTP/1.1 connection sending JSON POSTs."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        status_line = await self.reader.readline()
        status = int(status_line.split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def _load(port: int, texts: list[str], concurrency: int, seconds: float, warmup_s: float) -> dict[str, Any]:
    import orjson

    bodies = [orjson.dumps({"inputs": t}) for t in texts]
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    cursor = 0
    start = time.perf_counter()
    measure_from, end = start + warmup_s, start + warmup_s + seconds

    async def worker() -> None:
        nonlocal cursor
        client = _Client(port)
        try:
            while (now := time.perf_counter()) < end:
                body = bodies[cursor % len(bodies)]
                cursor += 1
                status, _ = await client.post("/embed", body)
                done = time.perf_counter()
                if now >= measure_from:
                    latencies.append(done - now)
                    statuses[status] = statuses.get(status, 0) + 1
        finally:
            client.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    ok = statuses.get(200, 0)
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "statuses": statuses,
        "requests_per_s": ok / seconds,
        "p50_ms": 1000 * (percentile(latencies, 50) or 0.0),
        "p99_ms": 1000 * (percentile(latencies, 99) or 0.0),
    }


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode} before answering")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"{url} did not answer in {timeout_s:.0f}s")


def _metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+-]+)$", text, re.M))


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def run_serve_bench(
    settings: Settings,
    concurrencies: list[int],
    seconds: float,
    warmup_s: float = 2.0,
    progress: Callable[[str], None] = lambda msg: None,
) -> dict[str, Any]:
    texts = query_texts(20_000)
    tmp = Path(tempfile.mkdtemp(prefix="ingestor-bench-serve-"))
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("INGESTOR_REDIS__")}
    repo = str(Path(__file__).resolve().parents[1])
    base_env["PYTHONPATH"] = os.pathsep.join(p for p in (repo, base_env.get("PYTHONPATH", "")) if p)
    out: dict[str, Any] = {"texts": "short queries", "query_words": QUERY_WORDS, "seconds": seconds, "runs": {}}

    def measure(name: str, port: int, extra: Callable[[], dict[str, Any]] | None = None) -> None:
        rows = []
        for c in concurrencies:
            before = extra() if extra else {}
            row = asyncio.run(_load(port, texts, c, seconds, warmup_s))
            if extra:
                after = extra()
                row.update({k: (after[k] - before[k]) for k in after})
            rows.append(row)
            progress(f"({name}) concurrency {c}: {row['requests_per_s']:.0f} req/s, p99 {row['p99_ms']:.1f} ms")
        out["runs"][name] = rows

    port = _free_port()
    env = {
        **base_env,
        "INGESTOR_MILVUS__URI": str(tmp / "serve.db"),
        "INGESTOR_SERVE__PORT": str(port),
        "INGESTOR_MODEL__NAME": settings.model.name,
        "INGESTOR_MODEL__DEVICE": settings.model.device,
        "INGESTOR_MODEL__BACKEND": settings.model.backend,
        "INGESTOR_MODEL__PRECISION": settings.model.precision,
        "INGESTOR_SERVE__MAX_WAIT_MS": str(settings.serve.max_wait_ms),
        "INGESTOR_RUNTIME__LOG_LEVEL": "WARNING",
    }
    progress("(s) starting ingestor serve")
    proc = _start([sys.executable, "-m", "ingestor", "serve"], env, tmp / "serve.log")
    try:
        _wait_ready(f"http://127.0.0.1:{port}/readyz", proc)

        def passes() -> dict[str, float]:
            return {
                "passes": _metric(port, "ingestor_embed_duration_seconds_count"),
                "pass_s": _metric(port, "ingestor_embed_duration_seconds_sum"),
                "texts": _metric(port, "ingestor_batch_records_sum"),
            }

        measure("s", port, passes)
    finally:
        _stop(proc)
    for row in out["runs"]["s"]:
        n = row.pop("passes")
        row["mean_pass_ms"] = 1000 * row.pop("pass_s") / n if n else None
        row["texts_per_pass"] = row.pop("texts") / n if n else None
        row["p99_bound_ms"] = (
            settings.serve.max_wait_ms + 2 * row["mean_pass_ms"] if row["mean_pass_ms"] is not None else None
        )

    port = _free_port()
    progress("(n) starting the naive server")
    device = "cpu" if settings.model.device == "auto" else settings.model.device
    naive = [sys.executable, "-m", "bench.naive_server", "--port", str(port), "--model", settings.model.name]
    proc = _start([*naive, "--device", device], base_env, tmp / "naive.log")
    try:
        _wait_ready(f"http://127.0.0.1:{port}/healthz", proc)
        measure("n", port)
    finally:
        _stop(proc)

    progress("(a) plain encode in one call")
    out["runs"]["a"] = [_plain_encode(settings, texts)]
    out["targets"] = _targets(out["runs"], max(concurrencies))
    return out


def _plain_encode(settings: Settings, texts: list[str]) -> dict[str, Any]:
    from sentence_transformers import SentenceTransformer

    from ingestor.embedder import resolve_model_path

    device = "cpu" if settings.model.device == "auto" else settings.model.device
    model = SentenceTransformer(resolve_model_path(settings.model.name), device=device)
    sample = texts[:4_000]
    model.encode(sample[:256], batch_size=64)  # warm-up
    started = time.perf_counter()
    model.encode(sample, batch_size=64)
    elapsed = time.perf_counter() - started
    return {"concurrency": None, "requests": len(sample), "requests_per_s": len(sample) / elapsed}


def _targets(runs: dict[str, list[dict[str, Any]]], at: int) -> dict[str, Any]:
    s = next(r for r in runs["s"] if r["concurrency"] == at)
    n = next(r for r in runs["n"] if r["concurrency"] == at)
    a = runs["a"][0]
    return {
        "concurrency": at,
        "s_over_n": s["requests_per_s"] / n["requests_per_s"] if n["requests_per_s"] else None,
        "s_over_a": s["requests_per_s"] / a["requests_per_s"],
        "p99_ms": s["p99_ms"],
        "p99_bound_ms": s["p99_bound_ms"],
    }


def render_serve(result: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    table = Table(title=f"ingestor serve: short queries, {result['seconds']:.0f} s per level")
    for col in ("variant", "concurrency", "req/s", "p50 ms", "p99 ms", "mean pass ms", "texts/pass", "non-200"):
        table.add_column(col, justify="right")
    names = {"s": "(s) ingestor serve", "n": "(n) naive encode server", "a": "(a) plain encode, one call"}
    for key in ("s", "n", "a"):
        for row in result["runs"][key]:
            bad = sum(v for k, v in row.get("statuses", {}).items() if k != 200)
            table.add_row(
                names[key],
                str(row["concurrency"] or "-"),
                f"{row['requests_per_s']:.0f}",
                f"{row['p50_ms']:.1f}" if "p50_ms" in row else "-",
                f"{row['p99_ms']:.1f}" if "p99_ms" in row else "-",
                f"{row['mean_pass_ms']:.1f}" if row.get("mean_pass_ms") else "-",
                f"{row['texts_per_pass']:.1f}" if row.get("texts_per_pass") else "-",
                str(bad) if "statuses" in row else "-",
            )
    console.print(table)
    t = result["targets"]
    console.print(
        f"at concurrency {t['concurrency']}: (s) = {t['s_over_n']:.1f} × (n) (target ≥ 3), "
        f"{t['s_over_a']:.2f} × (a) (target ≥ 0.8); p99 {t['p99_ms']:.1f} ms against max_wait_ms + 2 × pass "
        f"= {t['p99_bound_ms']:.1f} ms"
    )
