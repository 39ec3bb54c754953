"""Checks of setting values that are certain to fail later: Milvus URIs, Kafka topic names and
broker addresses. Pure."""

from __future__ import annotations

import re

# What pymilvus connects to: a server by these schemes, or a Milvus Lite file whose name ends in .db.
MILVUS_SCHEMES = ("http://", "https://", "tcp://", "unix:")


def is_lite_uri(uri: str) -> bool:
    """A file path (Milvus Lite), not a server address."""
    return not uri.startswith(MILVUS_SCHEMES)


def check_milvus_uri(uri: str) -> str:
    text = uri.strip()
    if text.startswith(MILVUS_SCHEMES):
        if text.startswith(("http://", "https://", "tcp://")) and not text.split("://", 1)[1].strip("/"):
            raise ValueError("names no host: use http://host:19530")
        return text
    if "://" in text:
        scheme = text.split("://", 1)[0]
        raise ValueError(
            f"unknown scheme {scheme}://: a Milvus server is http://, https://, tcp:// or unix:, "
            "and a Milvus Lite file is a path ending in .db"
        )
    if not text.endswith(".db"):
        raise ValueError(
            "a Milvus Lite file must end in .db (a server is http://host:19530, https://, tcp:// or unix:)"
        )
    return text


# Kafka's own rule for a topic's name (kafka.common.internals.Topic): these characters, at most 249.
TOPIC_CHARS = re.compile(r"[A-Za-z0-9._-]+")
TOPIC_MAX_LENGTH = 249


def check_topic_name(topic: str) -> str:
    if topic in (".", "..") or not TOPIC_CHARS.fullmatch(topic):
        raise ValueError(
            f"{topic!r} is not a Kafka topic name: only letters, digits, '.', '_' and '-' "
            "(a list is a JSON list or names separated by commas)"
        )
    if len(topic) > TOPIC_MAX_LENGTH:
        raise ValueError(f"topic name {topic[:20]}... is {len(topic)} characters; Kafka allows {TOPIC_MAX_LENGTH}")
    return topic


def check_host_port(server: str) -> str:
    """`host:port`, `[v6 address]:port`; the port a number from 1 to 65535."""
    host, sep, port = server.rpartition(":")
    if "://" in server:
        raise ValueError(
            f"{server!r}: a broker is host:port, without a scheme (the protocol is kafka.security_protocol)"
        )
    if not sep or not host or host == "[]":
        raise ValueError(f"{server!r} is not host:port (for example kafka-1:9092)")
    if not port.isdigit() or not 1 <= int(port) <= 65_535:
        raise ValueError(f"{server!r}: the port must be a number from 1 to 65535")
    if ":" in host and not (host.startswith("[") and host.endswith("]")):
        raise ValueError(f"{server!r}: write an IPv6 address in brackets, like [::1]:9092")
    return server
