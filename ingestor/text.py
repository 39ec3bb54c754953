"""Small text helpers that more than one adapter needs (the sink clips stored texts, the
dead-letter queue its error header)."""

from __future__ import annotations


def clip_utf8(text: str, max_bytes: int) -> str:
    """At most `max_bytes` of UTF-8, cut on a character boundary (unencodable characters → '?')."""
    data = text.encode("utf-8", "replace")
    if len(data) <= max_bytes:
        return data.decode("utf-8")
    return data[:max_bytes].decode("utf-8", "ignore")
