"""The points where a test harness may step into a running daemon: one `Hooks` object, whose
methods do nothing. Production code calls `current`'s methods and nothing else of a harness.

A process of `ingestor run` installs other hooks only when asked by the environment:
``INGESTOR_HOOKS=<module>:<callable>`` names a callable that returns a `Hooks` (the fault suite
sets ``tests.support.hooks:from_environment``); `ingestor run` imports it and installs what it
returns before the daemon starts. Unset, as everywhere outside the tests, nothing is imported and
each hook is a call that returns at once.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Sequence
from typing import Any

from ingestor.config import ModelSettings
from ingestor.errors import ConfigError

log = logging.getLogger(__name__)

ENV = "INGESTOR_HOOKS"


class Hooks:
    """Every hook, doing nothing; a harness overrides those it needs."""

    def point(self, name: str) -> None:
        """The pipeline passed a named point: ``after_embed`` (vectors computed, nothing written)
        or ``after_upsert`` (Milvus acknowledged; the cache and the offsets not yet)."""

    def before_batch(self) -> None:
        """The model stage is about to run a batch's forward pass (once per batch)."""

    def before_forward(self, texts: Sequence[str]) -> None:
        """Just before every call into the model: a batch's first try and each split of a failed
        one. What it raises, the model raised."""

    def columns(self, columns: dict[str, list[Any]]) -> dict[str, list[Any]]:
        """The columns of an upsert, before they are sent; returns what is sent."""
        return columns

    def consumer_created(self, consumer: Any) -> None:
        """The Kafka consumer exists and has not polled yet."""

    def model(self, settings: ModelSettings) -> Any | None:
        """A model to use instead of loading the one `settings` name; None loads it."""
        return None


current = Hooks()


def install(hooks: Hooks) -> None:
    """Make `hooks` the process's hooks, for every daemon started after this."""
    global current
    current = hooks


def install_from_environment() -> None:
    """Install the hooks `INGESTOR_HOOKS` names, if it is set; ConfigError if they cannot be."""
    spec = os.environ.get(ENV, "").strip()
    if not spec:
        return
    module, _, name = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"{ENV}={spec!r} names no importable callable (module:callable): {exc}") from exc
    hooks = factory()
    if not isinstance(hooks, Hooks):
        raise ConfigError(f"{ENV}={spec!r} returned {type(hooks).__name__}, not ingestor.hooks.Hooks")
    install(hooks)
    log.info("hooks installed from %s=%s", ENV, spec)
