"""Connection settings shared by every kafka-python client we create (consumer, DLQ producer, admin)."""

from __future__ import annotations

from typing import Any

from ingestor.config import KafkaSettings


def client_kwargs(settings: KafkaSettings) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "bootstrap_servers": [s.strip() for s in settings.bootstrap_servers.split(",") if s.strip()],
        "client_id": settings.client_id,
        "security_protocol": settings.security_protocol,
        "request_timeout_ms": settings.request_timeout_ms,
    }
    if settings.sasl_mechanism:
        kwargs["sasl_mechanism"] = settings.sasl_mechanism
        kwargs["sasl_plain_username"] = settings.sasl_username
        if settings.sasl_password is not None:
            kwargs["sasl_plain_password"] = settings.sasl_password.get_secret_value()
    return kwargs
