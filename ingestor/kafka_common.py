"""What every kafka-python client we create shares (consumer, DLQ producer, admin, the commands'
clients): its connection settings, and the one place kafka-python's exceptions are translated
(`kafka_call` for the consumer thread's calls that a later turn may retry, `kafka_errors` for the
rest, `undecodable_reason` for a batch that cannot be decoded); the fix of kafka-python's read loop
(see `_read_from_sock`); and the conversion of topic partitions."""

from __future__ import annotations

import logging
import shlex
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from kafka import TopicPartition as KafkaTP
from kafka.errors import CorruptRecordError, KafkaError, SaslAuthenticationFailedError, UnsupportedCodecError
from kafka.net.sasl.oauth import AbstractTokenProvider

from ingestor import metrics
from ingestor.config import KafkaSettings
from ingestor.errors import RetriableError, StartupError, chain
from ingestor.patches import fingerprint, not_applied
from ingestor.records import TopicPartition

log = logging.getLogger(__name__)

T = TypeVar("T")


def client_kwargs(settings: KafkaSettings) -> dict[str, Any]:
    """The connection and security arguments of every kafka-python client we open."""
    kwargs: dict[str, Any] = {
        "bootstrap_servers": [s.strip() for s in settings.bootstrap_servers.split(",") if s.strip()],
        "client_id": settings.client_id,
        "security_protocol": settings.security_protocol,
        "request_timeout_ms": settings.request_timeout_ms,
        # The first broker's answer is a request's answer too: without this, an unreachable Kafka
        # holds every client for kafka-python's own 30 s whatever the request timeout.
        "bootstrap_timeout_ms": settings.request_timeout_ms,
    }
    if settings.security_protocol.endswith("SSL"):
        kwargs["ssl_check_hostname"] = settings.ssl_check_hostname
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            if getattr(settings, name) is not None:
                kwargs[name] = str(getattr(settings, name))
        if settings.ssl_password is not None:
            kwargs["ssl_password"] = settings.ssl_password.get_secret_value()
    if settings.sasl_mechanism:
        kwargs["sasl_mechanism"] = settings.sasl_mechanism
        if settings.sasl_mechanism == "OAUTHBEARER":
            kwargs["sasl_oauth_token_provider"] = TokenProvider(
                settings.sasl_oauth_token_file, settings.sasl_oauth_token_command
            )
        else:  # kafka-python names the user and password "plain" for SCRAM too
            kwargs["sasl_plain_username"] = settings.sasl_username
            if settings.sasl_password is not None:
                kwargs["sasl_plain_password"] = settings.sasl_password.get_secret_value()
    return kwargs


class TokenProvider(AbstractTokenProvider):
    """OAUTHBEARER access tokens for kafka-python: a file read again at every login (a sidecar
    rotates it), or a command's output, kept for `command_ttl_s` so that a burst of connections
    does not run it once each."""

    def __init__(self, path: Path | None, command: str | None, command_ttl_s: float = 60.0) -> None:
        super().__init__()
        self.path, self.command, self.command_ttl_s = path, command, command_ttl_s
        self._cached: tuple[float, str] | None = None

    def token(self) -> str:
        if self.path is not None:
            return self.path.read_text(encoding="utf-8").strip()
        assert self.command is not None
        now = time.monotonic()
        if self._cached is None or now - self._cached[0] > self.command_ttl_s:
            done = subprocess.run(shlex.split(self.command), capture_output=True, text=True, timeout=30, check=False)
            if done.returncode != 0 or not done.stdout.strip():
                # The command's output may be a token: never show it; its exit code and stderr's end are enough.
                raise RuntimeError(f"sasl_oauth_token_command exited {done.returncode}: {done.stderr.strip()[-200:]}")
            self._cached = (now, done.stdout.strip())
        return self._cached[1]


# What kafka-python raises for a call the consumer thread may simply try again on a later turn: its
# own errors (a broker that does not answer, a coordinator that moved, a failed commit), and
# AssertionError, IllegalStateError or ValueError for a partition no longer (or not yet) assigned.
NOT_NOW = (KafkaError, AssertionError, ValueError)


def kafka_call(
    what: str, call: Callable[[], T], loud: bool = False, last: bool = False, dependency: str = "kafka"
) -> tuple[bool, T | None]:
    """Run one kafka-python call: (True, its result), or (False, None) when it failed in a way the
    next turn may not. The one place Kafka's exceptions are translated; the failure is counted (under
    `dependency`) and logged (at WARNING when `loud`, else DEBUG) with `what` was attempted. `last`: a
    goodbye (leaving the group, closing a client), after which nothing may escape, whatever it raises."""
    try:
        return True, call()
    except Exception as exc:
        if not last and not isinstance(exc, NOT_NOW):
            raise
        metrics.DEPENDENCY_ERRORS.labels(dependency, type(exc).__name__).inc()
        (log.warning if loud else log.debug)(
            "kafka: %s failed (%s)%s", what, exc, "" if last else "; trying again later"
        )
        return False, None


class _ConnectionFailures(logging.Handler):
    """The last refusal among kafka-python's failed connection attempts. It logs the cause (a
    refused login at WARNING, "Bootstrap connection to ... failed"; an untrusted certificate at
    ERROR, "Connection failed") and then reports only a bootstrap timeout, which reads like an
    outage."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.last: BaseException | None = None  # within one `kafka_errors` block
        self.last_reason = ""  # the latest of all, for readiness
        self.last_at = float("-inf")  # monotonic

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        for arg in args:
            if not isinstance(arg, BaseException):
                continue
            reason = refusal(arg)
            if reason is not None:
                self.last, self.last_reason, self.last_at = arg, reason, time.monotonic()


_FAILURES = _ConnectionFailures()
logging.getLogger("kafka.net.manager").addHandler(_FAILURES)


async def _read_from_sock(self: Any) -> None:
    """kafka-python 3.0's `KafkaTCPTransport._read_from_sock`, except that bytes read together with
    the broker's close are handed on before the connection is failed, one loop turn later.

    A broker that refuses a SASL login sends its reason and closes the socket at once; kafka-python
    reads both in one go, drops the bytes and fails the connection as "socket disconnected", so the
    refusal read like an outage and was retried forever. Handed on first, the reason resolves the
    login's pending request, and the login step (resumed on the next turn, before the deferred
    close) fails the connection with SaslAuthenticationFailedError, which `refusal` names."""
    from kafka.errors import KafkaProtocolError

    while self._read and not self._closed:
        await self._net.wait_read(self._sock)
        data, err = self._sock_recv()
        if data:
            self.last_read = time.monotonic()
            if self._protocol and self._protocol._sensors:
                self._protocol._sensors.bytes_received.record(len(data))
            try:
                self._protocol.data_received(data)
            except KafkaProtocolError as e:
                return self.abort(error=e)
        if err:
            if data:
                self._net.call_soon(lambda: self.abort(error=err))
                return None
            return self.abort(error=err)
    return None


# kafka-python 3.0.12's `KafkaTCPTransport._read_from_sock`, which `_read_from_sock` replaces.
READ_LOOP_FINGERPRINT = "572fe643c70751bf"
READ_LOOP = "kafka-python KafkaTCPTransport._read_from_sock"


def _patch_transport() -> bool:
    """Install `_read_from_sock` where kafka-python's own is the one it replaces (a copy installed
    over other code would undo whatever changed there); else say what is lost. Whether installed."""
    from kafka.net.transport import KafkaTCPTransport

    if fingerprint(getattr(KafkaTCPTransport, "_read_from_sock", None)) != READ_LOOP_FINGERPRINT:
        not_applied(
            READ_LOOP,
            "this kafka-python's read loop is not the one the fix was read against",
            "a broker's refusal of the SASL login reads as an outage: `ingestor run` waits out the "
            "bootstrap timeout and retries instead of exiting 2 naming kafka.sasl_password",
        )
        return False
    KafkaTCPTransport._read_from_sock = _read_from_sock
    return True


_patch_transport()


def kafka_tp(tp: TopicPartition) -> KafkaTP:
    return KafkaTP(tp.topic, tp.partition)


def our_tp(ktp: KafkaTP) -> TopicPartition:
    return TopicPartition(ktp.topic, ktp.partition)


UNDECODABLE_REASONS = ("unsupported_codec", "corrupt_batch", "undecodable")


def undecodable_reason(exc: BaseException) -> str:
    """Why kafka-python could not decode a fetched batch, one of UNDECODABLE_REASONS."""
    if isinstance(exc, UnsupportedCodecError):
        return "unsupported_codec"
    if isinstance(exc, CorruptRecordError):
        return "corrupt_batch"
    return "undecodable"


def recent_refusal(within_s: float = 60.0) -> str | None:
    """Why the brokers refused a connection of ours in the last `within_s` seconds (a password
    rotated under a running daemon), or None. kafka-python retries by itself, at least every
    reconnect backoff, so a refusal that persists keeps being seen."""
    if time.monotonic() - _FAILURES.last_at <= within_s:
        return _FAILURES.last_reason
    return None


def refusal(exc: BaseException | None) -> str | None:
    """What to fix when the brokers refused us for good, or None for an outage: a refused login or
    an untrusted certificate does not heal by retrying. Names the setting, never its value."""
    for seen in chain(exc):
        if isinstance(seen, SaslAuthenticationFailedError):
            return (
                "the brokers refused the login: check kafka.sasl_mechanism, kafka.sasl_username and "
                "kafka.sasl_password (or kafka.sasl_password_file)"
            )
        if isinstance(seen, ssl.SSLCertVerificationError):
            return (
                f"the brokers' certificate is not trusted ({seen.verify_message}): check kafka.ssl_cafile "
                "(and kafka.ssl_check_hostname)"
            )
        if isinstance(seen, ssl.SSLError) and "ALERT" in str(seen.reason or "") and "CERTIFICATE" in str(seen.reason):
            # The broker's alert once the handshake is done (TLS 1.3): it wants a certificate we lack.
            return (
                f"the brokers refused our client certificate ({seen.reason}): check kafka.ssl_certfile and "
                "kafka.ssl_keyfile"
            )
        if isinstance(seen, ssl.SSLError):
            return f"TLS with the brokers failed ({seen.reason or seen}): check kafka.security_protocol and kafka.ssl_*"
    return None


@contextmanager
def kafka_errors(
    dependency: str, what: str, on_error: Callable[[], None] | None = None, at_start: bool = False
) -> Iterator[None]:
    """kafka-python's errors inside the block become RetriableError(`dependency`, "`what`: error"),
    counted, naming the cause when it is a refusal (see `refusal`); `on_error` runs first (the DLQ
    drops a producer that a fatal error has poisoned). `at_start`: a refusal is a StartupError
    instead (exit 2: retrying cannot heal it); later, it is retried like any outage."""
    _FAILURES.last = None
    try:
        yield
    except KafkaError as exc:
        metrics.DEPENDENCY_ERRORS.labels(dependency, type(exc).__name__).inc()
        if on_error is not None:
            on_error()
        reason = refusal(exc) or refusal(_FAILURES.last)
        if reason is not None and at_start:
            raise StartupError(reason) from None
        raise RetriableError(dependency, f"{what}: {exc}" + (f" ({reason})" if reason else "")) from exc
