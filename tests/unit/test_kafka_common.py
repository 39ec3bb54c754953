"""The one translation of kafka-python's exceptions: `kafka_call` (a consumer-thread call that a
later turn may retry) and `kafka_errors` (a call whose failure the caller retries as a whole)."""

from __future__ import annotations

import pytest
from kafka.errors import KafkaConnectionError, KafkaTimeoutError

from ingestor import metrics
from ingestor.errors import RetriableError
from ingestor.kafka_common import kafka_call, kafka_errors


def _count(dependency: str, kind: str) -> float:
    return (
        metrics.REGISTRY.get_sample_value("ingestor_dependency_errors_total", {"dependency": dependency, "kind": kind})
        or 0.0
    )


def test_kafka_call_turns_a_not_now_failure_into_false_and_counts_it() -> None:
    before = _count("kafka", "KafkaTimeoutError")

    def broker_away() -> int:
        raise KafkaTimeoutError("no answer")

    assert kafka_call("poll", broker_away) == (False, None)
    assert kafka_call("pause", lambda: (_ for _ in ()).throw(AssertionError("not assigned"))) == (False, None)
    assert kafka_call("poll", lambda: 7) == (True, 7)
    assert _count("kafka", "KafkaTimeoutError") == before + 1


def test_kafka_call_lets_a_bug_through_unless_it_is_the_last_call() -> None:
    def bug() -> None:
        raise TypeError("a bug, not a broker")

    with pytest.raises(TypeError):
        kafka_call("poll", bug)
    assert kafka_call("leaving the group", bug, last=True) == (False, None)


def test_kafka_errors_raise_a_retriable_error_naming_what_failed_after_on_error() -> None:
    dropped: list[str] = []
    before = _count("dlq", "KafkaConnectionError")
    with pytest.raises(RetriableError) as caught:
        with kafka_errors("dlq", "dead-letter write not acknowledged", on_error=lambda: dropped.append("x")):
            raise KafkaConnectionError("broker down")
    assert caught.value.dependency == "dlq"
    assert "dead-letter write not acknowledged: KafkaConnectionError: broker down" in str(caught.value)
    assert dropped == ["x"]
    assert _count("dlq", "KafkaConnectionError") == before + 1
    with pytest.raises(ValueError):  # not kafka-python's: not translated
        with kafka_errors("dlq", "x"):
            raise ValueError("bug")


def test_bytes_read_with_the_brokers_close_are_handed_on_before_the_connection_fails():
    """A broker refusing a SASL login sends its reason and closes: both arrive in one read. The
    reason must reach the protocol first, and the close come a loop turn later, after the login
    step resumed (kafka-python 3.0.12 dropped the bytes: the refusal read like an outage)."""
    import asyncio

    from kafka.errors import KafkaConnectionError
    from kafka.net.transport import KafkaTCPTransport

    from ingestor import kafka_common

    assert KafkaTCPTransport._read_from_sock is kafka_common._read_from_sock, "the fix is not installed"
    events: list[object] = []
    soon: list = []

    class Net:
        async def wait_read(self, sock):
            return None

        def call_soon(self, task):
            soon.append(task)

    class Protocol:
        _sensors = None

        def data_received(self, data):
            events.append(("data", data))

    class Transport:
        _read, _closed, _sock, _net, _protocol = True, False, object(), Net(), Protocol()

        def _sock_recv(self):
            return b"refused", KafkaConnectionError("socket disconnected")

        def abort(self, error=None):
            events.append(("abort", str(error)))
            self._closed = True

    transport = Transport()
    asyncio.run(kafka_common._read_from_sock(transport))
    assert events == [("data", b"refused")], "the bytes first, and no close yet"
    [later] = soon
    later()
    assert events[-1] == ("abort", "KafkaConnectionError: socket disconnected")

    # A close with nothing read fails the connection at once, as before.
    events.clear()
    transport = Transport()
    transport._sock_recv = lambda: (b"", KafkaConnectionError("socket disconnected"))
    asyncio.run(kafka_common._read_from_sock(transport))
    assert events == [("abort", "KafkaConnectionError: socket disconnected")]
