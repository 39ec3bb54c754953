"""Operators' view during a real run: the Prometheus counters agree with what happened, and
/readyz follows Milvus."""

from __future__ import annotations

import json
import signal

import pytest

from tests.support import harness

pytestmark = pytest.mark.services


def test_counters_agree_with_what_happened(services, tmp_path):
    topic = harness.unique("metrics")
    harness.create_topic(topic, partitions=2)
    records = [harness.json_record(r) for r in harness.sample_records(40, offset=1000)]
    records += [(None, b"{broken"), (None, b'{"text": ""}'), (b"m-gone", None)]
    harness.produce(topic, records)
    port = harness.free_port()
    env = harness.ingestor_env(topic, harness.unique("g"), str(tmp_path / "m.db"), INGESTOR_METRICS__PORT=str(port))
    proc = harness.start_ingestor(env, log_path=tmp_path / "out.log")
    base = f"http://127.0.0.1:{port}"
    try:
        harness.wait_for(lambda: harness.http_get(base + "/healthz")[0] == 200, 120, what="/healthz")
        harness.wait_for(
            lambda: (
                harness.metric_value(harness.http_get(base + "/metrics")[1], "ingestor_records_consumed_total")
                >= len(records)
                and harness.metric_value(harness.http_get(base + "/metrics")[1], "ingestor_records_in_flight") == 0
            ),
            180,
            what="all records done",
        )
        code, body = harness.http_get(base + "/readyz")
        assert code == 200 and json.loads(body)["status"] == "ok"
        text = harness.http_get(base + "/metrics")[1]
    finally:
        assert harness.stop(proc) == 0
    consumed = harness.metric_value(text, "ingestor_records_consumed_total")
    upserted = harness.metric_value(text, "ingestor_records_upserted_total")
    skipped = harness.metric_value(text, "ingestor_records_skipped_total")
    dead = harness.metric_value(text, "ingestor_records_dead_lettered_total")
    deleted = harness.metric_value(text, "ingestor_records_deleted_total")
    assert consumed == len(records)
    assert (upserted, dead, deleted) == (40, 2, 1)
    assert consumed == upserted + skipped + dead + deleted
    assert 'ingestor_records_dead_lettered_total{reason="invalid_json"} 1.0' in text
    assert harness.metric_value(text, "ingestor_time_to_searchable_seconds_count") == 40
    assert harness.metric_value(text, "ingestor_batch_records_count") >= 1


def test_readyz_follows_milvus(services, tmp_path):
    port, milvus_port = harness.free_port(), harness.free_port()
    state = tmp_path / "svc"
    env_services = {
        "INGESTOR_LITE_PORT": str(milvus_port),
        "INGESTOR_STATE_DIR": str(state),
        "INGESTOR_KAFKA_PORT": harness.KAFKA.rsplit(":", 1)[1],
    }
    import os
    import subprocess

    def svc(*args: str) -> None:
        r = subprocess.run(
            ["bash", str(harness.SERVICES), *args],
            env=dict(os.environ, **env_services),
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert r.returncode == 0, r.stdout + r.stderr

    svc("start", "lite")
    topic = harness.unique("ready")
    env = harness.ingestor_env(
        topic, harness.unique("g"), f"http://127.0.0.1:{milvus_port}", INGESTOR_METRICS__PORT=str(port)
    )
    proc = harness.start_ingestor(env, log_path=tmp_path / "out.log")
    base = f"http://127.0.0.1:{port}"
    try:
        harness.wait_for(lambda: harness.http_get(base + "/readyz")[0] == 200, 120, what="ready")
        svc("stop", "lite")
        harness.wait_for(
            lambda: harness.http_get(base + "/readyz")[0] == 503, 60, what="not ready while Milvus is down"
        )
        assert "milvus" in harness.http_get(base + "/readyz")[1]
        assert harness.http_get(base + "/healthz")[0] == 200  # alive all the same: no restart loop
        svc("start", "lite")
        harness.wait_for(lambda: harness.http_get(base + "/readyz")[0] == 200, 120, what="ready again")
    finally:
        assert harness.stop(proc, signal.SIGTERM) == 0
        svc("down", "--wipe")


OUTCOMES = ("upserted", "skipped", "deleted", "dead_lettered", "superseded", "dropped")


def _ledger(text: str) -> dict[str, float]:
    out = {k: harness.metric_value(text, f"ingestor_records_{k}_total") for k in ("consumed", *OUTCOMES)}
    out["in_flight"] = harness.metric_value(text, "ingestor_records_in_flight")
    out["embedded"] = harness.metric_value(text, "ingestor_records_embedded_total")
    out["cache_hit"] = harness.metric_value(text, "ingestor_records_cache_hit_total")
    out["chunks_upserted"] = harness.metric_value(text, "ingestor_chunks_upserted_total")
    return out


def test_every_record_ends_in_one_outcome_and_repeated_texts_are_embedded_once(services, tmp_path, reference_splitter):
    """A load of many repeats of a few thousand texts (no id, no key: the id is the text's hash), and
    one id repeated within a window, across windows and across partitions, with a tombstone
    between its versions. Every consumed record ends in exactly one outcome counter, at every
    scrape; every distinct text is embedded exactly once, with an empty cache."""
    import random

    topic = harness.unique("ledger")
    harness.create_topic(topic, partitions=3)
    texts = [r["text"] for r in harness.sample_records(1000)]
    assert len(set(texts)) == len(texts)
    rng = random.Random(16)
    load = [t for t in texts for _ in range(3)]
    rng.shuffle(load)
    # The versions of x reuse texts of the load: whatever windows they fall in, no text is new.
    versions = texts[:3]
    stream: list[tuple[int, bytes | None, bytes | None]] = []

    def x(text: str | None) -> tuple[int, bytes, bytes | None]:
        return 0, b"x", None if text is None else json.dumps({"id": "x", "text": text}).encode()

    for i, text in enumerate(load):
        stream.append((i % 3, None, json.dumps({"text": text}).encode()))
        if i in (10, 11):  # twice within one window
            stream.append(x(versions[i - 10]))
        if i == 1500:  # 500 records of its partition from the next x: a tombstone between versions
            stream.append(x(None))
        if i in (2100, 2101):  # one id on two partitions
            stream.append((1 + i % 2, b"y", json.dumps({"id": "y", "text": texts[5]}).encode()))
    stream.append(x(versions[2]))
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=harness.KAFKA, acks="all", linger_ms=5)
    for partition, key, value in stream:
        producer.send(topic, key=key, value=value, partition=partition)
    producer.flush()
    producer.close()

    port = harness.free_port()
    cap, per_poll = 1024, 64  # under the stream's length: backpressure must hold it
    # Every forward pass takes 300 ms longer (INGESTOR_FAULT_SLOW_EMBED_MS): the model is the slowest stage on
    # any machine, so the batcher always runs ahead of it and resolves each window while the last
    # passes of the one before still wait for the model. Copies of those texts in the new window
    # are neither embedded yet nor in Redis: they can only share the pending passes.
    env = harness.ingestor_env(
        topic,
        harness.unique("g"),
        str(tmp_path / "l.db"),
        INGESTOR_METRICS__PORT=str(port),
        INGESTOR_BATCH__MAX_WINDOW_RECORDS="256",
        INGESTOR_BATCH__MAX_WAIT_MS="50",
        INGESTOR_KAFKA__MAX_POLL_RECORDS=str(per_poll),  # a window: at most 256 + one poll
        INGESTOR_BATCH__MAX_IN_FLIGHT_RECORDS=str(cap),
        INGESTOR_FAULT_SLOW_EMBED_MS="300",
    )
    proc = harness.start_ingestor(env, log_path=tmp_path / "out.log")
    base = f"http://127.0.0.1:{port}"
    scrapes: list[dict[str, float]] = []

    def settled() -> bool:
        scrapes.append(_ledger(harness.http_get(base + "/metrics")[1]))
        return scrapes[-1]["consumed"] == len(stream) and scrapes[-1]["in_flight"] == 0

    try:
        harness.wait_for(lambda: harness.http_get(base + "/healthz")[0] == 200, 120, what="/healthz")
        harness.wait_for(settled, 600, interval_s=0.1, what="every record settled")
    finally:
        assert harness.stop(proc) == 0
    for s in scrapes:  # the identity holds at every scrape, mid-stream included
        assert s["consumed"] == sum(s[k] for k in OUTCOMES) + s["in_flight"], s
        assert s["in_flight"] >= 0, f"more outcomes than records consumed: {s}"
    for before, after in zip(scrapes, scrapes[1:]):  # counters only grow: none is taken back
        assert all(after[k] >= before[k] for k in ("consumed", *OUTCOMES)), (before, after)
    assert any(s["in_flight"] > 0 for s in scrapes), "no scrape caught records in flight"
    # A bound the ledger cannot satisfy by construction: the source pauses every partition once
    # the cap is in flight, so a poll starts below the cap and adds at most one poll's records.
    peak = max(s["in_flight"] for s in scrapes)
    assert peak <= cap + per_poll, f"{peak:.0f} records in flight, over the cap {cap} plus one poll ({per_poll})"
    assert peak >= cap // 2, f"at most {peak:.0f} in flight: the cap was never approached, the bound tested nothing"
    final = scrapes[-1]
    # The tombstone is windows away from the versions around it: it is applied, not superseded.
    assert final["superseded"] > 0 and final["deleted"] == 1 and final["dropped"] == 0
    assert final["dead_lettered"] == 0
    # The in-flight sharing was used. A written chunk's vector came from its own unit's pass
    # (`embedded` counts units, one per distinct chunk text; a unit holds one chunk per id, so more
    # than one only where x or y has the text of a load record: at most the chunks of x's three
    # versions and of y's two copies extra), from Redis (`cache_hit`), or from an earlier unit still
    # in flight. No counter of shared chunks exists (it would be the pipeline's to count), so this
    # is the lower bound the other counters give.
    chunks = {t: [c.text for c in reference_splitter.split(t)] for t in texts}
    extra = sum(len(chunks[t]) for t in versions) + 2 * len(chunks[texts[5]])
    shared_at_least = final["chunks_upserted"] - final["embedded"] - extra - final["cache_hit"]
    assert shared_at_least > 0, f"no chunk took the vector of a text in flight: {final}"
    assert final["embedded"] == len({c for t in texts for c in chunks[t]})
    summary = harness.Run(0, (tmp_path / "out.log").read_text()).summary()
    assert summary["consumed"] == len(stream)
    assert summary["consumed"] == sum(summary[k] for k in OUTCOMES) + summary["in_flight"]
    assert summary["in_flight"] == 0
    records = harness.by_record(harness.milvus_rows(str(tmp_path / "l.db"), fields=("id", "text")))
    assert len(records) == len(set(texts)) + 2
    assert [r["text"] for r in records["x"]] == chunks[versions[2]]
    assert [r["text"] for r in records["y"]] == chunks[texts[5]]
