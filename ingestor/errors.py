"""The error tree. Each dependency's exceptions are translated into one of these at exactly one
boundary (its adapter module), so the pipeline branches on two questions only: *retriable?* and
*data?* — the two paths of the delivery contract.

    IngestorError
    ├── ConfigError              bad settings: one readable message, exit code 2
    ├── StartupError             a check at start failed (schema mismatch, Lite file locked)
    ├── RetriableError           a dependency is unavailable: pause, back off, retry the same work
    │   └── (dependency="kafka" | "redis" | "milvus" | "dlq" | "model")
    └── DataError                one record cannot be processed: it goes to the dead-letter topic
"""

from __future__ import annotations


class IngestorError(Exception):
    """Base of every error ingestor raises on purpose."""

    retriable: bool = False


class ConfigError(IngestorError):
    """The configuration is invalid; the message names the field and what is wrong."""


class StartupError(IngestorError):
    """A start-up check failed; the message says what to change."""


class RetriableError(IngestorError):
    """A dependency failed in a way that may heal by itself: retry the same work later."""

    retriable = True

    def __init__(self, dependency: str, message: str) -> None:
        super().__init__(f"{dependency}: {message}")
        self.dependency = dependency


class DataError(IngestorError):
    """One record cannot be processed; it goes to the dead-letter topic with `reason`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
