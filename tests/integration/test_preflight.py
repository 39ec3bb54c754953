"""The operator's contract of the real CLI, in subprocesses: `check` and `stats` bounded by their
timeout with one line per dependency and exit 0/1/2, each configuration mistake refused with exit 2
naming its variable, and user errors of `produce`, `search` and `dlq replay` in one line."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import harness

pytestmark = pytest.mark.services

CLOSED = {  # nothing listens there
    "INGESTOR_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1",
    "INGESTOR_REDIS__URL": "redis://127.0.0.1:2/0",
    "INGESTOR_MILVUS__URI": "http://127.0.0.1:3",
}
KAFKA_PYTHON_LINE = re.compile(r"\bkafka\.\w|Bootstrap connection|Connect attempt|<BrokerConnection|Unable to connect")


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("INGESTOR_")}
    return {**base, **(extra or {})}


def _cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ingestor", *args],
        env=_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]


# -- check -------------------------------------------------------------------------------------------


def test_check_with_every_dependency_down_reports_each_within_its_timeout():
    """Each dependency's line comes within --timeout (+3 s for the interpreter's start), then the
    model's; exactly one line each, none of kafka-python's, and exit 1."""
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ingestor", "check", "--timeout", "2"],
        env=_env(CLOSED),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    seen: dict[str, float] = {}
    lines = []
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        words = line.split()
        if len(words) >= 2:
            seen[words[1]] = time.monotonic() - started
    err = proc.stderr.read() if proc.stderr is not None else ""
    assert proc.wait(timeout=120) == 1, "\n".join(lines) + err
    for name in ("kafka", "redis", "milvus"):
        assert seen.get(name, 99) <= 2 + 3, (name, seen)
    assert sorted(ln.split()[1] for ln in lines) == ["kafka", "milvus", "model", "redis"], lines
    assert all(ln.startswith("FAIL") for ln in lines if ln.split()[1] != "model"), lines
    assert not KAFKA_PYTHON_LINE.search(err + "\n".join(lines)), err
    assert "Traceback" not in err


def test_check_with_everything_up_exits_0_and_says_what_it_found(services, tmp_path):
    topic = harness.unique("check")
    harness.create_topic(topic, partitions=2)
    env = {
        "INGESTOR_KAFKA__BOOTSTRAP_SERVERS": harness.KAFKA,
        "INGESTOR_KAFKA__TOPICS": topic,
        "INGESTOR_REDIS__URL": harness.REDIS_URL,
        "INGESTOR_MILVUS__URI": str(tmp_path / "check.db"),
    }
    ok = _cli("check", env=env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    lines = _lines(ok.stdout)
    assert sorted(ln.split()[1] for ln in lines) == ["kafka", "milvus", "model", "redis"], lines
    assert all(ln.startswith("ok") for ln in lines), lines
    [kafka] = [ln for ln in lines if ln.split()[1] == "kafka"]
    assert f"{topic} (2 partition(s), lag 0)" in kafka
    assert not (tmp_path / "check.db").exists(), "check created the Milvus Lite file"


def test_check_refuses_what_run_refuses_with_runs_message(tmp_path):
    env = {**CLOSED, "INGESTOR_MILVUS__URI": str(tmp_path / "x.db"), "INGESTOR_CHUNKING__MAX_TOKENS": "100000"}
    result = _cli("check", "--timeout", "1", env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    [model] = [ln for ln in _lines(result.stdout) if ln.split()[1] == "model"]
    assert model.startswith("FAIL") and "chunking.max_tokens is 100000, but the model takes at most 256" in model
    assert "INGESTOR_CHUNKING__MAX_TOKENS" in model


def test_stats_with_its_dependencies_down_fails_within_its_bound():
    started = time.monotonic()
    result = _cli("stats", "--timeout", "2", env=CLOSED)
    assert time.monotonic() - started < 2 + 5, "stats outlived its bound"
    assert result.returncode == 1, result.stdout + result.stderr
    text = " ".join(result.stdout.split())
    assert "Connection refused" in text or "Error 111" in text, text  # Redis's own message, not its class alone
    assert "Traceback" not in result.stdout + result.stderr


# -- configuration mistakes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "env, names",
    [
        ({"INGESTOR_FOO": "1"}, ["INGESTOR_FOO"]),
        ({"INGESTOR_KAFKA_BOOTSTRAP_SERVERS": "k:9092"}, ["INGESTOR_KAFKA__BOOTSTRAP_SERVERS"]),
        ({"INGESTOR_MILVUS__URI": "htp://milvus:19530"}, ["INGESTOR_MILVUS__URI"]),
        ({"INGESTOR_KAFKA__TOPICS": "not json"}, ["INGESTOR_KAFKA__TOPICS"]),
        ({"INGESTOR_KAFKA__TOPICS": '["a",'}, ["INGESTOR_KAFKA__TOPICS"]),
        ({"INGESTOR_KAFKA__FOO": "1"}, ["INGESTOR_KAFKA__FOO"]),
        ({"INGESTOR_KAFKA__BOOTSTRAP_SERVERS": "kafka"}, ["INGESTOR_KAFKA__BOOTSTRAP_SERVERS"]),
        ({"INGESTOR_KAFKA__SECURITY_PROTOCOL": "SASL_SSL"}, ["INGESTOR_KAFKA__SASL_MECHANISM"]),
    ],
    ids=lambda v: next(iter(v)) if isinstance(v, dict) else None,
)
def test_a_configuration_mistake_is_exit_2_naming_the_variable(env, names):
    result = _cli("run", env=env, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    for name in names:
        assert name in result.stderr, result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_a_misspelt_yaml_key_is_exit_2_naming_the_real_one(tmp_path):
    path = tmp_path / "settings.yaml"
    path.write_text("kafka:\n  bootstrap_server: k:9092\n", encoding="utf-8")
    result = _cli("check", "--config", str(path), timeout=60)
    assert result.returncode == 2 and "did you mean kafka.bootstrap_servers?" in result.stderr, result.stderr


# -- user errors -------------------------------------------------------------------------------------------


def _one_line(result: subprocess.CompletedProcess[str], code: int, says: str) -> None:
    lines = _lines(result.stdout + result.stderr)
    assert result.returncode == code, lines
    assert len(lines) == 1 and says in lines[0], lines
    assert "Traceback" not in result.stdout + result.stderr


def test_produce_of_a_missing_file_is_one_line():
    _one_line(_cli("produce", "/nonexistent.jsonl", timeout=60), 2, "/nonexistent.jsonl: no such file")


def test_replay_of_an_unknown_reason_is_one_line():
    _one_line(_cli("dlq", "replay", "--reason", "no_such_reason", timeout=60), 2, "no such reason")


def test_search_of_an_unknown_collection_is_one_line_naming_those_there(tmp_path):
    db = str(tmp_path / "s.db")
    # A Lite file holding one collection, "documents", made in a process of its own: in-process,
    # Milvus Lite keeps the file's lock until the interpreter exits.
    make = "import sys, pymilvus; pymilvus.MilvusClient(uri=sys.argv[1]).create_collection('documents', 8)"
    subprocess.run([sys.executable, "-c", make, db], check=True, timeout=120, capture_output=True)
    env = {"INGESTOR_MILVUS__URI": db}
    result = _cli("search", "cat", "--collection", "TYPO", env=env)
    _one_line(result, 1, "no collection 'TYPO'")
    assert "the collections there: documents" in result.stderr


def test_the_venv_runs_this_checkout():
    """`--version` names where the code runs from: this checkout, not another clone's."""
    result = _cli("--version", timeout=60)
    assert result.returncode == 0 and str(Path(harness.REPO)) in result.stdout, result.stdout
