"""`ingestor produce`: publish a JSONL or text file to Kafka. JSON lines go as they are (a bad
line is the daemon's to dead-letter, as in production); plain text lines are wrapped as
{"text": line}. A JSON object's `id` becomes the Kafka key. Kafka's errors are translated as
`ingestor run` does at start: a refusal (login, certificate) is a StartupError (exit 2), anything
else a RetriableError (exit 1: try again once Kafka is reachable)."""

from __future__ import annotations

import json
from pathlib import Path

from kafka import KafkaProducer
from rich.console import Console
from rich.progress import Progress

from ingestor.config import KafkaSettings
from ingestor.kafka_common import client_kwargs, kafka_errors


def encode_line(line: str) -> tuple[bytes | None, bytes]:
    """(key, value) for one input line."""
    stripped = line.strip()
    if stripped.startswith("{"):
        try:
            obj = json.loads(stripped)
        except (ValueError, RecursionError):
            return None, stripped.encode("utf-8")
        key = obj.get("id") if isinstance(obj, dict) else None
        return (
            str(key).encode("utf-8") if isinstance(key, (str, int)) and not isinstance(key, bool) else None,
            stripped.encode("utf-8"),
        )
    return None, json.dumps({"text": stripped}, ensure_ascii=False).encode("utf-8")


def publish_file(settings: KafkaSettings, path: Path, topic: str, limit: int | None, console: Console) -> int:
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if limit is not None:
        lines = lines[:limit]
    with kafka_errors("kafka", f"cannot publish to {topic} at {settings.bootstrap_servers}", at_start=True):
        producer = KafkaProducer(**client_kwargs(settings), acks="all", linger_ms=20, max_request_size=4 << 20)
        try:
            with Progress(console=console, transient=True) as progress:
                task = progress.add_task(f"publishing to {topic}", total=len(lines))
                futures = []
                for line in lines:
                    key, value = encode_line(line)
                    futures.append(producer.send(topic, key=key, value=value))
                    progress.advance(task)
                producer.flush()
                for f in futures:
                    f.get(timeout=30)
        finally:
            producer.close()
    return len(lines)
