"""Every patch of a library's internals, and every private call, against the installed library:
each test here fails as soon as an upgrade changes the code a patch was read against, so that
someone reads the new code before moving a fingerprint; and each patch that cannot be applied says
so at WARNING, naming what is lost (docs/architecture.md, "Patches of library internals")."""

from __future__ import annotations

import inspect
import logging
from types import SimpleNamespace

import pytest

from ingestor import patches
from ingestor.patches import fingerprint

# pymilvus 3.0.2's private parts that the sink calls (not replaced, so only this test holds them).
GRPC_UPSERT = "332ade3a2313811e"  # GrpcHandler.upsert: (collection_name, entities, partition_name, timeout, ...)
GRPC_UPSERT_REQUEST = "6099a8de035c9886"  # GrpcHandler._prepare_batch_upsert_request: packs against schema=
GRPC_DESCRIBE = "376b435be0358342"  # GrpcHandler.describe_collection: the raw schema, fields with their types
COLLECTION_TS = "829a77dfca8c8407"  # ts_utils.get_collection_ts(collection_name, endpoint, db_name)


@pytest.fixture(autouse=True)
def said_afresh(monkeypatch):
    """Each test sees the once-per-process warnings afresh."""
    monkeypatch.setattr(patches, "_said", set())


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


# -- kafka-python: the read loop (kafka_common) ------------------------------------------------------


def test_kafka_pythons_read_loop_is_the_one_the_fix_was_read_against():
    from kafka.net.transport import KafkaTCPTransport

    from ingestor import kafka_common

    # Installed at import only where the fingerprint matched: not installed means kafka-python changed.
    assert KafkaTCPTransport._read_from_sock is kafka_common._read_from_sock


def test_a_read_loop_that_changed_is_left_alone_and_the_loss_is_said(monkeypatch, caplog):
    from kafka.net.transport import KafkaTCPTransport

    from ingestor import kafka_common

    async def changed(self) -> None:
        return None

    monkeypatch.setattr(KafkaTCPTransport, "_read_from_sock", changed)
    with caplog.at_level(logging.WARNING):
        assert kafka_common._patch_transport() is False
    assert KafkaTCPTransport._read_from_sock is changed
    [warning] = _warnings(caplog)
    assert kafka_common.READ_LOOP in warning and "refusal of the SASL login reads as an outage" in warning


# -- kafka-python: Fetcher.PartitionRecords (undecodable) ---------------------------------------------


def test_kafka_pythons_partition_records_are_what_the_guard_was_read_against():
    from kafka import KafkaConsumer

    from ingestor import undecodable

    assert undecodable.fits(), "PartitionRecords.take or __init__ changed: read them, then move the fingerprints"
    # The guard reaches the class through the consumer's fetcher.
    assert "self._fetcher = Fetcher(" in inspect.getsource(KafkaConsumer.__init__)


def test_the_guard_goes_onto_a_fetcher_and_says_when_there_is_none(caplog):
    from kafka.consumer.fetcher import Fetcher

    from ingestor import undecodable

    consumer = SimpleNamespace(_fetcher=SimpleNamespace(PartitionRecords=Fetcher.PartitionRecords))
    assert undecodable.install(consumer)
    assert consumer._fetcher.PartitionRecords is undecodable._PartitionRecords
    with caplog.at_level(logging.WARNING):
        assert not undecodable.install(SimpleNamespace())
    [warning] = _warnings(caplog)
    assert undecodable.FETCH_GUARD in warning and "poll() spin" in warning


# -- pymilvus: CHECK_STR_ARRAY, the column upsert, write timestamps (milvus_schema) ---------------------


def test_pymilvus_still_gates_the_varchar_check_with_the_flag(monkeypatch):
    from pymilvus.client import entity_helper

    from ingestor.milvus_schema import STR_ARRAY_FINGERPRINT, skip_str_array_check

    assert fingerprint(entity_helper.convert_to_str_array) == STR_ARRAY_FINGERPRINT
    source = inspect.getsource(entity_helper)
    assert "DataType.VARCHAR: lambda v, fi: convert_to_str_array(v, fi, CHECK_STR_ARRAY)" in source
    assert "entity_to_str_arr(entity_values, field_info, CHECK_STR_ARRAY)" in source
    monkeypatch.setattr(entity_helper, "CHECK_STR_ARRAY", True)  # restored after
    skip_str_array_check()
    assert entity_helper.CHECK_STR_ARRAY is False


def test_a_changed_varchar_conversion_keeps_its_check_and_the_loss_is_said(monkeypatch, caplog):
    from pymilvus.client import entity_helper

    from ingestor.milvus_schema import NO_STR_CHECK, skip_str_array_check

    monkeypatch.setattr(entity_helper, "CHECK_STR_ARRAY", True)
    monkeypatch.setattr(entity_helper, "convert_to_str_array", lambda values, info, check=True: values)
    with caplog.at_level(logging.WARNING):
        skip_str_array_check()
    assert entity_helper.CHECK_STR_ARRAY is True
    [warning] = _warnings(caplog)
    assert NO_STR_CHECK in warning and "character by character" in warning


def test_pymilvus_column_upsert_and_raw_schema_are_what_the_sink_calls():
    from pymilvus import MilvusClient
    from pymilvus.client.grpc_handler import GrpcHandler

    assert callable(MilvusClient._get_connection)
    assert list(inspect.signature(GrpcHandler.upsert).parameters)[:5] == [
        "self",
        "collection_name",
        "entities",
        "partition_name",
        "timeout",
    ]
    assert fingerprint(GrpcHandler.upsert) == GRPC_UPSERT
    assert fingerprint(GrpcHandler._prepare_batch_upsert_request) == GRPC_UPSERT_REQUEST
    assert 'schema = kwargs.get("schema")' in inspect.getsource(GrpcHandler._prepare_batch_upsert_request)
    assert fingerprint(GrpcHandler.describe_collection) == GRPC_DESCRIBE


def test_without_a_column_upsert_the_sink_writes_rows_and_says_what_that_costs(caplog):
    from ingestor.milvus_schema import COLUMN_WRITES, column_schema

    client = SimpleNamespace(_get_connection=lambda: SimpleNamespace(describe_collection=lambda *a, **k: {}))
    with caplog.at_level(logging.WARNING):
        assert column_schema(client, "c", 1.0) == (None, {})
    [warning] = _warnings(caplog)
    assert COLUMN_WRITES in warning and "writing rows instead" in warning


def test_pymilvus_keeps_the_timestamp_of_each_write_where_the_sink_reads_it():
    from pymilvus.client import ts_utils
    from pymilvus.client.grpc_handler import GrpcHandler

    assert fingerprint(ts_utils.get_collection_ts) == COLLECTION_TS
    assert isinstance(inspect.getattr_static(GrpcHandler, "server_address"), property)
    for write in (GrpcHandler.upsert, GrpcHandler.delete):
        assert "ts_utils.update_collection_ts(" in inspect.getsource(write), write.__name__


def test_without_write_timestamps_reads_go_strong_and_that_is_said(caplog):
    from ingestor.milvus_schema import WRITE_TIMESTAMPS, last_write_timestamp

    client = SimpleNamespace(_get_connection=lambda: SimpleNamespace())  # no server_address
    with caplog.at_level(logging.WARNING):
        assert last_write_timestamp(client, "c", "") == 0
    [warning] = _warnings(caplog)
    assert WRITE_TIMESTAMPS in warning and "goes Strong" in warning


# -- milvus-lite: validate_record (lite, in the child) --------------------------------------------------


def test_milvus_lites_validator_is_the_one_the_shortcut_was_read_against():
    from ingestor.lite import wire_floats_unfit

    assert wire_floats_unfit() is None


def test_a_changed_lite_validator_is_left_alone_and_the_child_tells_the_parent(monkeypatch, caplog):
    import queue

    from milvus_lite.schema import validation

    from ingestor import lite

    monkeypatch.setattr(validation, "validate_record", lambda record, schema, default_properties=None: None)
    assert "not the one it was read against" in lite.wire_floats_unfit()
    assert not lite.trust_wire_floats()
    # What the child prints instead (see `serve`) is logged by the parent at WARNING.
    lines = [
        f"{lite.WARNING} {lite.WIRE_FLOATS}: cannot be used (changed); {lite.WIRE_FLOATS_LOSS}\n",
        f"{lite.READY} 4242\n",
    ]
    port: queue.Queue = queue.Queue()
    with caplog.at_level(logging.WARNING, logger="ingestor.lite"):
        lite._read_stdout(SimpleNamespace(stdout=iter(lines)), port)
    assert port.get_nowait() == 4242
    [warning] = _warnings(caplog)
    assert lite.WIRE_FLOATS in warning and "a third of its CPU" in warning
