"""parse_record: every rejection reason, the good paths, and the never-raises contract."""

from __future__ import annotations

import hashlib
import json

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ingestor.config import KafkaSettings
from ingestor.dedupe import content_hash
from ingestor.errors import Reason
from ingestor.parsing import MAX_ID_BYTES, parse_record
from ingestor.records import Delete, Document, Position, RawRecord, Rejected, TopicPartition

POS = Position(TopicPartition("docs", 3), offset=42, leader_epoch=1, generation=1, timestamp_ms=0)
JSON = KafkaSettings()
TEXT = KafkaSettings(value_format="text")


def raw(value: bytes | None, key: bytes | None = None) -> RawRecord:
    return RawRecord(position=POS, key=key, value=value)


def obj(**fields: object) -> bytes:
    return json.dumps(fields).encode("utf-8")


def parse(value: bytes | None, key: bytes | None = None, options: KafkaSettings = JSON):
    return parse_record(raw(value, key), options)


def reason_of(value: bytes | None, key: bytes | None = None, options: KafkaSettings = JSON) -> str:
    result = parse(value, key, options)
    assert isinstance(result, Rejected), result
    assert result.error  # a message always comes with the code
    assert result.raw.position == POS
    return result.reason


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# -- rejections ------------------------------------------------------------------------------------


def test_value_over_max_record_bytes_is_too_large():
    options = KafkaSettings(max_record_bytes=20)
    assert reason_of(obj(text="x" * 30), options=options) == Reason.TOO_LARGE


def test_value_of_exactly_max_record_bytes_is_accepted():
    value = obj(text="abc")
    assert isinstance(parse(value, options=KafkaSettings(max_record_bytes=len(value))), Document)


def test_size_limit_applies_before_decoding():
    # 30 bytes of garbage: too_large wins over invalid_utf8
    assert reason_of(b"\xff" * 30, options=KafkaSettings(max_record_bytes=10)) == Reason.TOO_LARGE


def test_value_not_utf8_is_invalid_utf8():
    assert reason_of(b'{"text": "caf\xe9"}') == Reason.INVALID_UTF8


def test_text_format_value_not_utf8_is_invalid_utf8():
    assert reason_of(b"\xc3\x28", options=TEXT) == Reason.INVALID_UTF8


def test_lone_surrogate_escape_in_json_text_is_invalid_utf8():
    assert reason_of(b'{"text": "abc \\ud800 def"}') == Reason.INVALID_UTF8


def test_broken_json_is_invalid_json():
    assert reason_of(b'{"text": "abc"') == Reason.INVALID_JSON


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_non_json_number_constants_are_invalid_json(constant):
    # Python's json accepts them; Milvus would silently store null in their place.
    assert reason_of(b'{"text": "abc", "metadata": {"score": ' + constant + b"}}") == Reason.INVALID_JSON


def test_empty_value_is_invalid_json():
    assert reason_of(b"") == Reason.INVALID_JSON


@pytest.mark.parametrize("value", [b'["text"]', b'"text"', b"12", b"null", b"true"])
def test_json_that_is_not_an_object_is_not_an_object(value):
    assert reason_of(value) == Reason.NOT_AN_OBJECT


def test_object_without_text_is_missing_text():
    assert reason_of(obj(body="hello")) == Reason.MISSING_TEXT


@pytest.mark.parametrize("text", [None, 12, ["a"], {"a": 1}, True])
def test_text_of_another_type_is_text_not_string(text):
    assert reason_of(obj(text=text)) == Reason.TEXT_NOT_STRING


@pytest.mark.parametrize("text", ["", "   ", "\n\t "])
def test_empty_or_whitespace_text_is_blank_text(text):
    assert reason_of(obj(text=text)) == Reason.BLANK_TEXT


def test_blank_text_in_text_format_is_blank_text():
    assert reason_of(b"  \n", options=TEXT) == Reason.BLANK_TEXT


@pytest.mark.parametrize("bad_id", [True, False, 1.5, ["a"], {"a": 1}, "", "   "])
def test_id_of_wrong_type_or_empty_is_invalid_id(bad_id):
    assert reason_of(obj(text="hello", id=bad_id)) == Reason.INVALID_ID


def test_id_with_lone_surrogate_is_invalid_id():
    assert reason_of(b'{"text": "hello", "id": "a\\ud800"}') == Reason.INVALID_ID


def test_id_of_exactly_max_bytes_is_accepted():
    result = parse(obj(text="hello", id="a" * MAX_ID_BYTES))
    assert isinstance(result, Document)
    assert result.id == "a" * MAX_ID_BYTES


def test_id_one_byte_over_max_is_id_too_long():
    assert reason_of(obj(text="hello", id="a" * (MAX_ID_BYTES + 1))) == Reason.ID_TOO_LONG


def test_id_length_counts_utf8_bytes_not_characters():
    # 172 characters, 513 bytes: under the limit in characters, over it in bytes
    record_id = "€" * 171 + "a"
    assert len(record_id) < MAX_ID_BYTES < len(record_id.encode("utf-8"))
    assert reason_of(json.dumps({"text": "x", "id": record_id}).encode()) == Reason.ID_TOO_LONG


def test_multibyte_id_of_exactly_max_bytes_is_accepted():
    record_id = "é" * (MAX_ID_BYTES // 2)  # 256 chars, 512 bytes
    assert isinstance(parse(json.dumps({"text": "x", "id": record_id}).encode()), Document)


def test_integer_id_too_long_in_digits_is_id_too_long():
    assert reason_of(b'{"text": "x", "id": ' + b"9" * (MAX_ID_BYTES + 1) + b"}") == Reason.ID_TOO_LONG


def test_key_too_long_is_id_too_long():
    assert reason_of(obj(text="hello"), key=b"k" * (MAX_ID_BYTES + 1)) == Reason.ID_TOO_LONG


def test_empty_key_without_json_id_is_invalid_id():
    assert reason_of(obj(text="hello"), key=b"") == Reason.INVALID_ID


def test_non_utf8_key_used_as_id_is_invalid_key():
    assert reason_of(obj(text="hello"), key=b"\xff\xfe") == Reason.INVALID_KEY


def test_non_utf8_key_is_ignored_when_json_carries_the_id():
    result = parse(obj(text="hello", id="doc-1"), key=b"\xff\xfe")
    assert isinstance(result, Document) and result.id == "doc-1"


def test_tombstone_with_non_utf8_key_is_invalid_key():
    assert reason_of(None, key=b"\xff") == Reason.INVALID_KEY


@pytest.mark.parametrize("metadata", [["a"], "a", 3, True])
def test_metadata_not_an_object_is_invalid_metadata(metadata):
    assert reason_of(obj(text="hello", metadata=metadata)) == Reason.INVALID_METADATA


@pytest.mark.parametrize("number", [2**64, -(2**63) - 1, 10**30])
def test_metadata_integers_beyond_64_bits_are_invalid_metadata(number):
    # Python's json parses them; pymilvus serialises JSON with orjson, which refuses them, so such
    # a record would fail its whole write later instead of being dead-lettered now.
    result = parse(obj(text="hello", metadata={"n": number}))
    assert isinstance(result, Rejected) and result.reason == Reason.INVALID_METADATA
    assert "64-bit" in result.error


def test_metadata_integers_within_64_bits_are_kept_exactly():
    for number in (2**63 - 1, -(2**63), 2**64 - 1):
        result = parse(obj(text="hello", metadata={"n": number}))
        assert isinstance(result, Document) and result.metadata == {"n": number}


def test_metadata_nested_deeper_than_orjson_goes_is_still_accepted():
    deep: object = "leaf"
    for _ in range(400):  # orjson stops at 254 levels; json (and pymilvus's fallback) go on
        deep = [deep]
    result = parse(obj(text="hello", metadata={"deep": deep}))
    assert isinstance(result, Document), result


def test_tombstone_without_key_is_tombstone_without_key():
    assert reason_of(None, key=None) == Reason.TOMBSTONE_WITHOUT_KEY


# -- good paths ------------------------------------------------------------------------------------


def test_json_string_id_wins_over_key():
    result = parse(obj(text="hello", id="json-id"), key=b"key-id")
    assert isinstance(result, Document)
    assert result.id == "json-id"


def test_json_integer_id_becomes_its_decimal_string():
    result = parse(obj(text="hello", id=-17), key=b"key-id")
    assert isinstance(result, Document)
    assert result.id == "-17"


def test_null_json_id_falls_back_to_key():
    result = parse(obj(text="hello", id=None), key=b"key-id")
    assert isinstance(result, Document) and result.id == "key-id"


def test_key_is_the_id_when_json_has_none():
    result = parse(obj(text="hello"), key="clé".encode())
    assert isinstance(result, Document) and result.id == "clé"


def test_sha256_of_text_is_the_id_without_json_id_or_key():
    result = parse(obj(text="hello world"))
    assert isinstance(result, Document)
    assert result.id == sha("hello world")
    assert result.text_sha256 == sha("hello world")


def test_document_carries_text_metadata_and_raw():
    record = raw(obj(text="hello", id="a", metadata={"lang": "en", "n": [1, 2]}))
    result = parse_record(record, JSON)
    assert isinstance(result, Document)
    assert result.text == "hello"
    assert result.metadata == {"lang": "en", "n": [1, 2]}
    assert result.raw is record
    assert result.position == POS
    assert result.superseded == []


def test_missing_metadata_defaults_to_empty_object():
    result = parse(obj(text="hello"))
    assert isinstance(result, Document) and result.metadata == {}


def test_null_metadata_is_empty_object():
    result = parse(obj(text="hello", metadata=None))
    assert isinstance(result, Document) and result.metadata == {}


def test_text_is_kept_verbatim_not_stripped():
    result = parse(obj(text="  padded  "))
    assert isinstance(result, Document) and result.text == "  padded  "


def test_text_format_takes_whole_value_as_text():
    result = parse(b'{"text": "not parsed"}', key=b"k1", options=TEXT)
    assert isinstance(result, Document)
    assert result.text == '{"text": "not parsed"}'
    assert result.id == "k1"
    assert result.metadata == {}


def test_text_format_without_key_uses_sha_of_text():
    result = parse("plain ünïcode".encode(), options=TEXT)
    assert isinstance(result, Document)
    assert result.id == sha("plain ünïcode") == result.text_sha256


def test_custom_field_names():
    options = KafkaSettings(text_field="body", id_field="doc_id", metadata_field="meta")
    result = parse(obj(body="hello", doc_id="d7", meta={"a": 1}, text="ignored", id="ignored"), options=options)
    assert isinstance(result, Document)
    assert (result.text, result.id, result.metadata) == ("hello", "d7", {"a": 1})


def test_custom_text_field_missing_is_missing_text():
    options = KafkaSettings(text_field="body")
    assert reason_of(obj(text="hello"), options=options) == Reason.MISSING_TEXT


def test_tombstone_with_key_is_a_delete_of_that_id():
    record = raw(None, key=b"doc-9")
    result = parse_record(record, JSON)
    assert isinstance(result, Delete)
    assert result.id == "doc-9"
    assert result.raw is record


def test_tombstone_in_text_format_is_also_a_delete():
    assert isinstance(parse(None, key=b"doc-9", options=TEXT), Delete)


# -- never raises ----------------------------------------------------------------------------------

VALID_REASONS = {r.value for r in Reason}


def check_total(result) -> None:
    assert isinstance(result, (Document, Delete, Rejected))
    if isinstance(result, Rejected):
        assert result.reason in VALID_REASONS
        assert isinstance(result.error, str) and result.error


@settings(max_examples=400)
@given(
    value=st.one_of(st.none(), st.binary(max_size=200)),
    key=st.one_of(st.none(), st.binary(max_size=40)),
    fmt=st.sampled_from(["json", "text"]),
)
def test_parse_record_never_raises_on_arbitrary_bytes(value, key, fmt):
    check_total(parse_record(raw(value, key), KafkaSettings(value_format=fmt, max_record_bytes=150)))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=8,
)


@settings(max_examples=300)
@given(text=json_values, record_id=json_values, metadata=json_values, key=st.one_of(st.none(), st.binary(max_size=20)))
def test_parse_record_never_raises_on_arbitrary_json_objects(text, record_id, metadata, key):
    value = json.dumps({"text": text, "id": record_id, "metadata": metadata}).encode()
    check_total(parse_record(raw(value, key), JSON))


def test_integer_with_more_digits_than_python_converts_is_rejected_not_raised():
    # Python refuses int<->str conversion past 4300 digits with ValueError (not JSONDecodeError).
    check_total(parse(b'{"text": "x", "id": 1' + b"0" * 5000 + b"}"))
    check_total(parse(b"1" * 5000))


def test_deeply_nested_json_is_rejected_not_raised():
    # Well under max_record_bytes, but json.loads raises RecursionError.
    check_total(parse(b'{"text": "x", "metadata": {"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}"))


@pytest.mark.parametrize(
    "value",
    [
        b'{"text": "x", "metadata": {"k": "\\ud800"}}',
        b'{"text": "x", "metadata": {"\\udfff": 1}}',
        b'{"text": "x", "metadata": {"k": ["ok", {"deep": "\\ud83d"}]}}',
    ],
)
def test_accepted_metadata_can_be_hashed_and_stored(value):
    # A Document's metadata goes through content_hash (UTF-8) and into a Milvus JSON field; a lone
    # surrogate escape must be rejected here, not crash the writer later.
    result = parse(value)
    if isinstance(result, Document):
        content_hash("model", result.text_sha256, result.metadata, True)
        json.dumps(result.metadata, ensure_ascii=False).encode("utf-8")
    else:
        assert result.reason in VALID_REASONS


def _outcome(parsed: object) -> tuple:
    if parsed.__class__.__name__ == "Rejected":
        return ("rejected", parsed.reason, parsed.error)
    return (parsed.__class__.__name__, parsed.id, getattr(parsed, "text", None), getattr(parsed, "metadata", None))


class _JsonOnly:
    """orjson as parsing sees it, with a reader that refuses everything: `json` alone decides."""

    JSONDecodeError = orjson.JSONDecodeError
    dumps = staticmethod(orjson.dumps)
    JSONEncodeError = orjson.JSONEncodeError
    OPT_SORT_KEYS = orjson.OPT_SORT_KEYS

    @staticmethod
    def loads(value: object) -> object:
        raise orjson.JSONDecodeError("refused", "", 0)


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=12,
)


@given(
    st.one_of(
        _json_values.map(lambda v: json.dumps({"text": "t", "metadata": {"v": v}, "v": v}).encode()),
        _json_values.map(lambda v: json.dumps(v).encode()),
        st.integers(-(2**65), 2**65).map(lambda n: f'{{"text": "t", "metadata": {{"n": {n}}}}}'.encode()),
        st.text(max_size=40).map(lambda t: ('{"text": "' + t + '"}').encode("utf-8", "surrogatepass")),
        st.binary(max_size=40).map(lambda b: b'{"text": "x", "m": ' + b + b"}"),
        st.sampled_from(
            [
                b'{"text": "x", "n": NaN}',
                b'{"text": "x", "n": 1e400}',
                b'{"text": "\\ud800"}',
                b'{"text": "a\x01b"}',
                b'{"text": "x", "n": 123456789012345678901234567890}',
                b'{"text": "x"} ',
                b' {"text":"x","text":"y"}',
                b"[" * 3000 + b"]" * 3000,
            ]
        ),
    )
)
@example(b'{"text": "x", "metadata": {"n": 18446744073709551616}}')
@example(b'{"text": "x", "metadata": {"n": -9223372036854775809}}')
@example(b'{"text": "x", "metadata": {"n": 9223372036854775807, "m": -9223372036854775808}}')
@example(b'{"text": "x", "metadata": {"f": 1.0000000000000000001, "e": 1E+2, "z": -0, "w": -0.0}}')
@example(b'{"text": "\\u0000\\u00e9\\ud83d\\ude00", "metadata": {"s": "\\ud800\\udc00"}}')
@example(b'{"text": "x", "metadata": ' + b'{"a": ' * 600 + b"1" + b"}" * 600 + b"}")
@settings(max_examples=400, deadline=None)
def test_the_fast_json_reader_decides_every_value_as_json_alone_does(value: bytes):
    """orjson reads first and `json` decides what orjson refuses: together they must agree with
    `json` alone on every record, accepted or not, and on what was read."""
    from unittest import mock

    fast = _outcome(parse_record(raw(value), JSON))
    with mock.patch("ingestor.parsing.orjson", _JsonOnly):
        alone = _outcome(parse_record(raw(value), JSON))
    assert fast == alone
