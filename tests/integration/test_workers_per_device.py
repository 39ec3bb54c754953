"""`ingestor run --workers-per-device 2` for real, on the CPU (one device): the two workers of one
device join one consumer group and split its partitions, each on a metrics port of its own, and
together they land every record. A stand-in model keeps two copies of it cheap."""

from __future__ import annotations

import signal

import pytest

from tests.support import harness

pytestmark = pytest.mark.services


def _assigned(port: int) -> float | None:
    """The partitions the worker on this port owns, or None while it does not answer."""
    status, text = harness.http_get(f"http://127.0.0.1:{port}/metrics")
    return harness.metric_value(text, "ingestor_partitions_assigned") if status == 200 else None


@pytest.mark.timeout(120)
def test_the_workers_of_one_device_share_the_partitions_of_one_group(milvus_server, tmp_path):
    topic, group = harness.unique("per-device"), harness.unique("g")
    collection = harness.unique("per_device").replace("-", "_")
    harness.create_topic(topic, partitions=4)
    ids = [f"w{i}" for i in range(40)]
    harness.produce(topic, [harness.json_record({"id": i, "text": f"record {i} for two workers"}) for i in ids])
    port = harness.free_port()
    env = harness.ingestor_env(
        topic,
        group,
        milvus_server,
        redis=False,
        INGESTOR_METRICS__PORT=str(port),
        INGESTOR_MILVUS__COLLECTION=collection,
        INGESTOR_FAULT_STAND_IN_MODEL="1",
        INGESTOR_CHUNKING__ENABLED="false",
        INGESTOR_KAFKA__SESSION_TIMEOUT_MS="6000",
        INGESTOR_KAFKA__HEARTBEAT_INTERVAL_MS="1000",
    )
    log = tmp_path / "supervisor.log"
    proc = harness.start_ingestor(env, "--devices", "cpu", "--workers-per-device", "2", log_path=log)
    try:
        # Two members of one group split the 4 partitions; in two groups each would own all 4.
        harness.wait_for(
            lambda: [_assigned(port + 1), _assigned(port + 2)] == [2.0, 2.0],
            90,
            what=f"two workers owning two partitions each:\n{log.read_text()[-3000:]}",
        )

        def caught_up() -> bool:
            committed, ends = harness.offsets(group, topic)
            return committed == ends

        harness.wait_for(caught_up, 60, interval_s=1, what="the group to commit every record")
    finally:
        code = harness.stop(proc, signal.SIGTERM)
    text = log.read_text()
    assert code == 0, text[-3000:]
    assert "supervising 2 worker(s) on the CPU" in text and "Traceback" not in text
    try:
        stored = {r["id"] for r in harness.milvus_rows(milvus_server, collection, fields=("id",))}
        assert stored == set(ids)
    finally:
        with harness.milvus(milvus_server) as client:
            client.drop_collection(collection)
