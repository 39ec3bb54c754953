"""The command line as documentation and as a contract, in-process: every flag's help names its
variable and default, every command has a whole summary and an example, user errors are one line
with a non-zero exit, and `config show` / `config validate` / `--version` say what they promise."""

from __future__ import annotations

import os
import re
import sys

import click
import pytest
import typer

from ingestor import __version__, cli, cli_common


@pytest.fixture(autouse=True)
def hermetic(monkeypatch, tmp_path):
    for name in [n for n in os.environ if n.startswith("INGESTOR_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli_common, "setup_logging", lambda *a, **k: None)  # keep pytest's log capture


def run(monkeypatch, capsys, *argv: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["ingestor", *argv])
    code = cli._run_app()
    out = capsys.readouterr()
    return code, out.out, out.err


def _commands() -> dict[str, click.Command]:
    """Every command by its path. Duck-typed: typer >= 0.29 carries its own copy of click's classes."""
    root = typer.main.get_command(cli.app)
    found = {}
    for name, command in root.commands.items():
        if hasattr(command, "commands"):
            found.update({f"{name} {sub}": c for sub, c in command.commands.items()})
        else:
            found[name] = command
    return found


def test_every_command_has_a_whole_summary_and_an_example():
    for name, command in _commands().items():
        summary = command.get_short_help_str(limit=60)
        assert summary and not summary.endswith("..."), f"{name}: {summary!r}"
        assert "Examples:" in (command.epilog or ""), f"{name} has no example"


def test_every_settings_flag_names_its_variable_and_default_and_metavars_read_as_words():
    for name, command in _commands().items():
        for param in command.params:
            if type(param).__name__ != "TyperOption" or param.is_flag or param.name in ("help",):
                continue
            help_text = param.help or ""
            assert "[default:" in help_text, f"{name} {param.opts}: {help_text!r}"
            if param.opts[0] in ("--config", "-c", "--timeout", "-k") or help_text.startswith(("Only", "Publish")):
                continue
            if "[env:" not in help_text:
                assert name == "dlq replay" or param.opts[0] in (
                    "--devices",
                    "--workers-per-device",
                    "--workers",
                    "--topic",
                ), f"{name} {param.opts} has no [env: ...]"
    for name, command in _commands().items():
        text = command.get_help(command.context_class(command, info_name=name))
        assert not re.search(r"<\w+(\[\w+\])?>|int range|x>=", text), f"{name}: a Python type shows in its help"


def test_run_help_shows_env_and_default_for_each_setting_flag(monkeypatch, capsys):
    code, out, _ = run(monkeypatch, capsys, "run", "--help")
    out = " ".join(out.split())
    assert code == 0
    assert "[env: INGESTOR_KAFKA__BOOTSTRAP_SERVERS]" in out and "[default: 127.0.0.1:9092]" in out
    assert "docs/configuration.md" in out


def test_version(monkeypatch, capsys):
    code, out, _ = run(monkeypatch, capsys, "--version")
    assert code == 0 and out.startswith(f"ingestor {__version__} (") and os.path.dirname(cli.__file__)[:-9] in out


def test_version_matches_the_package_metadata():
    import tomllib
    from pathlib import Path

    pyproject = tomllib.loads((Path(cli.__file__).parents[1] / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["project"]["version"] == __version__


@pytest.mark.parametrize(
    "argv, code, says",
    [
        (["produce", "/nonexistent.jsonl"], 2, "/nonexistent.jsonl: no such file"),
        (["dlq", "replay", "--reason", "no_such_reason"], 2, "no such reason; the reasons are too_large"),
        (["dlq", "replay", "--from-offset", "9", "--to-offset", "3"], 2, "is past --to-offset"),
        (["search", "q", "--milvus-uri", "./missing.db"], 1, "no Milvus Lite file at ./missing.db"),
        (["stats", "--timeout", "-1"], 2, "must be at least 0.1"),
        (["search", "a query", "--k", "1"], 2, "No such option: --k"),
        (["check", "--workers", "2", "--workers-per-device", "3"], 2, "contradict each other"),
        (["check", "--devices", "cpu", "--workers-per-device", "2"], 2, "cannot share the Milvus Lite file"),
    ],
)
def test_a_user_error_is_one_line_and_a_non_zero_exit(monkeypatch, capsys, argv, code, says):
    got, out, err = run(monkeypatch, capsys, *argv)
    lines = [ln for ln in (out + err).splitlines() if ln.strip()]
    assert got == code, out + err
    assert len(lines) == 1 and says in lines[0], lines
    assert "Traceback" not in out + err


def test_config_show_redacts_secrets_and_names_each_source(monkeypatch, capsys, tmp_path):
    settings = tmp_path / "s.yaml"
    settings.write_text("kafka:\n  group_id: from-file\n", encoding="utf-8")
    monkeypatch.setenv("INGESTOR_MILVUS__TOKEN", "hunter2-token")
    monkeypatch.setenv("INGESTOR_REDIS__URL", "redis://:hunter2@cache:6379/0")
    code, out, _ = run(monkeypatch, capsys, "config", "show", "-c", str(settings), "--collection", "docs")
    assert code == 0 and "hunter2" not in out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.strip()}
    assert rows["kafka.group_id"][0] == "from-file" and rows["kafka.group_id"][1:] == ["file", str(settings)]
    assert rows["milvus.collection"] == ["docs", "flag"]
    assert rows["milvus.token"] == ["**********", "env", "INGESTOR_MILVUS__TOKEN"]
    assert rows["kafka.topics"] == ["documents", "default"]


def test_config_validate(monkeypatch, capsys):
    code, out, _ = run(monkeypatch, capsys, "config", "validate")
    assert code == 0 and out.startswith("ok")
    monkeypatch.setenv("INGESTOR_KAFKA_BOOTSTRAP_SERVERS", "k:9092")
    code, _, err = run(monkeypatch, capsys, "config", "validate")
    assert code == 2 and "did you mean INGESTOR_KAFKA__BOOTSTRAP_SERVERS?" in err
