"""Deduplication's pure rules: key layout, the marker content hash, cached vectors, the skip rule
and texts in flight."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from ingestor.dedupe import content_hash, embedding_key, marker_key

SHA_A = hashlib.sha256(b"a").hexdigest()
SHA_B = hashlib.sha256(b"b").hexdigest()


def test_embedding_key_is_prefixed_and_deterministic():
    key = embedding_key("ing", "model-x", SHA_A)
    assert key.startswith("ing:emb:")
    assert key.endswith(SHA_A)
    assert key == embedding_key("ing", "model-x", SHA_A)


def test_embedding_key_differs_by_model_identity():
    assert embedding_key("ing", "model-x", SHA_A) != embedding_key("ing", "model-y", SHA_A)


def test_embedding_key_differs_by_text():
    assert embedding_key("ing", "model-x", SHA_A) != embedding_key("ing", "model-x", SHA_B)


def test_embedding_key_differs_by_prefix():
    assert embedding_key("one", "m", SHA_A) != embedding_key("two", "m", SHA_A)


def test_marker_key_is_prefixed_and_deterministic():
    key = marker_key("ing", "ns", "doc-1")
    assert key.startswith("ing:doc:")
    assert key == marker_key("ing", "ns", "doc-1")


def test_marker_key_differs_by_namespace():
    assert marker_key("ing", "ns-1", "doc-1") != marker_key("ing", "ns-2", "doc-1")


def test_marker_key_differs_by_id():
    assert marker_key("ing", "ns", "doc-1") != marker_key("ing", "ns", "doc-2")


def test_marker_key_length_is_bounded_for_long_ids():
    assert len(marker_key("ing", "ns", "x" * 512)) == len(marker_key("ing", "ns", "y"))


def test_marker_and_embedding_keys_never_collide():
    assert marker_key("p", "m", SHA_A) != embedding_key("p", "m", SHA_A)


@given(a=st.text(max_size=50), b=st.text(max_size=50))
def test_marker_key_distinct_ids_distinct_keys(a, b):
    if a != b:
        assert marker_key("p", "ns", a) != marker_key("p", "ns", b)


BASE = dict(model_identity="m1", text_sha256=SHA_A, metadata={"lang": "en", "n": 1}, store_text=True)


def ch(**changes) -> str:
    return content_hash(**{**BASE, **changes})


def test_content_hash_is_sha256_hex_and_deterministic():
    h = ch()
    assert len(h) == 64 and int(h, 16) >= 0
    assert h == ch()


def test_content_hash_changes_with_text():
    assert ch(text_sha256=SHA_B) != ch()


def test_content_hash_changes_with_metadata():
    assert ch(metadata={"lang": "fr", "n": 1}) != ch()
    assert ch(metadata={"lang": "en"}) != ch()
    assert ch(metadata={"lang": "en", "n": "1"}) != ch()


def test_content_hash_ignores_metadata_key_order():
    assert ch(metadata={"n": 1, "lang": "en"}) == ch(metadata={"lang": "en", "n": 1})


def test_content_hash_ignores_nested_metadata_key_order():
    assert ch(metadata={"a": {"x": 1, "y": 2}}) == ch(metadata={"a": {"y": 2, "x": 1}})


def test_content_hash_changes_with_model_identity():
    assert ch(model_identity="m2") != ch()


def test_content_hash_changes_with_store_text():
    assert ch(store_text=False) != ch()


def test_content_hash_handles_non_ascii_metadata():
    assert ch(metadata={"titre": "café"}) != ch(metadata={"titre": "cafe"})


def test_content_hash_of_metadata_deeper_than_orjson_nests():
    deep: object = "leaf"
    for _ in range(400):
        deep = {"k": deep}
    assert ch(metadata={"deep": deep}) == ch(metadata={"deep": deep}) != ch()


def test_a_cached_vector_keeps_its_truncation_flag_and_older_values_miss():
    import numpy as np

    from ingestor.dedupe import pack_vector, unpack_vector

    v = np.arange(4, dtype=np.float32)
    for flag in (True, False):
        back = unpack_vector(pack_vector(v, flag), 4)
        assert back is not None and np.array_equal(back.vector, v) and back.truncated is flag
    assert unpack_vector(v.tobytes(), 4) is None  # written before the flag existed: a miss
    assert unpack_vector(None, 4) is None


# -- the skip rule ---------------------------------------------------------------------------------


def _doc(record_id: str, digest: str):
    from ingestor.records import Document, Position, RawRecord, TopicPartition

    raw = RawRecord(Position(TopicPartition("t", 0), 0, 0, 1, 0), None, b"")
    return Document(id=record_id, text="t", text_sha256="s", metadata={}, raw=raw, digest=digest)


def test_a_record_is_skipped_only_when_marker_and_milvus_both_hold_its_digest():
    from ingestor.dedupe import unchanged

    same, stale_marker, stale_milvus, no_marker, busy = (_doc(i, "h") for i in ("same", "m", "v", "n", "b"))
    asked: list[list[str]] = []

    def held(ids):
        asked.append(ids)
        return {"same": "h", "m": "h", "v": "old", "b": "h"}

    checked: list[list[str]] = []

    def in_flight(ids):
        checked.append(ids)
        return {"b"} & set(ids)

    skip = unchanged([same, stale_marker, stale_milvus, no_marker, busy], ["h", "old", "h", None, "h"], in_flight, held)
    assert skip == {id(same)}
    assert checked == [["same", "v", "b"]], "only records whose marker matches are checked for work in flight"
    assert asked == [["same", "v"]], "only candidates are read back, in one query"


def test_no_candidate_no_query():
    from ingestor.dedupe import unchanged

    def held(ids):
        raise AssertionError("no query without a matching marker")

    assert unchanged([_doc("a", "h")], [None], lambda ids: set(), held) == set()
