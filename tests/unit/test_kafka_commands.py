"""The commands' Kafka clients go through kafka_common's translation: `produce` and `dlq replay`
end with one message and exit 2 for a refusal (as `ingestor run` at start), 1 for an outage;
`check`, `stats` and the supervisor's partition count say what failed. No traceback, and no
module outside kafka_common catches kafka-python's exceptions itself."""

from __future__ import annotations

import ast
import logging
import os
import sys
from pathlib import Path

import pytest
from kafka.errors import KafkaConnectionError, KafkaTimeoutError, SaslAuthenticationFailedError
from rich.console import Console

from ingestor import cli, cli_common
from ingestor.config import Settings


def _failing(exc: BaseException, logged: BaseException | None = None) -> type:
    """A kafka-python client class whose construction fails as a broker makes it fail: with `exc`,
    after logging `logged` as kafka-python's connection manager does (a refusal it then reports as
    a bootstrap timeout)."""

    class Client:
        def __init__(self, **kwargs: object) -> None:
            if logged is not None:
                logging.getLogger("kafka.net.manager").warning("Bootstrap connection to %s failed: %s", "b", logged)
            raise exc

    return Client


@pytest.fixture
def command(monkeypatch, capsys, tmp_path):
    """Run `ingestor ARGS` in-process; (exit code, stderr)."""
    monkeypatch.setattr(cli_common, "setup_logging", lambda *args, **kwargs: None)  # keep pytest's handlers
    for name in [n for n in os.environ if n.startswith("INGESTOR_")]:
        monkeypatch.delenv(name)
    lines = tmp_path / "lines.txt"
    lines.write_text("one line\n")

    def run(*args: str) -> tuple[int, str]:
        argv = [a.replace("LINES", str(lines)) for a in args]
        monkeypatch.setattr(sys, "argv", ["ingestor", *argv, "--bootstrap-servers", "127.0.0.1:1"])
        code = cli._run_app()
        return code, capsys.readouterr().err

    return run


OUTAGE = KafkaTimeoutError("Unable to bootstrap from ['127.0.0.1:1']")
REFUSED = SaslAuthenticationFailedError("Authentication failed during authentication due to invalid credentials")


@pytest.mark.parametrize(
    "args, module, client",
    [
        (("produce", "LINES"), "ingestor.commands.produce", "KafkaProducer"),
        (("dlq", "replay"), "ingestor.commands.replay", "KafkaConsumer"),
    ],
)
def test_an_unreachable_kafka_is_one_message_and_exit_1(monkeypatch, command, args, module, client):
    monkeypatch.setattr(f"{module}.{client}", _failing(OUTAGE))
    code, err = command(*args)
    assert code == 1, err
    assert "Traceback" not in err
    [line] = [ln for ln in err.splitlines() if ln.strip()]
    assert line.startswith("unavailable: kafka: cannot ") and "127.0.0.1:1" in line and "Unable to bootstrap" in line


@pytest.mark.parametrize(
    "args, module, client",
    [
        (("produce", "LINES"), "ingestor.commands.produce", "KafkaProducer"),
        (("dlq", "replay"), "ingestor.commands.replay", "KafkaConsumer"),
    ],
)
@pytest.mark.parametrize(
    "raised, logged", [(REFUSED, None), (OUTAGE, KafkaConnectionError(REFUSED))], ids=["raised", "logged-then-timeout"]
)
def test_a_refused_login_is_one_message_naming_the_setting_and_exit_2(
    monkeypatch, command, args, module, client, raised, logged
):
    monkeypatch.setattr(f"{module}.{client}", _failing(raised, logged))
    code, err = command(*args)
    assert code == 2, err
    assert "Traceback" not in err
    [line] = [ln for ln in err.splitlines() if ln.strip()]
    assert line.startswith("cannot start: the brokers refused the login") and "kafka.sasl_password" in line


def test_check_names_what_kafka_said(monkeypatch):
    from ingestor.commands import check

    settings = Settings(kafka={"bootstrap_servers": "127.0.0.1:1"})
    monkeypatch.setattr("kafka.KafkaConsumer", _failing(OUTAGE))
    [result] = check.bounded({"kafka": lambda: check.check_kafka(settings, 5)}, 5)
    assert result.code == 1 and result.detail.startswith("127.0.0.1:1: KafkaTimeoutError"), result.detail
    monkeypatch.setattr("kafka.KafkaConsumer", _failing(REFUSED))
    [result] = check.bounded({"kafka": lambda: check.check_kafka(settings, 5)}, 5)
    assert result.code == 2 and "brokers refused the login" in result.detail


def test_stats_shows_kafkas_failure_in_its_row(monkeypatch):
    from ingestor.commands import stats

    monkeypatch.setattr("kafka.KafkaConsumer", _failing(OUTAGE))
    monkeypatch.setattr("ingestor.sink.MilvusSink.exists", lambda self: False)
    monkeypatch.setattr("ingestor.sink.MilvusSink.collection_names", lambda self: [])
    console = Console(record=True, width=200)
    code = stats.render_stats(
        Settings(kafka={"bootstrap_servers": "127.0.0.1:1"}, milvus={"uri": "http://127.0.0.1:1"}), console, 5
    )
    assert code == 1 and "KafkaTimeoutError: Unable to bootstrap" in console.export_text().replace("\n", " ")


def test_the_supervisors_partition_count_warns_on_a_kafka_failure(monkeypatch, caplog):
    from ingestor import supervisor

    monkeypatch.setattr("kafka.KafkaConsumer", _failing(OUTAGE))
    with caplog.at_level(logging.WARNING, logger="ingestor.supervisor"):
        supervisor.warn_if_few_partitions(Settings(kafka={"bootstrap_servers": "127.0.0.1:1"}), 4)
    [warning] = [r.getMessage() for r in caplog.records if r.name == "ingestor.supervisor"]
    assert "could not read the partition count" in warning and "KafkaTimeoutError" in warning


def test_no_module_but_kafka_common_imports_kafka_pythons_exceptions():
    """kafka_common is where kafka-python's exceptions are caught and classified; elsewhere they
    pass through its `kafka_call` and `kafka_errors`. (bench/ is leaving the package.)"""
    import ingestor

    root = Path(ingestor.__file__).parent
    found = []
    for path in sorted(root.rglob("*.py")):
        if path.name == "kafka_common.py" or "bench" in path.relative_to(root).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            if any(n == "kafka.errors" or n.startswith("kafka.errors.") for n in names):
                found.append(f"{path.relative_to(root)}:{node.lineno}")
    assert not found, found
