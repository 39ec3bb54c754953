"""dlq_headers: why a record was dead-lettered, plus the producer's own headers."""

from __future__ import annotations

from ingestor.dlq import MAX_ERROR_HEADER_BYTES, dlq_headers
from ingestor.records import Position, RawRecord, Rejected, TopicPartition

OURS = ["ingestor.reason", "ingestor.error", "ingestor.topic", "ingestor.partition", "ingestor.offset"]


def rejected(error: str = "invalid JSON: Expecting value at position 0", headers=()) -> Rejected:
    raw = RawRecord(
        Position(TopicPartition("docs.en", 7), 12345, 2, 1, 0), key=b"k", value=b"{", headers=tuple(headers)
    )
    return Rejected(raw=raw, reason="invalid_json", error=error)


def test_has_the_five_ingestor_headers_with_values():
    headers = dict(dlq_headers(rejected()))
    assert headers["ingestor.reason"] == b"invalid_json"
    assert headers["ingestor.error"] == b"invalid JSON: Expecting value at position 0"
    assert headers["ingestor.topic"] == b"docs.en"
    assert headers["ingestor.partition"] == b"7"
    assert headers["ingestor.offset"] == b"12345"


def test_each_ingestor_header_appears_once():
    names = [k for k, _ in dlq_headers(rejected())]
    assert sorted(n for n in names if n.startswith("ingestor.")) == sorted(OURS)


def test_original_headers_are_kept_in_order():
    headers = dlq_headers(rejected(headers=[("trace-id", b"abc"), ("source", b"crm"), ("trace-id", b"def")]))
    theirs = [(k, v) for k, v in headers if not k.startswith("ingestor.")]
    assert theirs == [("trace-id", b"abc"), ("source", b"crm"), ("trace-id", b"def")]


def test_stale_ingestor_headers_from_the_original_are_dropped():
    stale = [("ingestor.reason", b"embed_failed"), ("ingestor.offset", b"1"), ("ingestor.retries", b"3"), ("x", b"y")]
    headers = dlq_headers(rejected(headers=stale))
    assert dict(headers)["ingestor.reason"] == b"invalid_json"
    assert dict(headers)["ingestor.offset"] == b"12345"
    assert ("ingestor.retries", b"3") not in headers
    assert ("x", b"y") in headers
    assert [k for k, _ in headers].count("ingestor.reason") == 1


def test_error_header_is_truncated_to_max_bytes():
    error = dict(dlq_headers(rejected(error="e" * (MAX_ERROR_HEADER_BYTES * 3))))["ingestor.error"]
    assert len(error) == MAX_ERROR_HEADER_BYTES
    assert error == b"e" * MAX_ERROR_HEADER_BYTES


def test_short_error_header_is_not_padded_or_cut():
    assert dict(dlq_headers(rejected(error="short")))["ingestor.error"] == b"short"


def test_truncated_error_header_is_still_valid_utf8():
    # 1999 ASCII bytes then 3-byte characters: a byte cut at 2000 lands inside a character.
    error = "a" * (MAX_ERROR_HEADER_BYTES - 1) + "€" * 10
    value = dict(dlq_headers(rejected(error=error)))["ingestor.error"]
    assert len(value) <= MAX_ERROR_HEADER_BYTES
    assert value.decode("utf-8").startswith("a" * (MAX_ERROR_HEADER_BYTES - 1))


def test_error_with_lone_surrogate_does_not_raise():
    value = dict(dlq_headers(rejected(error="bad \ud800 text")))["ingestor.error"]
    assert value.startswith(b"bad ")
