"""What a real Milvus server does that Milvus Lite does not, each against the Milvus 2.3.5 server
of deploy/local/services.sh: an index built on a new collection, a collection that exists but is
not loaded (released before the start, or while the daemon runs), and a server too old for upsert
(the real server behind a proxy that reports an older version)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent import futures

import pytest

from bench import milvus
from ingestor.config import MilvusSettings
from ingestor.sink import MilvusSink
from tests.support import harness

pytestmark = pytest.mark.services

DIM = 8


def _sink(uri: str, collection: str, **settings: object) -> MilvusSink:
    sink = MilvusSink(MilvusSettings(uri=uri, collection=collection, **settings))
    sink.connect()
    sink.ensure_collection(DIM, "m")
    return sink


def _load_state(uri: str, collection: str) -> str:
    with harness.milvus(uri) as client:
        return str(client.get_load_state(collection)["state"])


def test_a_new_collection_gets_the_configured_index_and_is_loaded(milvus_server):
    name = harness.unique("indexed").replace("-", "_")
    sink = _sink(milvus_server, name, index_type="HNSW", metric_type="IP", index_params={"M": 8, "efConstruction": 64})
    try:
        with harness.milvus(milvus_server) as client:
            assert client.list_indexes(name, field_name="vector")
            index = client.describe_index(name, client.list_indexes(name, field_name="vector")[0])
        assert index["index_type"] == "HNSW" and index["metric_type"] == "IP", index
        assert str(index.get("M")) == "8" and str(index.get("efConstruction")) == "64", index
        assert "Loaded" in _load_state(milvus_server, name)
    finally:
        milvus.drop(sink)
        sink.close()


def test_a_released_collection_without_its_index_is_indexed_and_loaded_at_start(milvus_server):
    """As a create that failed half-way, or a server restarted, leaves it: the collection exists,
    has no index and is not loaded. The next start builds the index and loads it."""
    name = harness.unique("released").replace("-", "_")
    _sink(milvus_server, name).close()
    with harness.milvus(milvus_server) as client:
        client.release_collection(name)
        client.drop_index(name, "vector")
        assert not client.list_indexes(name, field_name="vector")
    assert "NotLoad" in _load_state(milvus_server, name)
    sink = _sink(milvus_server, name)
    try:
        with harness.milvus(milvus_server) as client:
            assert client.list_indexes(name, field_name="vector")
        assert "Loaded" in _load_state(milvus_server, name)
    finally:
        milvus.drop(sink)
        sink.close()


def test_a_collection_released_while_the_daemon_runs_is_reloaded_and_nothing_is_lost(milvus_server, services, tmp_path):
    topic, group = harness.unique("reload"), harness.unique("g")
    collection = harness.unique("reload").replace("-", "_")
    harness.create_topic(topic, partitions=2)
    # The second half repeats 20 records of the first: their cache markers send the daemon to read
    # Milvus (a marker must never claim what Milvus does not hold), which a released collection
    # refuses; writes alone would not notice, as a server takes upserts into a released collection.
    first = harness.sample_records(40)
    second = first[:20] + harness.sample_records(20, offset=40)
    harness.produce(topic, [harness.json_record(r) for r in first])
    env = harness.ingestor_env(topic, group, milvus_server, INGESTOR_MILVUS__COLLECTION=collection)
    log_path = tmp_path / "daemon.log"
    proc = harness.start_ingestor(env, log_path=log_path)
    try:
        harness.wait_for(
            lambda: len(_ids(milvus_server, collection)) == 40, 240, interval_s=1, what="the first 40 records in Milvus"
        )
        with harness.milvus(milvus_server) as client:
            client.release_collection(collection)
        assert "NotLoad" in _load_state(milvus_server, collection)
        harness.produce(topic, [harness.json_record(r) for r in second])
        harness.wait_for(
            lambda: len(_ids(milvus_server, collection)) == 60,
            240,
            interval_s=1,
            what="the collection loaded again, with the 20 new records",
        )
        assert proc.poll() is None, log_path.read_text()[-4000:]
    finally:
        code = harness.stop(proc)
    log = log_path.read_text()
    assert code == 0, log[-4000:]
    assert "was not loaded; reloaded it" in log, log[-4000:]
    summary = harness.Run(code, log).summary()
    assert summary["skipped"] == 20 and summary["upserted"] == 60, summary
    assert _ids(milvus_server, collection) == {r["id"] for r in first + second}
    committed, end = harness.offsets(group, topic)
    assert committed == end


def _ids(uri: str, collection: str) -> set[str]:
    """The record ids in the collection (from its chunks' ids), loading it for the read if it is
    released (the daemon's own reload is what the test is about, so the read must not depend on it)."""
    with harness.milvus(uri) as client:
        if not client.has_collection(collection):
            return set()
        if "Loaded" not in str(client.get_load_state(collection)["state"]):
            return set()
        rows = client.query(
            collection, filter='id != ""', output_fields=["id"], limit=16384, consistency_level="Strong"
        )
    return set(harness.by_record(rows))


# -- a server too old for upsert -------------------------------------------------------------------


@pytest.fixture
def old_server(milvus_server) -> Iterator[str]:
    """The real server behind a gRPC proxy that reports it as v2.2.9 (upsert came in 2.3.0) and
    passes every other call through untouched."""
    import grpc
    from pymilvus.grpc_gen import milvus_pb2

    target = milvus_server.removeprefix("http://")
    channel = grpc.insecure_channel(target)

    def forward(method: str):
        call = channel.unary_unary(method)  # raw bytes both ways

        def handle(request: bytes, context: grpc.ServicerContext) -> bytes:
            reply = call(request, metadata=context.invocation_metadata(), timeout=30)
            if method.endswith("/GetVersion"):
                version = milvus_pb2.GetVersionResponse.FromString(reply)
                version.version = "v2.2.9"
                reply = version.SerializeToString()
            return reply

        return grpc.unary_unary_rpc_method_handler(handle)

    class Proxy(grpc.GenericRpcHandler):
        def service(self, details):
            return forward(details.method)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), handlers=[Proxy()])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop(grace=None)
        channel.close()


def test_a_server_too_old_for_upsert_is_refused_with_exit_2(old_server, services):
    topic = harness.unique("old")
    harness.create_topic(topic, partitions=1)
    harness.produce(topic, [harness.json_record(r) for r in harness.sample_records(3)])
    group = harness.unique("g")
    env = harness.ingestor_env(
        topic, group, old_server, INGESTOR_MILVUS__COLLECTION=harness.unique("old").replace("-", "_")
    )
    started = time.monotonic()
    result = harness.run_ingestor(env, timeout=180)
    assert result.returncode == 2, result.output[-4000:]
    message = " ".join(result.output.split())  # the console wraps long lines
    assert "is v2.2.9" in message and "upgrade the server" in message, result.output[-2000:]
    assert "Traceback" not in result.output, result.output[-4000:]
    committed, _ = harness.offsets(group, topic)
    assert all(c is None for c in committed.values()), "nothing may be consumed"
    assert time.monotonic() - started < 120, "a refusal is immediate, not retried"
