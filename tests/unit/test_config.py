"""load_settings: sources and their priority, validation messages, secrets never shown."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ingestor.config import Settings, load_settings
from ingestor.errors import ConfigError

SECRETS = {
    "INGESTOR_REDIS__URL": "redis://:hunter2-redis@cache:6379/0",
    "INGESTOR_MILVUS__TOKEN": "hunter2-milvus",
    "INGESTOR_KAFKA__SASL_PASSWORD": "hunter2-kafka",
}


@pytest.fixture(autouse=True)
def hermetic_env(monkeypatch, tmp_path):
    for name in list(os.environ):
        if name.upper().startswith("INGESTOR_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray config or .env from the working directory


def write(tmp_path: Path, text: str, name: str = "ingestor.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def config_error(*args, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(*args, **kwargs)
    return str(info.value)


# -- defaults and env --------------------------------------------------------------------------


def test_defaults_are_valid():
    s = load_settings()
    assert isinstance(s, Settings)
    assert s.kafka.topics == ["documents"]
    assert s.redis.url is None
    assert s.batch.max_wait_ms == 200


def test_unset_batch_limits_are_filled_in_by_device():
    from ingestor.config import DEVICE_BATCH_DEFAULTS, BatchSettings

    cpu, gpu = BatchSettings().for_device("cpu"), BatchSettings().for_device("cuda:1")
    for resolved, kind in ((cpu, "cpu"), (gpu, "gpu")):
        for name, value in DEVICE_BATCH_DEFAULTS[kind].items():
            assert getattr(resolved, name) == value
    assert gpu.max_batch_tokens > cpu.max_batch_tokens and gpu.max_batch_records > cpu.max_batch_records
    assert cpu.for_device("cuda") == cpu, "resolving twice changes nothing"


def test_set_batch_limits_win_and_the_window_holds_two_batches_at_least():
    from ingestor.config import BatchSettings

    s = BatchSettings(max_batch_records=3000, max_batch_tokens=99).for_device("cuda")
    assert (s.max_batch_records, s.max_batch_tokens) == (3000, 99)
    assert s.max_window_records == 6000 and s.max_in_flight_records == 16384


def test_topics_from_env_comma_separated(monkeypatch):
    monkeypatch.setenv("INGESTOR_KAFKA__TOPICS", " a, b ,")
    assert load_settings().kafka.topics == ["a", "b"]


def test_topics_from_env_json_list(monkeypatch):
    monkeypatch.setenv("INGESTOR_KAFKA__TOPICS", '["a","b"]')
    assert load_settings().kafka.topics == ["a", "b"]


def test_topics_json_list_that_does_not_parse_is_config_error(monkeypatch):
    monkeypatch.setenv("INGESTOR_KAFKA__TOPICS", '["a",')
    assert "kafka.topics" in config_error()


def test_empty_topics_is_config_error(monkeypatch):
    monkeypatch.setenv("INGESTOR_KAFKA__TOPICS", " , ")
    assert "kafka.topics" in config_error()


def test_scalar_from_env(monkeypatch):
    monkeypatch.setenv("INGESTOR_BATCH__MAX_WAIT_MS", "75")
    assert load_settings().batch.max_wait_ms == 75


def test_invalid_env_value_names_field_and_env_var(monkeypatch):
    monkeypatch.setenv("INGESTOR_BATCH__MAX_WAIT_MS", "soon")
    message = config_error()
    assert "batch.max_wait_ms" in message
    assert "INGESTOR_BATCH__MAX_WAIT_MS" in message


def test_out_of_range_value_names_field(monkeypatch):
    monkeypatch.setenv("INGESTOR_BATCH__MAX_BATCH_RECORDS", "0")
    message = config_error()
    assert "batch.max_batch_records" in message


def test_each_bad_field_gets_reported(monkeypatch):
    monkeypatch.setenv("INGESTOR_BATCH__MAX_WAIT_MS", "-1")
    monkeypatch.setenv("INGESTOR_MODEL__DEVICE", "tpu")
    message = config_error()
    assert "batch.max_wait_ms" in message and "model.device" in message


def test_topic_ending_with_dlq_suffix_is_config_error(monkeypatch):
    monkeypatch.setenv("INGESTOR_KAFKA__TOPICS", "docs,docs.dlq")
    assert ".dlq" in config_error()


def test_dlq_topic_for_source_topic():
    s = load_settings()
    assert s.dlq.topic_for("docs") == "docs.dlq"
    s2 = load_settings(overrides={"dlq": {"topic": "dead"}})
    assert s2.dlq.topic_for("docs") == "dead"


# -- secrets --------------------------------------------------------------------------------------


def test_secrets_are_loaded_but_redacted(monkeypatch):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    s = load_settings()
    assert s.redis.url.get_secret_value() == SECRETS["INGESTOR_REDIS__URL"]
    assert s.milvus.token.get_secret_value() == SECRETS["INGESTOR_MILVUS__TOKEN"]
    assert s.kafka.sasl_password.get_secret_value() == SECRETS["INGESTOR_KAFKA__SASL_PASSWORD"]
    shown = repr(s.redacted()) + str(s) + repr(s)
    for value in SECRETS.values():
        assert value not in shown
    assert "hunter2" not in shown


def test_secrets_never_in_config_error_when_another_field_fails(monkeypatch):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("INGESTOR_BATCH__MAX_WAIT_MS", "soon")
    assert "hunter2" not in config_error()


def test_invalid_secret_values_are_not_echoed(tmp_path):
    path = write(tmp_path, "redis:\n  url: 424242\nmilvus:\n  token: 535353\nkafka:\n  sasl_password: 646464\n")
    message = config_error(path)
    assert "redis.url" in message and "milvus.token" in message and "kafka.sasl_password" in message
    for value in ("424242", "535353", "646464"):
        assert value not in message


def test_secret_in_a_section_with_an_unknown_field_is_not_echoed(monkeypatch):
    monkeypatch.setenv("INGESTOR_REDIS", '{"url": "redis://:hunter2@h:6379", "bogus": 1}')
    message = config_error()
    assert "redis.bogus" in message
    assert "hunter2" not in message


# -- YAML and priority ------------------------------------------------------------------------------


def test_yaml_file_is_read(tmp_path):
    path = write(tmp_path, "kafka:\n  topics: [x, y]\n  group_id: g1\nbatch:\n  max_wait_ms: 10\n")
    s = load_settings(path)
    assert s.kafka.topics == ["x", "y"]
    assert s.kafka.group_id == "g1"
    assert s.batch.max_wait_ms == 10


def test_yaml_topics_as_comma_string(tmp_path):
    assert load_settings(write(tmp_path, "kafka:\n  topics: 'p, q'\n")).kafka.topics == ["p", "q"]


def test_env_overrides_yaml_and_cli_overrides_env(tmp_path, monkeypatch):
    path = write(tmp_path, "kafka:\n  group_id: from-yaml\n  client_id: from-yaml\n  bootstrap_servers: yaml:9092\n")
    monkeypatch.setenv("INGESTOR_KAFKA__GROUP_ID", "from-env")
    monkeypatch.setenv("INGESTOR_KAFKA__BOOTSTRAP_SERVERS", "env:9092")
    s = load_settings(path, overrides={"kafka": {"bootstrap_servers": "cli:9092"}})
    assert s.kafka.client_id == "from-yaml"  # only in YAML: kept (sections merge, not replace)
    assert s.kafka.group_id == "from-env"  # env over YAML
    assert s.kafka.bootstrap_servers == "cli:9092"  # CLI over env


def test_none_override_means_not_given(monkeypatch):
    monkeypatch.setenv("INGESTOR_KAFKA__GROUP_ID", "from-env")
    s = load_settings(overrides={"kafka": {"group_id": None}, "runtime": {"log_level": None}})
    assert s.kafka.group_id == "from-env"
    assert s.runtime.log_level == "INFO"


def test_yaml_is_not_read_by_a_later_call_without_file(tmp_path):
    load_settings(write(tmp_path, "kafka:\n  group_id: from-yaml\n"))
    assert load_settings().kafka.group_id == "ingestor"


def test_missing_config_file_is_config_error(tmp_path):
    message = config_error(tmp_path / "nope.yaml")
    assert "nope.yaml" in message


def test_unknown_field_in_yaml_section_is_config_error(tmp_path):
    message = config_error(write(tmp_path, "kafka:\n  topicz: [a]\n"))
    assert "kafka.topicz" in message


def test_unknown_top_level_section_in_yaml_is_config_error(tmp_path):
    message = config_error(write(tmp_path, "kafak:\n  topics: [a]\n"))
    assert "kafak" in message


def test_invalid_value_in_yaml_names_field(tmp_path):
    assert "batch.max_wait_ms" in config_error(write(tmp_path, "batch:\n  max_wait_ms: later\n"))


def test_malformed_yaml_is_config_error(tmp_path):
    # The CLI turns ConfigError into a one-line message and exit code 2; any other exception is
    # a traceback.
    config_error(write(tmp_path, "kafka:\n  topics: [a, b\n  group_id: x\n"))


def test_yaml_that_is_not_a_mapping_is_config_error(tmp_path):
    config_error(write(tmp_path, "- a\n- b\n"))


def test_every_setting_is_described_once_for_docs_and_help():
    from ingestor.config import Settings, describe

    for section, field in Settings.model_fields.items():
        for name in field.annotation.model_fields:
            assert describe(f"{section}.{name}"), f"{section}.{name} has no description"


def test_a_setting_renamed_to_its_unit_still_reads_its_old_name(monkeypatch):
    from ingestor.config import Settings

    monkeypatch.setenv("INGESTOR_REDIS__EMBEDDING_TTL_SECONDS", "77")
    assert Settings().redis.embedding_ttl_s == 77
