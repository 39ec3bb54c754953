"""The serve bench's own parts, without a model: its load generator against the naive server's app
(a stand-in model), the query texts, and the targets it reports."""

from __future__ import annotations

import asyncio
import threading

import numpy as np

from bench.naive_server import app_for
from bench.serve import _load, _targets, query_texts
from tests.support import harness


class Model:
    def encode(self, texts):
        return np.ones((len(texts), 4), dtype=np.float32)


def test_the_load_generator_counts_answers_and_latencies_of_a_live_server():
    import uvicorn

    port = harness.free_port()
    server = uvicorn.Server(uvicorn.Config(app_for(Model()), host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        harness.wait_for(lambda: harness.http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200, 20, what="server")
        row = asyncio.run(_load(port, query_texts(50), concurrency=4, seconds=1.0, warmup_s=0.2))
    finally:
        server.should_exit = True
        thread.join(10)
    assert row["requests"] > 4 and row["statuses"] == {200: row["requests"]}
    assert row["requests_per_s"] == row["requests"] / 1.0
    assert 0 < row["p50_ms"] <= row["p99_ms"]


def test_queries_are_short_and_distinct():
    texts = query_texts(5_000)
    assert len(set(texts)) == 5_000
    assert max(len(t.split()) for t in texts) <= 9


def test_the_targets_compare_the_highest_concurrency():
    runs = {
        "s": [{"concurrency": 64, "requests_per_s": 900.0, "p99_ms": 40.0, "p99_bound_ms": 45.0}],
        "n": [{"concurrency": 64, "requests_per_s": 300.0}],
        "a": [{"concurrency": None, "requests_per_s": 1000.0}],
    }
    t = _targets(runs, 64)
    assert (t["s_over_n"], t["s_over_a"], t["p99_ms"], t["p99_bound_ms"]) == (3.0, 0.9, 40.0, 45.0)
