"""encode_line: how `ingestor produce` turns an input line into a Kafka (key, value)."""

from __future__ import annotations

import json

from ingestor.commands.produce import encode_line


def test_json_object_with_string_id_uses_it_as_key():
    key, value = encode_line('{"id": "doc-1", "text": "hello"}')
    assert key == b"doc-1"
    assert json.loads(value) == {"id": "doc-1", "text": "hello"}


def test_json_object_with_integer_id_key_is_its_decimal_string():
    key, _ = encode_line('{"id": 42, "text": "hello"}')
    assert key == b"42"


def test_json_object_without_id_has_no_key():
    key, value = encode_line('{"text": "hello"}')
    assert key is None
    assert value == b'{"text": "hello"}'


def test_json_object_with_non_scalar_or_bool_id_has_no_key():
    assert encode_line('{"id": true, "text": "x"}')[0] is None
    assert encode_line('{"id": [1], "text": "x"}')[0] is None
    assert encode_line('{"id": 1.5, "text": "x"}')[0] is None


def test_json_value_is_sent_unchanged_apart_from_surrounding_whitespace():
    line = '  {"text":  "a",   "id": "x"}  \n'
    assert encode_line(line)[1] == b'{"text":  "a",   "id": "x"}'


def test_unicode_id_key_is_utf8():
    assert encode_line('{"id": "clé", "text": "x"}')[0] == "clé".encode()


def test_text_line_is_wrapped_as_text_object():
    key, value = encode_line("just some text\n")
    assert key is None
    assert json.loads(value) == {"text": "just some text"}


def test_text_line_keeps_non_ascii_as_utf8():
    _, value = encode_line("café ☕")
    assert "café ☕".encode() in value
    assert json.loads(value.decode("utf-8")) == {"text": "café ☕"}


def test_json_array_line_is_treated_as_text():
    key, value = encode_line('["a", "b"]')
    assert key is None
    assert json.loads(value) == {"text": '["a", "b"]'}


def test_invalid_json_starting_with_brace_is_sent_as_is_without_key():
    key, value = encode_line('{"id": "x", "text": "unterminated')
    assert key is None
    assert value == b'{"id": "x", "text": "unterminated'


def test_json_python_cannot_parse_is_sent_as_is_without_key():
    # json.loads raises ValueError (not JSONDecodeError) for integers over 4300 digits.
    line = '{"id": 1' + "0" * 5000 + ', "text": "x"}'
    key, value = encode_line(line)
    assert key is None
    assert value == line.encode()
