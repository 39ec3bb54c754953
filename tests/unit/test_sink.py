"""sink's pure parts: request chunking, UTF-8 clipping, error classification."""

from __future__ import annotations

import dataclasses

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymilvus.exceptions import MilvusException, ParamError

from ingestor.errors import DataError, RetriableError
from ingestor.milvus_schema import (
    SCHEMA_FIELDS,
    TEXT_MAX_BYTES,
    Entity,
    classify,
    same_width,
    to_columns,
    to_rows,
)
from ingestor.parsing import Reason
from ingestor.sink import chunk_by_bytes
from ingestor.text import clip_utf8


def entity(i: int, text: str = "t", dim: int = 4) -> Entity:
    return Entity(
        id=str(i),
        vector=[0.0] * dim,
        text=text,
        metadata={},
        content_hash="h",
        model="m",
        truncated=False,
        kafka_topic="docs",
        kafka_partition=0,
        kafka_offset=i,
    )


# -- chunk_by_bytes -------------------------------------------------------------------------------


def test_no_entities_no_chunks():
    assert list(chunk_by_bytes([], 1000)) == []


def test_all_fit_in_one_chunk():
    es = [entity(i) for i in range(5)]
    assert list(chunk_by_bytes(es, 10_000)) == [es]


def test_chunks_split_at_max_bytes():
    es = [entity(i, text="x" * 100) for i in range(10)]
    size = es[0].approx_bytes()
    chunks = list(chunk_by_bytes(es, 3 * size))
    assert [len(c) for c in chunks] == [3, 3, 3, 1]


def test_single_oversize_entity_gets_its_own_chunk():
    small, big = entity(0), entity(1, text="x" * 5000)
    chunks = list(chunk_by_bytes([small, big, entity(2)], 1000))
    assert [big] in chunks
    assert [e.id for c in chunks for e in c] == ["0", "1", "2"]


@settings(max_examples=200)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=3000), max_size=40),
    max_bytes=st.integers(min_value=300, max_value=8000),
)
def test_every_entity_once_in_order_and_chunks_under_max(sizes, max_bytes):
    es = [entity(i, text="x" * n) for i, n in enumerate(sizes)]
    chunks = list(chunk_by_bytes(es, max_bytes))
    assert [e for c in chunks for e in c] == es
    for c in chunks:
        assert c
        if len(c) > 1:
            assert sum(e.approx_bytes() for e in c) <= max_bytes


def test_approx_bytes_counts_text_in_utf8_bytes():
    assert entity(0, text="€" * 10).approx_bytes() - entity(0, text="").approx_bytes() == 30


# -- clip_utf8 ------------------------------------------------------------------------------------


def test_short_text_is_unchanged():
    assert clip_utf8("héllo", 100) == "héllo"


def test_exact_fit_is_unchanged():
    assert clip_utf8("héllo", len("héllo".encode())) == "héllo"


def test_clip_does_not_split_a_multibyte_character():
    # "€" is 3 bytes: 4 bytes hold one and a third
    assert clip_utf8("€€", 4) == "€"
    assert clip_utf8("a€", 3) == "a"


@given(text=st.text(max_size=200), max_bytes=st.integers(min_value=0, max_value=400))
def test_clip_is_a_prefix_within_max_bytes(text, max_bytes):
    clipped = clip_utf8(text, max_bytes)
    data = clipped.encode("utf-8")
    assert len(data) <= max_bytes
    assert text.startswith(clipped)
    if len(text.encode("utf-8")) > max_bytes:
        # as long as possible: the next character would not have fit
        assert len(data) + len(text[len(clipped)].encode("utf-8")) > max_bytes
    else:
        assert clipped == text


def test_columns_clip_text_and_drop_it_when_not_stored():
    e = entity(0, text="é" * TEXT_MAX_BYTES)
    assert len(to_columns([e], store_text=True, now_ms=5)["text"][0].encode()) <= TEXT_MAX_BYTES
    assert to_columns([e], store_text=False, now_ms=5)["text"] == [""]


def test_columns_hold_every_schema_field_in_order_and_rows_round_trip():
    es = [entity(i, text=f"t{i}") for i in range(3)]
    columns = to_columns(es, store_text=True, now_ms=7)
    assert list(columns) == list(SCHEMA_FIELDS)
    assert all(len(v) == 3 for v in columns.values())
    rows = to_rows(columns)
    assert [r["id"] for r in rows] == ["0", "1", "2"] and rows[1]["text"] == "t1"
    assert rows[2]["kafka_offset"] == 2 and rows[0]["ingested_at"] == 7
    assert rows[0]["vector"] == [0.0] * 4 and type(rows[0]["vector"][0]) is float


def test_vectors_of_mixed_widths_are_never_written_as_one_column():
    assert same_width([[0.0] * 4, [1.0] * 4])
    assert not same_width([[0.0] * 4, [1.0] * 3])
    assert same_width([])


# -- classify -------------------------------------------------------------------------------------


class FakeRpcError(grpc.RpcError):
    pass


def test_grpc_error_is_retriable():
    err = classify(FakeRpcError("unavailable"))
    assert isinstance(err, RetriableError)
    assert err.dependency == "milvus"


def test_milvus_length_violation_is_data_error():
    exc = MilvusException(code=6, message="VARCHAR field 'id' value length 600 exceeds max_length=512")
    err = classify(exc)
    assert isinstance(err, DataError)
    assert err.reason == Reason.SINK_REJECTED.value
    assert "600" in str(err)


@pytest.mark.parametrize("code,message", [(2, "connection refused"), (9, "deny to write"), (8, "whatever")])
def test_milvus_unavailable_codes_are_retriable(code, message):
    assert isinstance(classify(MilvusException(code=code, message=message)), RetriableError)


@pytest.mark.parametrize("message", ["rate limit exceeded", "quota exceeded for database", "request timed out"])
def test_milvus_transient_messages_are_retriable(message):
    assert isinstance(classify(MilvusException(code=65535, message=message)), RetriableError)


def test_param_error_is_data_error():
    err = classify(ParamError(message="invalid vector dim"))
    assert isinstance(err, DataError)
    assert err.reason == Reason.SINK_REJECTED.value


def test_unknown_exception_is_retriable():
    assert isinstance(classify(RuntimeError("???")), RetriableError)


def test_unknown_milvus_code_is_retriable():
    assert isinstance(classify(MilvusException(code=12345, message="something odd")), RetriableError)


def test_os_level_connection_error_is_retriable():
    assert isinstance(classify(ConnectionResetError("reset by peer")), RetriableError)


@pytest.mark.parametrize(
    "version, old",
    [
        ("v2.3.5", False),
        ("v2.3.0", False),
        ("2.4.13-rc1", False),
        ("v3.0.0", False),
        ("v2.2.16", True),
        ("v2.0.0", True),
        ("milvus_lite-3.2.2", False),
        ("unknown", False),
    ],
)
def test_a_server_too_old_for_upsert_is_refused(version: str, old: bool) -> None:
    from ingestor.milvus_schema import too_old

    assert too_old(version) is old


@pytest.mark.parametrize(
    "code,message",
    [
        (65535, "the length(3) of float data should divide the dim(4)"),  # Milvus 2.3.5, a short vector
        (1100, "the length (600) of 0th string exceeds max length (512): invalid parameter"),
    ],
)
def test_a_servers_refusal_of_one_row_is_a_data_error(code: int, message: str) -> None:
    from pymilvus.exceptions import MilvusException

    assert isinstance(classify(MilvusException(code=code, message=message)), DataError)


def test_chunk_columns_follow_the_chunk_schema_and_refuse_a_record_entity():
    from ingestor.milvus_schema import ChunkSpan, schema_fields

    es = [entity(i, text=f"t{i}") for i in range(2)]
    chunks = [
        Entity(
            **{
                **{f: getattr(e, f) for f in e.__dataclass_fields__},
                "id": f"d#{i}",
                "chunk": ChunkSpan("d", i, 2, 10 * i, 10 * i + 5),
            }
        )
        for i, e in enumerate(es)
    ]
    columns = to_columns(chunks, store_text=True, now_ms=7, chunked=True)
    assert list(columns) == list(schema_fields(True))
    assert columns["doc_id"] == ["d", "d"] and columns["chunk_index"] == [0, 1] and columns["chunk_count"] == [2, 2]
    assert columns["char_start"] == [0, 10] and columns["char_end"] == [5, 15]
    with pytest.raises(ValueError):
        to_columns(es, store_text=True, now_ms=7, chunked=True)
    # A chunk id is its record id (at most 512 bytes), '#' and the index.
    assert schema_fields(True)["id"][1]["max_length"] >= 512 + len("#") + 10


def test_a_worker_that_loses_the_index_race_on_milvus_lite_takes_the_index_as_built():
    """Milvus Lite refuses a second create_index ("index already exists"); the worker that joined a
    collection before its creator built the index must take that as done, and any other failure
    (no index after all) is still raised."""
    from ingestor.config import MilvusSettings
    from ingestor.sink import MilvusSink

    class Client:
        def __init__(self, built_by_other: bool) -> None:
            self.indexes: list[str] = []
            self.built_by_other = built_by_other

        def list_indexes(self, collection, field_name, timeout):
            return list(self.indexes)

        def prepare_index_params(self):
            class Params:
                def add_index(self, *args, **kwargs):
                    pass

            return Params()

        def create_index(self, collection, params, timeout):
            if self.built_by_other:
                self.indexes.append("vector")  # the creator's, a moment before ours
            raise RuntimeError("index already exists for field 'vector'; call drop_index first")

    sink = MilvusSink(MilvusSettings(uri="http://127.0.0.1:1", collection="c"))
    sink._client = Client(built_by_other=True)
    sink._ensure_index()  # no error
    sink._client = Client(built_by_other=False)
    with pytest.raises(RuntimeError):
        sink._ensure_index()


def test_a_worker_whose_create_is_refused_before_the_winners_collection_shows_joins_it():
    """Milvus Lite refuses a racing create ("File exists") a moment before the winner's collection
    is listed: the loser looks again before taking the refusal for an outage; with no collection
    after all, the refusal is raised."""
    from ingestor.config import MilvusSettings
    from ingestor.sink import MilvusSink

    class Client:
        def __init__(self, shows_after: int | None) -> None:
            self.asked, self.shows_after = 0, shows_after

        def has_collection(self, collection, timeout):
            self.asked += 1
            return self.shows_after is not None and self.asked > self.shows_after

        def describe_collection(self, collection, timeout):
            return {"description": "ingestor:v1:theirs"}

    sink = MilvusSink(MilvusSettings(uri="http://127.0.0.1:1", collection="c"))
    sink._create = lambda description, identity=None: (_ for _ in ()).throw(RuntimeError("[Errno 17] File exists"))
    sink._client = Client(shows_after=2)
    sink._create_or_join()  # joined on the third look
    sink._client = Client(shows_after=None)
    sink._created_meanwhile = lambda: MilvusSink._created_meanwhile(sink, checks=3, pause_s=0.0)
    with pytest.raises(RuntimeError):
        sink._create_or_join()


def test_metadata_serialised_at_parse_time_is_what_pymilvus_would_make_of_the_dict():
    """The sink hands pymilvus a record's metadata as the JSON text parsing made; pymilvus then
    only validates it, and sends the bytes it would have made of the dict itself."""
    from pymilvus.client.entity_helper import convert_to_json

    from ingestor.config import KafkaSettings
    from ingestor.parsing import parse_record
    from ingestor.records import Position, RawRecord, TopicPartition

    values = [
        b'{"text": "t", "metadata": {"b": 1, "a": [1.5, "\\u00e9", null, {"z": true}]}}',
        b'{"text": "t"}',
        b'{"text": "t", "metadata": {"n": -9223372036854775808, "s": "\\ud83d\\ude00"}}',
    ]
    for value in values:
        doc = parse_record(RawRecord(Position(TopicPartition("t", 0), 0, 0, 1, 0), None, value), KafkaSettings())
        assert doc.metadata_json is not None
        e = dataclasses.replace(entity(0), metadata=doc.metadata, metadata_json=doc.metadata_json)
        column = to_columns([e], store_text=True, now_ms=1)["metadata"]
        assert column == [doc.metadata_json]
        assert convert_to_json(column[0]) == convert_to_json(doc.metadata)
    deep = dataclasses.replace(entity(0), metadata={"a": {"b": 1}})
    assert to_columns([deep], store_text=True, now_ms=1)["metadata"] == [{"a": {"b": 1}}], "no text: the dict"
