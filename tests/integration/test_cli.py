"""The commands as a user runs them: exit codes, messages, and no tracebacks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tests.support import harness

pytestmark = pytest.mark.services


def _cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("INGESTOR_")}
    base.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "ingestor", *args],
        env=base,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_an_invalid_setting_is_one_message_and_exit_2():
    result = _cli("run", env={"INGESTOR_BATCH__MAX_WAIT_MS": "-5", "INGESTOR_MODEL__PRECISION": "fp8"})
    assert result.returncode == 2
    assert "batch.max_wait_ms" in result.stderr and "INGESTOR_BATCH__MAX_WAIT_MS" in result.stderr
    assert "model.precision" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_a_broken_yaml_file_is_exit_2(tmp_path):
    bad = tmp_path / "settings.yaml"
    bad.write_text("kafka: [unclosed\n")
    result = _cli("run", "--config", str(bad))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "invalid configuration" in result.stderr


def test_a_secret_never_reaches_the_error_message():
    result = _cli(
        "run", env={"INGESTOR_REDIS__URL": "redis://:hunter2@127.0.0.1:6379/0", "INGESTOR_BATCH__MAX_WAIT_MS": "x"}
    )
    assert result.returncode == 2
    assert "hunter2" not in result.stderr + result.stdout


def test_a_second_daemon_on_a_taken_metrics_port_is_one_line_and_exit_2(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _cli(
            "run", env={"INGESTOR_METRICS__PORT": str(port), "INGESTOR_MILVUS__URI": str(tmp_path / "p.db")}, timeout=60
        )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    [line] = [ln for ln in result.stderr.splitlines() if "cannot start" in ln]
    assert f"127.0.0.1:{port}" in line and "INGESTOR_METRICS__PORT" in line


def test_check_reports_each_dependency(services, tmp_path):
    env = {
        "INGESTOR_KAFKA__BOOTSTRAP_SERVERS": harness.KAFKA,
        "INGESTOR_REDIS__URL": harness.REDIS_URL,
        "INGESTOR_MILVUS__URI": str(tmp_path / "check.db"),
    }
    ok = _cli("check", env=env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    for name in ("kafka", "redis", "milvus", "model"):
        assert any(line.startswith("ok") and name in line for line in ok.stdout.splitlines()), ok.stdout
    bad = _cli(
        "check",
        env=dict(env, INGESTOR_KAFKA__BOOTSTRAP_SERVERS="127.0.0.1:1", INGESTOR_KAFKA__REQUEST_TIMEOUT_MS="3000"),
    )
    assert bad.returncode == 1
    assert any(line.startswith("FAIL") and "kafka" in line for line in bad.stdout.splitlines()), bad.stdout


def test_kafka_down_at_start_is_retried_quietly_and_sigterm_exits_0(tmp_path):
    env = harness.ingestor_env(
        "t",
        "g",
        str(tmp_path / "down.db"),
        redis=False,
        INGESTOR_KAFKA__BOOTSTRAP_SERVERS="127.0.0.1:1",
        INGESTOR_KAFKA__REQUEST_TIMEOUT_MS="3000",  # each attempt waits for a first broker this long
    )
    log = tmp_path / "out.log"
    proc = harness.start_ingestor(env, log_path=log)
    try:
        harness.wait_for(lambda: log.read_text().count("not reachable yet") >= 2, 120, what="two retry lines")
    finally:
        code = harness.stop(proc, signal.SIGTERM)
    text = log.read_text()
    assert code == 0, text[-3000:]
    assert "Traceback" not in text


def test_produce_and_dlq_replay_against_an_unreachable_kafka_end_with_one_message_and_exit_1(tmp_path):
    lines = tmp_path / "lines.txt"
    lines.write_text("one line\n")
    env = {"INGESTOR_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1", "INGESTOR_KAFKA__REQUEST_TIMEOUT_MS": "3000"}
    base = {k: v for k, v in os.environ.items() if not k.startswith("INGESTOR_")}
    # Each waits for a first broker for the request timeout (3 s), then says so once.
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "ingestor", *args],
            env={**base, **env},
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for args in (("produce", str(lines)), ("dlq", "replay"))
    ]
    for proc, says in zip(procs, ("cannot publish to", "cannot replay")):
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 1, out + err
        assert "Traceback" not in out + err
        [message] = [ln for ln in err.splitlines() if ln.startswith("unavailable:")]
        assert says in message and "127.0.0.1:1" in message, message


def test_produce_then_run_then_search_like_the_readme(services, tmp_path):
    topic = harness.unique("cli")
    lines = tmp_path / "lines.txt"
    lines.write_text("The cat sat on the mat.\nQuantum computers use qubits.\nBread is baked in an oven.\n")
    env = harness.ingestor_env(topic, harness.unique("g"), str(tmp_path / "cli.db"))
    produced = _cli("produce", str(lines), env=env)
    assert produced.returncode == 0 and "published 3 record(s)" in produced.stdout
    assert harness.run_ingestor(env).returncode == 0
    found = _cli("search", "what do bakers use", "-k", "1", env=env)
    assert found.returncode == 0, found.stderr
    assert "Bread is baked" in found.stdout


def test_stats_shows_rows_and_lag(services, tmp_path):
    topic = harness.unique("stats")
    harness.create_topic(topic, partitions=2)
    harness.produce(topic, [harness.json_record({"id": f"s{i}", "text": f"stats record {i}"}) for i in range(5)])
    env = harness.ingestor_env(topic, harness.unique("g"), str(tmp_path / "stats.db"))
    assert harness.run_ingestor(env).returncode == 0
    out = _cli("stats", env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "milvus rows (documents)" in out.stdout and " 5 " in out.stdout
    assert f"lag {topic}[0]" in out.stdout


def test_dlq_replay_republishes_to_the_source_topic(services, tmp_path):
    topic = harness.unique("replay")
    harness.create_topic(topic, partitions=1)
    harness.produce(topic, [(None, b"not json"), harness.json_record({"id": "fine", "text": "a fine record"})])
    env = harness.ingestor_env(topic, harness.unique("g"), str(tmp_path / "r.db"))
    assert harness.run_ingestor(env).returncode == 0
    dry = _cli("dlq", "replay", "--reason", "invalid_json", "--dry-run", env=env)
    assert "would replay 1 record(s)" in dry.stdout, dry.stdout + dry.stderr
    assert _cli("dlq", "replay", "--reason", "blank_text", env=env).stdout.count("replayed 0") == 1
    done = _cli("dlq", "replay", env=env)
    assert "replayed 1 record(s)" in done.stdout
    values = [r.value for r in harness.read_topic(topic)]
    assert values.count(b"not json") == 2  # the original and the replayed copy
