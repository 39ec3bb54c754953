"""The error tree, and the reasons a record is dead-lettered. Each dependency's exceptions are
translated at exactly one boundary: `kafka_common` for Kafka (`kafka_call` and `kafka_errors`,
for the consumer, the dead-letter producer and the commands alike), `milvus_schema` for Milvus
(`classify` and `refusal`, which `sink` calls), `cache` for Redis, `embedder` for the model.
What reacts to them (`retry.Retrier` around each Milvus and dead-letter call, the bisection of
`isolate` in the writer and the embedder, the daemon's waits at start) branches on two questions
only, by class: *retriable?* and *data?* — the two paths of the delivery contract.

    IngestorError
    ├── ConfigError              bad settings: one readable message, exit code 2
    ├── StartupError             a check at start failed (schema mismatch, credentials refused,
    │                            Lite file locked, port taken): exit code 2
    ├── UsageError               a command was given something it cannot use (a missing file,
    │                            an unknown dead-letter reason): one line, exit code 2
    ├── NotFound                 what a read command was pointed at does not exist (a collection):
    │                            one line, exit code 1
    ├── RetriableError           a dependency is unavailable: pause, back off, retry the same work
    │   └── (dependency="kafka" | "dlq" | "milvus")
    └── DataError                one record cannot be processed: it goes to the dead-letter topic
    Aborted                      shutdown gave up on in-flight work (it replays after a restart)

Redis raises no RetriableError: an outage is a cache miss (a refusal at start is a StartupError).
The model's failures become DataError (`embed_failed`) once bisection has found the texts that
fail alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from enum import StrEnum


def chain(exc: BaseException | None) -> Iterator[BaseException]:
    """`exc`, then what caused it, outermost first: `__cause__`, else `__context__`, else an
    exception a library wrapped as its first argument (kafka-python's KafkaConnectionError(e)).
    Each once: a chain can loop (an exception that is its own context's context)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        wrapped = exc.args[0] if exc.args and isinstance(exc.args[0], BaseException) else None
        exc = exc.__cause__ or exc.__context__ or wrapped


class Reason(StrEnum):
    """Why a record went to the dead-letter topic (the `ingestor.reason` header)."""

    TOO_LARGE = "too_large"
    INVALID_UTF8 = "invalid_utf8"
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_TEXT = "missing_text"
    TEXT_NOT_STRING = "text_not_string"
    BLANK_TEXT = "blank_text"
    INVALID_ID = "invalid_id"
    ID_TOO_LONG = "id_too_long"
    INVALID_KEY = "invalid_key"
    INVALID_METADATA = "invalid_metadata"
    TOMBSTONE_WITHOUT_KEY = "tombstone_without_key"
    EMBED_FAILED = "embed_failed"
    SINK_REJECTED = "sink_rejected"


class IngestorError(Exception):
    """Base of every error ingestor raises on purpose."""


class ConfigError(IngestorError):
    """The configuration is invalid; the message names the field and what is wrong."""


class StartupError(IngestorError):
    """A start-up check failed; the message says what to change."""


class UsageError(IngestorError):
    """A command's argument cannot be used; the message says which and why."""


class NotFound(IngestorError):
    """What a read command was pointed at does not exist; the message says what does."""


class RetriableError(IngestorError):
    """A dependency failed in a way that may heal by itself: retry the same work later."""

    def __init__(self, dependency: str, message: str) -> None:
        super().__init__(f"{dependency}: {message}")
        self.dependency = dependency


class DataError(IngestorError):
    """One record cannot be processed; it goes to the dead-letter topic with `reason`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Aborted(Exception):
    """Shutdown gave up on in-flight work (it replays after a restart). Not an IngestorError:
    nothing is wrong, and no handler of errors may swallow it."""
