"""Batches a consumer cannot decode (fault matrix row 21): the partition pauses alone, is retried
with backoff and reported, never skipped; the others go on; SIGTERM still exits within its bound."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from tests.faults import oracle
from tests.faults.stack import Scenario, sample
from tests.support import harness

pytestmark = pytest.mark.services


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0  # utime + stime, in clock ticks


def test_an_undecodable_partition_pauses_alone_is_reported_and_never_skipped(scenario: Scenario, reference_model):
    scn = scenario
    scn.create_topic(3)
    # Partition 0: decodable records, a zstd batch this daemon cannot decode, more decodable ones.
    head = scn.produce_kcat(sample(6), partition=0, codec="gzip")
    stuck = scn.produce_kcat(sample(12, 6), partition=0, codec="zstd")
    tail = scn.produce_kcat(sample(6, 18), partition=0, codec="gzip")
    free = scn.produce_kcat(sample(12, 24), partition=1, codec="snappy")
    free += scn.produce_kcat(sample(12, 36), partition=2, codec="lz4")
    port = harness.free_port()
    bound_s = 12
    d = scn.start(
        INGESTOR_FAULT_HIDE_CODEC="zstd",
        INGESTOR_METRICS__PORT=str(port),
        INGESTOR_RUNTIME__SHUTDOWN_TIMEOUT_S=str(bound_s),
        INGESTOR_RETRY__MAX_BACKOFF_MS="1000",
    )
    scn.wait_landed(head + free, daemon=d)
    d.wait_log(
        rf"ERROR .*cannot decode the batch of {re.escape(scn.topic)}\[0\] at offset {len(head)} "
        r"\(UnsupportedCodecError"
    )
    base = f"http://127.0.0.1:{port}"
    # Retried with backoff (capped at 1 s here), without spinning, and reported once.
    harness.wait_for(
        lambda: (
            harness.metric_value(
                harness.http_get(base + "/metrics")[1], "ingestor_undecodable_batches_total", reason="unsupported_codec"
            )
            >= 3
        ),
        60,
        what="three attempts",
    )
    cpu_before, wall_before = _cpu_seconds(d.proc.pid), time.monotonic()
    time.sleep(5)
    cpu_share = (_cpu_seconds(d.proc.pid) - cpu_before) / (time.monotonic() - wall_before)
    assert cpu_share < 0.5, f"the daemon used {cpu_share:.0%} of a core while blocked: spinning"
    assert len(re.findall(r"^\S+ \S+ ERROR", d.log(), re.M)) == 1, d.log()[-4000:]
    metrics = harness.http_get(base + "/metrics")[1]
    assert harness.metric_value(metrics, "ingestor_partitions_blocked", reason="unsupported_codec") == 1
    code, body = harness.http_get(base + "/readyz")
    reason = json.loads(body)["reason"]
    assert code == 503 and f"{scn.topic}[0] at offset {len(head)} cannot be decoded" in reason, (code, body)

    # Nothing past the bad batch is committed or written; the other partitions are done.
    committed, ends = scn.offsets()
    assert committed[0] == len(head), committed
    assert committed[1] == ends[1] and committed[2] == ends[2], (committed, ends)
    assert not scn.ids_of(stuck + tail) & scn.milvus_ids()

    code, took = d.terminate(timeout_s=bound_s + 60)
    assert code == 0, d.log()[-4000:]
    assert took <= bound_s + 2, f"took {took:.1f}s to exit after SIGTERM (bound {bound_s}s)"
    assert scn.committed()[0] == len(head)

    # With the codec back, the same records land: nothing was skipped.
    oracle.check(scn, reference_model)
