"""Strict configuration: a name that sets nothing is refused with the closest real one, values that
are certain to fail later are refused at load, and rules over several settings name their variables."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from ingestor.config import load_settings
from ingestor.config.names import OTHER_PREFIXES, OTHER_VARIABLES, known_env_names
from ingestor.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def hermetic_env(monkeypatch, tmp_path):
    for name in list(os.environ):
        if name.upper().startswith("INGESTOR_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def refused(monkeypatch, config_file: Path | None = None, **env: str) -> str:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings(config_file)
    return str(info.value)


# -- names -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, suggestion",
    [
        ("INGESTOR_KAFKA_BOOTSTRAP_SERVERS", "INGESTOR_KAFKA__BOOTSTRAP_SERVERS"),  # one underscore
        ("INGESTOR_KAFKA__TOPCS", "INGESTOR_KAFKA__TOPICS"),
        ("INGESTOR_MILVUS__COLECTION", "INGESTOR_MILVUS__COLLECTION"),
        ("INGESTOR_REDIS_URL", "INGESTOR_REDIS__URL"),
        ("INGESTOR_FOO", None),
        ("INGESTOR_KAFKA__FOO", None),
    ],
)
def test_an_unknown_variable_is_refused_with_the_closest_real_one(monkeypatch, name, suggestion):
    message = refused(monkeypatch, **{name: "1"})
    [line] = [ln for ln in message.splitlines() if name in ln]
    assert "no such setting" in line
    if suggestion:
        assert f"did you mean {suggestion}?" in line
    else:
        assert "did you mean" not in line


def test_every_unknown_variable_is_named_at_once(monkeypatch):
    message = refused(monkeypatch, INGESTOR_FOO="1", INGESTOR_BAR="2")
    assert "INGESTOR_FOO" in message and "INGESTOR_BAR" in message


def test_variables_of_the_scripts_and_old_names_are_not_settings_and_are_accepted(monkeypatch):
    for name in ("INGESTOR_HOME", "INGESTOR_KAFKA_PORT", "INGESTOR_FAULT_CRASH_AT", "INGESTOR_TEST_KAFKA"):
        monkeypatch.setenv(name, "1")
    monkeypatch.setenv("INGESTOR_REDIS__EMBEDDING_TTL_SECONDS", "5")  # the name before the unit rename
    monkeypatch.setenv("INGESTOR_KAFKA", '{"group_id": "whole-section"}')
    s = load_settings()
    assert s.redis.embedding_ttl_s == 5 and s.kafka.group_id == "whole-section"


def test_every_ingestor_variable_the_repository_uses_is_a_setting_or_listed_as_not_one():
    """A script or test that reads a new INGESTOR_* variable must list it in OTHER_VARIABLES, or
    every daemon started where it is set would refuse to start."""
    known = set(known_env_names(__import__("ingestor.config", fromlist=["Settings"]).Settings))
    files = [
        p
        for p in REPO.rglob("*")
        if p.is_file()
        and p.suffix in (".py", ".sh", ".yml", ".yaml", ".md", "")
        and not any(part.startswith(".") for part in p.relative_to(REPO).parts)
        and p.stat().st_size < 2_000_000
    ]
    used: set[str] = set()
    for path in files:
        try:
            used.update(re.findall(r"\bINGESTOR_[A-Z0-9_]*[A-Z0-9]\b", path.read_text(encoding="utf-8")))
        except UnicodeDecodeError:
            continue
    stray = sorted(
        n
        for n in used
        if "__" not in n
        and n not in known
        and n not in OTHER_VARIABLES
        and not n.startswith(OTHER_PREFIXES)
        and n not in ("INGESTOR_FOO", "INGESTOR_BAR", "INGESTOR_KAFKA_BOOTSTRAP_SERVERS", "INGESTOR_REDIS_URL")
    )
    assert not stray, f"INGESTOR_* variables neither settings nor in config.names.OTHER_VARIABLES: {stray}"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "settings.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_misspelt_yaml_key_names_the_file_and_the_real_key(monkeypatch, tmp_path):
    message = refused(monkeypatch, write(tmp_path, "kafka:\n  topicz: [a]\nmilvus:\n  colection: x\n"))
    assert "settings.yaml: unknown setting kafka.topicz; did you mean kafka.topics?" in message
    assert "did you mean milvus.collection?" in message
    assert "INGESTOR_KAFKA__TOPICZ" not in message  # no variable that does not exist


def test_a_misspelt_yaml_section_names_the_real_one(monkeypatch, tmp_path):
    message = refused(monkeypatch, write(tmp_path, "kafak:\n  topics: [a]\n"))
    assert "unknown section 'kafak'; did you mean 'kafka'?" in message


def test_yaml_that_does_not_parse_says_where(monkeypatch, tmp_path):
    message = refused(monkeypatch, write(tmp_path, "kafka:\n  topics: [a, b\n  group_id: x\n"))
    assert "settings.yaml is not valid YAML at line" in message


def test_an_empty_yaml_file_is_no_settings(tmp_path):
    assert load_settings(write(tmp_path, "")).kafka.group_id == "ingestor"


# -- values ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "uri, ok",
    [
        ("./ingestor.db", True),
        ("/data/x.db", True),
        ("http://milvus:19530", True),
        ("https://milvus:19530", True),
        ("tcp://milvus:19530", True),
        ("unix:/run/milvus.sock", True),
        ("htp://milvus:19530", False),
        ("grpc://milvus:19530", False),
        ("data/ingestor", False),
        ("http://", False),
    ],
)
def test_milvus_uri_schemes(monkeypatch, uri, ok):
    monkeypatch.setenv("INGESTOR_MILVUS__URI", uri)
    if ok:
        assert load_settings().milvus.uri == uri
    else:
        message = refused(monkeypatch)
        assert "milvus.uri" in message and "INGESTOR_MILVUS__URI" in message


def test_unix_socket_is_a_server_not_a_lite_file(monkeypatch):
    monkeypatch.setenv("INGESTOR_MILVUS__URI", "unix:/run/milvus.sock")
    assert not load_settings().milvus.is_lite


@pytest.mark.parametrize("topics", ["not json", "a b", "a/b", "x" * 250, ".", "ok,bad name"])
def test_a_topic_kafka_would_refuse_is_refused(monkeypatch, topics):
    message = refused(monkeypatch, INGESTOR_KAFKA__TOPICS=topics)
    assert "kafka.topics" in message and "INGESTOR_KAFKA__TOPICS" in message


def test_a_json_list_that_does_not_parse_says_what_was_expected(monkeypatch):
    message = refused(monkeypatch, INGESTOR_KAFKA__TOPICS='["a",')
    assert "expected a JSON list of topic names" in message and "Expecting" not in message


def test_a_dead_letter_topic_kafka_would_refuse_is_refused(monkeypatch):
    assert "dlq.topic" in refused(monkeypatch, INGESTOR_DLQ__TOPIC="dead letters")
    assert "dlq.suffix" in refused(monkeypatch, INGESTOR_DLQ__SUFFIX="/dlq")


@pytest.mark.parametrize(
    "servers", ["kafka", "kafka:", "kafka:port", "kafka:70000", "PLAINTEXT://kafka:9092", "::1:9092"]
)
def test_bootstrap_servers_must_be_host_port(monkeypatch, servers):
    message = refused(monkeypatch, INGESTOR_KAFKA__BOOTSTRAP_SERVERS=servers)
    assert "kafka.bootstrap_servers" in message and "INGESTOR_KAFKA__BOOTSTRAP_SERVERS" in message


def test_bootstrap_servers_lists_and_ipv6_are_accepted(monkeypatch):
    monkeypatch.setenv("INGESTOR_KAFKA__BOOTSTRAP_SERVERS", "k1:9092, k2:9093,[::1]:9094")
    assert load_settings().kafka.bootstrap_servers == "k1:9092,k2:9093,[::1]:9094"


def test_a_json_mapping_that_does_not_parse_says_what_was_expected(monkeypatch):
    message = refused(monkeypatch, INGESTOR_MILVUS__INDEX_PARAMS="{nlist: 128}")
    assert "INGESTOR_MILVUS__INDEX_PARAMS: expected a JSON object" in message


# -- rules over several settings ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "env, variables",
    [
        ({"INGESTOR_KAFKA__SECURITY_PROTOCOL": "SASL_SSL"}, ["INGESTOR_KAFKA__SASL_MECHANISM"]),
        ({"INGESTOR_KAFKA__SASL_MECHANISM": "PLAIN"}, ["INGESTOR_KAFKA__SECURITY_PROTOCOL"]),
        (
            {"INGESTOR_KAFKA__SECURITY_PROTOCOL": "SASL_SSL", "INGESTOR_KAFKA__SASL_MECHANISM": "PLAIN"},
            ["INGESTOR_KAFKA__SASL_USERNAME", "INGESTOR_KAFKA__SASL_PASSWORD"],
        ),
        ({"INGESTOR_MILVUS__USER": "u"}, ["INGESTOR_MILVUS__PASSWORD"]),
        ({"INGESTOR_KAFKA__TOPICS": "a,a.dlq"}, ["INGESTOR_KAFKA__TOPICS"]),
    ],
)
def test_a_cross_field_error_names_the_variables_to_set(monkeypatch, env, variables):
    message = refused(monkeypatch, **env)
    for variable in variables:
        assert variable in message, message
