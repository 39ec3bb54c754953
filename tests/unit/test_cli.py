"""A mistyped command line gets click's usage message and exit 2, never a traceback: whichever
click the installed typer uses (typer >= 0.29 carries its own copy, with its own exception classes)."""

from __future__ import annotations

import sys

import pytest

from ingestor.cli import _run_app


@pytest.mark.parametrize(
    "argv, says",
    [
        (["search", "a query", "--k", "1"], "No such option: --k"),
        (["no-such-command"], "No such command"),
        (["run", "--workers", "many"], "Invalid value"),
    ],
)
def test_a_usage_error_exits_2_with_the_message(monkeypatch, capsys, argv, says):
    monkeypatch.setattr(sys, "argv", ["ingestor", *argv])
    assert _run_app() == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err, err
