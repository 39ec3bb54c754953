"""`python -m bench` end to end on a tiny corpus against the real services. It checks that every
figure is there and that the counts are right — never how fast anything is."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ingestor.corpus import SAMPLE, load_corpus
from tests.support import harness

pytestmark = pytest.mark.services

LIMIT = 60


def bench_env() -> dict[str, str]:
    """The environment without this machine's INGESTOR_ settings, but for chunking's: the bench
    must hold with chunking on or off, whichever the default, and INGESTOR_CHUNKING__ENABLED
    runs it the other way."""
    return {k: v for k, v in os.environ.items() if not k.startswith("INGESTOR_") or k.startswith("INGESTOR_CHUNKING__")}


@pytest.fixture(scope="module", params=["lite", "server"])
def figures(request, services, tmp_path_factory):
    """One bench run: on fresh Milvus Lite files (the default), or with `--milvus-uri` on the
    Milvus server, in collections of its own, on the sample twice over (`--cycles 2`). What does
    not depend on the sink, the naive loop (b) and the steady load (e), runs on Lite only."""
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    env = bench_env()
    env["PYTHONUNBUFFERED"] = "1"
    cmd = [
        sys.executable,
        "-m",
        "bench",
        "--device",
        "cpu",
        "--limit",
        str(LIMIT),
        "--steady-seconds",
        "5",
        "--sink-rows",
        "2048",
        "--bootstrap-servers",
        harness.KAFKA,
        "--redis-url",
        harness.REDIS_URL,
        "--json",
        str(out),
    ]
    server = request.getfixturevalue("milvus_server") if request.param == "server" else None
    if server:
        cmd += ["--milvus-uri", server, "--cycles", "2", "--skip-naive", "--steady-seconds", "0"]
    proc = subprocess.run(cmd, env=env, cwd=harness.REPO, capture_output=True, text=True, timeout=540, check=False)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "c / a" in proc.stdout, proc.stdout[-2000:]  # the table was printed
    result = json.loads(out.read_text())
    result["_server"] = server
    return result


def test_the_sink_is_the_one_asked_for(figures):
    server = figures["_server"]
    assert figures["sink"] == server if server else figures["sink"].startswith("Milvus Lite"), figures["sink"]
    alone = figures["sink_alone"]  # the sink's own write rate, measured alone
    assert alone["rows_per_s"] > 0 and alone["rows"] > 0, alone


def test_every_figure_is_there(figures):
    assert figures["device"] == "cpu"
    assert figures["precision"] == "fp32"
    assert figures["limit"] == LIMIT
    cycles = 2 if figures["_server"] else 1
    assert figures["cycles"] == cycles and figures["corpus_records"] == cycles * len(load_corpus(SAMPLE))
    assert figures["tokens"] >= LIMIT
    lite_only = ("naive", "steady")
    if figures["_server"]:
        assert not any(v in figures for v in lite_only), "the server run skips (b) and (e)"
    ran = [v for v in ("plain", "naive", "pipeline", "warm", "steady") if v in figures]
    for variant in [v for v in ran if v != "steady"]:
        v = figures[variant]
        assert v["texts_per_s"] > 0, variant
        assert v["tokens_per_s"] > 0, variant
        assert v["seconds"] > 0, variant
    assert figures["plain"]["batch_size"] in (16, 32, 64, 128)  # the CPU candidates
    # Plain encode embeds what the daemon embeds for the same records (with chunking, their chunks),
    # and its rate counts records, as the daemon's does.
    assert figures["plain"]["records"] == LIMIT
    assert figures["plain"]["texts"] > LIMIT if figures["chunking"] else figures["plain"]["texts"] == LIMIT
    # Every variant over the same corpus counts the same tokens.
    counted = {figures[v]["tokens"] for v in ran if v in ("plain", "naive", "pipeline")}
    assert counted == {figures["tokens"]}
    for variant in [v for v in ran if v != "plain"]:
        assert figures[variant]["latency_p50_ms"] is not None, variant
        assert figures[variant]["latency_p99_ms"] >= figures[variant]["latency_p50_ms"], variant
    for key in ("pipeline_vs_plain", "warm_vs_cold") + (() if figures["_server"] else ("pipeline_vs_naive",)):
        assert figures["ratios"][key] > 0, key
    if not figures["_server"]:
        assert figures["steady"]["latency_bound_ms"] == figures["batch_settings"]["max_wait_ms"] + 500
    assert figures["peak_rss_mib"]["self"] > 100


def rows_hold(figures, variant: str, records: int) -> bool:
    """Rows in Milvus for this many records: one each, or with chunking one per chunk (some of
    the sample's records are longer than the model's maximum sequence length)."""
    rows = figures[variant]["milvus_rows"]
    return rows >= records if figures["chunking"] else rows == records


def test_pipeline_wrote_exactly_the_records(figures):
    c = figures["pipeline"]
    assert c["records"] == LIMIT
    assert c["written"] == LIMIT
    assert c["milvus_records"] == LIMIT and rows_hold(figures, "pipeline", LIMIT), c
    assert c["milvus_ids_match"]
    assert c["counts"]["upserted"] == LIMIT
    assert c["counts"]["cache_hits"] == 0  # the cache started cold
    assert c["counts"]["dead_lettered"] == 0


def test_warm_run_hit_the_cache_for_the_repeated_half(figures):
    d = figures["warm"]
    half = LIMIT // 2
    assert d["repeated_records"] == half and d["new_records"] == half
    # Every repeated text is a hit (with chunking, each of its chunks); a new text may by chance
    # repeat one of (c)'s texts too.
    if figures["chunking"]:
        assert half <= d["cache_hits"] and d["counts"]["embedded"] >= half - LIMIT // 10, d["counts"]
    else:
        assert half <= d["cache_hits"] <= half + LIMIT // 10
    assert 0 < d["cache_hit_share"] < 1
    assert d["counts"]["upserted"] == LIMIT
    assert d["milvus_records"] == 2 * LIMIT and rows_hold(figures, "warm", 2 * LIMIT), d
    assert d["milvus_ids_match"]


def test_ceiling_ran_every_record_through_the_real_services(figures):
    f = figures["ceiling"]
    assert f["records"] == 4 * LIMIT and f["written"] == 4 * LIMIT
    assert f["counts"]["upserted"] == 4 * LIMIT and f["counts"]["cache_hits"] == 0
    assert f["counts"]["embedded"] == f["counts"]["batch_texts"] > 0  # through the (null) model stage
    assert f["texts_per_s"] > 0 and figures["ratios"]["ceiling_vs_plain"] > 0
    assert 0 < f["diagnostics"]["batcher_share"] < 1.5
    assert f["busiest_stage"]["stage"]
    assert f["cpu_us_per_record"] > 0


def test_steady_load_landed_every_record(figures):
    if figures["_server"]:
        pytest.skip("the steady load runs on Lite only")
    e = figures["steady"]
    assert e["records"] >= 90  # ~20/s for 5 s
    assert e["written"] == e["records"]
    assert e["exit_code"] == 0


def test_the_bench_cleaned_up(figures):
    import redis

    client = redis.Redis.from_url(harness.REDIS_URL)
    try:
        assert not list(client.scan_iter(match=f"bench-{figures['run_id']}-*", count=1000))
    finally:
        client.close()
    if figures["_server"]:
        with harness.milvus(figures["_server"]) as milvus:
            left = [c for c in milvus.list_collections() if c.endswith(f"_{figures['run_id']}")]
        assert not left, f"the bench left its collections on the server: {left}"


DOCUMENTS = 12


@pytest.fixture(scope="module")
def chunk_figures(services, tmp_path_factory):
    """`python -m bench --long-documents` on a few long documents, Milvus Lite."""
    out = tmp_path_factory.mktemp("bench") / "chunks.json"
    env = bench_env()
    cmd = [
        sys.executable,
        "-m",
        "bench",
        "--long-documents",
        "--device",
        "cpu",
        "--limit",
        str(DOCUMENTS),
        "--bootstrap-servers",
        harness.KAFKA,
        "--redis-url",
        harness.REDIS_URL,
        "--json",
        str(out),
    ]
    proc = subprocess.run(cmd, env=env, cwd=harness.REPO, capture_output=True, text=True, timeout=540, check=False)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "(c)/(a) in chunks/s" in proc.stdout, proc.stdout[-2000:]
    return json.loads(out.read_text())


def test_the_long_document_bench_reports_chunks_against_plain_encode_of_the_same_chunks(chunk_figures):
    f = chunk_figures
    assert f["documents"] == DOCUMENTS and f["chunks"] > DOCUMENTS
    for variant in ("plain", "pipeline"):
        assert f[variant]["chunks_per_s"] > 0 and f[variant]["tokens_per_s"] > 0, variant
        assert f[variant]["tokens"] == f["tokens"], variant
    assert f["plain"]["records"] == f["chunks"]
    c = f["pipeline"]
    assert c["milvus_rows"] == f["chunks"] and c["milvus_rows_match"]
    assert c["counts"]["upserted"] == DOCUMENTS and c["counts"]["embedded"] <= f["chunks"]
    assert f["ratios"]["pipeline_vs_plain"] > 0


def test_an_edit_takes_most_chunks_from_the_cache(chunk_figures):
    g = chunk_figures["edits"]
    assert g["counts"]["upserted"] == DOCUMENTS
    # One word in one paragraph of each: its chunk is new, and where the word sits in an overlap or
    # moves a cut, a neighbour or two (the splitter's locality: at most 3 chunks per edit).
    assert DOCUMENTS <= g["counts"]["embedded"] <= 3 * DOCUMENTS
    assert g["counts"]["cache_hits"] >= g["chunks_unchanged"] > 0
    assert 0 < g["cache_hit_share"] < 1


def bench_cli(*args: str, timeout: int = 540) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "bench", "--bootstrap-servers", harness.KAFKA, "--redis-url", harness.REDIS_URL, *args]
    return subprocess.run(
        cmd, env=bench_env(), cwd=harness.REPO, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_the_sink_rate_alone_on_the_server_leaves_nothing_behind(milvus_server, tmp_path):
    """`python -m bench --sink-rate`: the GPU kit's first step, with no Kafka, model or Redis."""
    out = tmp_path / "sink_rate.json"
    proc = bench_cli("--sink-rate", "--milvus-uri", milvus_server, "--json", str(out))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    result = json.loads(out.read_text())
    assert result["sink"] == milvus_server and result["rows"] > 0 and result["rows_per_s"] > 0, result
    with harness.milvus(milvus_server) as milvus:
        assert result["collection"] not in milvus.list_collections()


WORKER_RECORDS = 40


def test_worker_processes_each_land_every_record_once(milvus_server, tmp_path):
    """`python -m bench --workers-per-device 1,2 --devices cpu`: the GPU kit's worker runs, on the CPU; the
    corpus cycled (`--cycles`), so that the records are more than the sample's first."""
    out, corpus = tmp_path / "workers.json", tmp_path / "corpus.jsonl"
    corpus.write_text("".join(SAMPLE.read_text(encoding="utf-8").splitlines(keepends=True)[:25]), encoding="utf-8")
    proc = bench_cli(
        "--workers-per-device",
        "1,2",
        "--devices",
        "cpu",
        "--cycles",
        "2",
        "--input",
        str(corpus),
        "--limit",
        str(WORKER_RECORDS),
        "--milvus-uri",
        milvus_server,
        "--timeout-s",
        "240",
        "--json",
        str(out),
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    results = json.loads(out.read_text())
    assert [r["workers"] for r in results] == [1, 2]
    for r in results:
        assert r["rc"] == 0 and r["ids_match"], r
        assert r["records"] == r["milvus_records"] == WORKER_RECORDS, r
        assert r["milvus_rows"] >= WORKER_RECORDS and r["texts_per_s"] > 0, r
    with harness.milvus(milvus_server) as milvus:
        assert not {r["collection"] for r in results} & set(milvus.list_collections())
