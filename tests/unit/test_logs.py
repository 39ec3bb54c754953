"""kafka-python's normal moments stay out of an operator's log; real problems do not."""

from __future__ import annotations

import logging

import pytest

from ingestor.logs import KafkaClientNoise


def _record(name: str, level: int, msg: str, args: tuple = ()) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


@pytest.mark.parametrize(
    "name, level, msg, args",
    [
        ("kafka.cluster", logging.ERROR, "Topic %s not found in cluster metadata", ("documents",)),
        (
            "kafka.coordinator.base",
            logging.WARNING,
            "Marking the coordinator dead (node %s) for group %s: %s.",
            ("coordinator-1", "g", "[Error 16] NotCoordinatorError"),
        ),
        (
            "kafka.net.selector",
            logging.WARNING,
            "Task <Task> ran for 0.109s (>0.100s threshold). It is blocking the "
            "event loop -- likely a tight sync loop inside a coroutine. Other pollers will time out.",
            (),
        ),
    ],
)
def test_benign_client_messages_are_dropped_or_demoted(name, level, msg, args):
    assert not KafkaClientNoise(debug=False).filter(_record(name, level, msg, args))
    demoted = _record(name, level, msg, args)
    assert KafkaClientNoise(debug=True).filter(demoted) and demoted.levelname == "DEBUG"


@pytest.mark.parametrize(
    "name, msg, args",
    [
        (
            "kafka.coordinator.base",
            "Marking the coordinator dead (node %s) for group %s: %s.",
            ("coordinator-1", "g", "NodeNotReadyError"),
        ),
        ("kafka.conn", "Connect attempt to %s returned error %s", ("broker", "ECONNREFUSED")),
        ("ingestor.source", "Topic %s not found in cluster metadata", ("x",)),
    ],
)
def test_real_problems_still_warn(name, msg, args):
    record = _record(name, logging.WARNING, msg, args)
    assert KafkaClientNoise(debug=False).filter(record) and record.levelname == "WARNING"


def test_a_kafka_client_traceback_becomes_one_line_with_its_cause():
    import ssl
    import sys

    try:
        raise ssl.SSLError(1, "[SSL: SSLV3_ALERT_BAD_CERTIFICATE] sslv3 alert bad certificate")
    except ssl.SSLError:
        exc_info = sys.exc_info()
    record = logging.LogRecord(
        "kafka.net.transport",
        logging.ERROR,
        __file__,
        1,
        "%s: Error receiving network data closing socket",
        ("<transport>",),
        exc_info,
    )
    assert KafkaClientNoise(debug=False).filter(record)
    line = logging.Formatter("%(levelname)s %(message)s").format(record)
    assert line == (
        "ERROR <transport>: Error receiving network data closing socket (SSLError: [SSL: "
        "SSLV3_ALERT_BAD_CERTIFICATE] sslv3 alert bad certificate)"
    )
    kept = logging.LogRecord("kafka.net.transport", logging.ERROR, __file__, 1, "closing", (), exc_info)
    assert KafkaClientNoise(debug=True).filter(kept) and "Traceback" in logging.Formatter().format(kept)
