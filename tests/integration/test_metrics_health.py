"""Operators' view during a real run: the Prometheus counters agree with what happened, and
/readyz follows Milvus."""

from __future__ import annotations

import json
import re
import signal

import pytest

from tests import harness

pytestmark = pytest.mark.services


def test_counters_agree_with_what_happened(services, tmp_path):
    topic = harness.unique("metrics")
    harness.create_topic(topic, partitions=2)
    records = [harness.json_record(r) for r in harness.sample_records(40, offset=1000)]
    records += [(None, b"{broken"), (None, b'{"text": ""}'), (b"m-gone", None)]
    harness.produce(topic, records)
    port = harness.free_port()
    env = harness.ingestor_env(topic, harness.unique("g"), str(tmp_path / "m.db"),
                               INGESTOR_METRICS__PORT=str(port))
    proc = harness.start_ingestor(env, log_path=tmp_path / "out.log")
    base = f"http://127.0.0.1:{port}"
    try:
        harness.wait_for(lambda: harness.http_get(base + "/healthz")[0] == 200, 120, what="/healthz")
        harness.wait_for(lambda: harness.metric_value(harness.http_get(base + "/metrics")[1], "ingestor_records_consumed_total") >= len(records)
                         and harness.metric_value(harness.http_get(base + "/metrics")[1], "ingestor_records_in_flight") == 0, 180,
                         what="all records done")
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
    env_services = {"INGESTOR_MILVUS_PORT": str(milvus_port), "INGESTOR_STATE_DIR": str(state),
                    "INGESTOR_KAFKA_PORT": harness.KAFKA.rsplit(":", 1)[1]}
    import os
    import subprocess

    def svc(*args: str) -> None:
        r = subprocess.run(["bash", str(harness.SERVICES), *args], env=dict(os.environ, **env_services),
                           capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, r.stdout + r.stderr

    svc("start", "milvus")
    topic = harness.unique("ready")
    env = harness.ingestor_env(topic, harness.unique("g"), f"http://127.0.0.1:{milvus_port}",
                               INGESTOR_METRICS__PORT=str(port))
    proc = harness.start_ingestor(env, log_path=tmp_path / "out.log")
    base = f"http://127.0.0.1:{port}"
    try:
        harness.wait_for(lambda: harness.http_get(base + "/readyz")[0] == 200, 120, what="ready")
        svc("stop", "milvus")
        harness.wait_for(lambda: harness.http_get(base + "/readyz")[0] == 503, 60, what="not ready while Milvus is down")
        assert "milvus" in harness.http_get(base + "/readyz")[1]
        assert harness.http_get(base + "/healthz")[0] == 200  # alive all the same: no restart loop
        svc("start", "milvus")
        harness.wait_for(lambda: harness.http_get(base + "/readyz")[0] == 200, 120, what="ready again")
    finally:
        assert harness.stop(proc, signal.SIGTERM) == 0
        svc("down", "--wipe")
