"""`ingestor.hooks`: production runs the do-nothing hooks; INGESTOR_HOOKS installs a harness's, and
names one that cannot be installed as a configuration error; the fault suite's hooks do what their
INGESTOR_FAULT_* variables say."""

from __future__ import annotations

import pytest

from ingestor import hooks
from ingestor.config import ModelSettings
from ingestor.errors import ConfigError
from tests.support.hooks import FaultHooks, StandInEmbedder


@pytest.fixture(autouse=True)
def restore_hooks():
    before = hooks.current
    yield
    hooks.install(before)


def test_unset_installs_nothing(monkeypatch):
    monkeypatch.delenv(hooks.ENV, raising=False)
    hooks.install_from_environment()
    assert type(hooks.current) is hooks.Hooks
    columns = {"id": ["a"], "vector": [[1.0, 0.0]]}
    assert hooks.current.columns(columns) is columns and hooks.current.model(ModelSettings()) is None


def test_the_variable_names_a_callable_that_returns_the_hooks(monkeypatch):
    monkeypatch.setenv(hooks.ENV, "tests.support.hooks:from_environment")
    monkeypatch.setenv("INGESTOR_FAULT_STAND_IN_MODEL", "1")
    hooks.install_from_environment()
    assert isinstance(hooks.current, FaultHooks)
    assert isinstance(hooks.current.model(ModelSettings()), StandInEmbedder)


@pytest.mark.parametrize(
    "spec", ["tests.support.hooks", "tests.support.nothing:hooks", "tests.support.hooks:nothing", "os:getcwd"]
)
def test_a_variable_that_names_no_hooks_is_a_config_error(monkeypatch, spec):
    monkeypatch.setenv(hooks.ENV, spec)
    with pytest.raises(ConfigError):
        hooks.install_from_environment()
    assert type(hooks.current) is hooks.Hooks


def test_fault_hooks_do_what_their_variables_say():
    h = FaultHooks(
        {
            "INGESTOR_FAULT_SINK_REJECT": "@@x@@",
            "INGESTOR_FAULT_FAIL_TEXT": "@@p@@",
            "INGESTOR_FAULT_CRASH_AT": "after_upsert:2",
        }
    )
    out = h.columns({"id": ["a", "b@@x@@"], "vector": [[1.0, 2.0], [3.0, 4.0]]})
    assert out["vector"] == [[1.0, 2.0], [3.0]]
    h.before_forward(["fine"])
    with pytest.raises(RuntimeError, match="injected"):
        h.before_forward(["fine", "a @@p@@ text"])
    h.point("after_embed")
    h.point("after_upsert")  # the first pass of two: no crash yet
    assert h.crash_remaining == 1
    assert FaultHooks({}).model(ModelSettings()) is None
