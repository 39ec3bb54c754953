"""The Kafka source's settings and the dead-letter topic's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    NoDecode,
)

from ingestor.config.base import Section, file_field, secret_file_field
from ingestor.config.values import TOPIC_CHARS, check_host_port, check_topic_name


class KafkaSettings(Section):
    bootstrap_servers: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers, host:port[,host:port]")
    topics: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["documents"], description="Topics to consume (JSON list or comma-separated)"
    )
    group_id: str = Field("ingestor", description="Consumer group; every worker of one deployment shares it")
    client_id: str = Field("ingestor", description="Client id the brokers see in their logs and quotas")
    group_instance_id: str | None = Field(None, description="Static membership id (KIP-345), e.g. the pod name")
    assignor: Literal["cooperative-sticky", "range", "roundrobin"] = Field(
        "range",
        description="Partition assignor; every member of a group must use the same one. cooperative-sticky "
        "(KIP-429) moves only the partitions that change owner; see the README before choosing it",
    )
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        "earliest", description="Where a group with no committed offset starts: the oldest record or new ones only"
    )
    isolation_level: Literal["read_committed", "read_uncommitted"] = Field(
        "read_committed",
        description="read_committed: records of aborted transactions are never ingested and records of open "
        "transactions wait until theirs ends; lag and --until-caught-up count to the last stable offset. "
        "read_uncommitted reads every record as soon as it is written",
    )
    session_timeout_ms: int = Field(45_000, ge=1_000, description="A member silent this long leaves the group")
    heartbeat_interval_ms: int = Field(3_000, ge=100, description="Heartbeats to the group coordinator")
    max_poll_interval_ms: int = Field(
        300_000,
        ge=1_000,
        description="Longest gap between polls before the member is evicted (the consumer thread "
        "polls continuously; batches never block it)",
    )
    max_poll_records: int = Field(500, ge=1, description="Most records one poll returns")
    poll_timeout_ms: int = Field(100, ge=1, description="How long one poll waits for records")
    commit_interval_ms: int = Field(500, ge=0, description="How often done offsets are committed")
    request_timeout_ms: int = Field(
        30_000, ge=1_000, description="Kafka request timeout, and how long a client waits for its first broker"
    )
    value_format: Literal["json", "text"] = Field(
        "json", description="json: an object with the text, an optional id and metadata; text: the value is the text"
    )
    text_field: str = Field("text", description="JSON field holding the text")
    id_field: str = Field("id", description="JSON field holding the record id (else the key, else the text's SHA-256)")
    metadata_field: str = Field("metadata", description="JSON field holding the metadata object")
    max_record_bytes: int = Field(1 << 20, ge=1, description="Larger values go to the dead-letter topic")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="How every Kafka client of ingestor connects"
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = Field(
        None, description="SASL mechanism (with SASL_PLAINTEXT or SASL_SSL)"
    )
    sasl_username: str | None = Field(None, description="SASL user (PLAIN, SCRAM-*)")
    sasl_password: SecretStr | None = Field(None, description="SASL password (PLAIN, SCRAM-*; never printed)")
    sasl_password_file: Path | None = secret_file_field("the SASL password")
    sasl_oauth_token_file: Path | None = Field(
        None,
        description=(
            "OAUTHBEARER: a file holding the access token, read again at every login (a sidecar may rotate it)"
        ),
    )
    sasl_oauth_token_command: str | None = Field(
        None, description=("OAUTHBEARER: a command printing the access token; run at most once a minute")
    )
    ssl_cafile: Path | None = file_field(
        "CA bundle that signs the brokers' certificates (SSL, SASL_SSL); default: the system's"
    )
    ssl_certfile: Path | None = file_field("Client certificate, PEM (mutual TLS)")
    ssl_keyfile: Path | None = file_field("Client private key, PEM (mutual TLS)")
    ssl_password: SecretStr | None = Field(None, description="Password of the client key (never printed)")
    ssl_password_file: Path | None = secret_file_field("the client key's password")
    ssl_check_hostname: bool = Field(True, description="Verify that a broker's certificate names its host")

    @field_validator("topics", mode="before")
    @classmethod
    def _split_topics(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    return json.loads(text)
                except ValueError:
                    raise ValueError(
                        'expected a JSON list of topic names like ["a", "b"], or names separated by commas '
                        "like a,b; this starts with [ but is not valid JSON"
                    ) from None
            return [t.strip() for t in text.split(",") if t.strip()]
        return value

    @field_validator("topics")
    @classmethod
    def _non_empty(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one topic is required")
        for topic in value:
            check_topic_name(topic)
        return value

    @field_validator("bootstrap_servers")
    @classmethod
    def _host_ports(cls, value: str) -> str:
        servers = [s.strip() for s in value.split(",")]
        if not any(servers):
            raise ValueError("at least one broker is required, as host:port")
        for server in servers:
            check_host_port(server)
        return ",".join(servers)

    @model_validator(mode="after")
    def _security_fits_together(self) -> KafkaSettings:
        sasl, tls = self.security_protocol.startswith("SASL_"), self.security_protocol.endswith("SSL")
        if sasl and self.sasl_mechanism is None:
            raise ValueError(f"security_protocol {self.security_protocol} needs sasl_mechanism")
        if not sasl and self.sasl_mechanism is not None:
            raise ValueError(
                f"sasl_mechanism is set but security_protocol is {self.security_protocol}: "
                "use SASL_SSL (or SASL_PLAINTEXT)"
            )
        if self.sasl_mechanism == "OAUTHBEARER":
            if (self.sasl_oauth_token_file is None) == (self.sasl_oauth_token_command is None):
                raise ValueError("OAUTHBEARER needs one of sasl_oauth_token_file and sasl_oauth_token_command")
        elif self.sasl_mechanism is not None and (not self.sasl_username or self.sasl_password is None):
            raise ValueError(f"{self.sasl_mechanism} needs sasl_username and sasl_password (or sasl_password_file)")
        given = [n for n in ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_password") if getattr(self, n)]
        if given and not tls:
            raise ValueError(
                f"{', '.join(given)} set but security_protocol is {self.security_protocol}: use SSL (or SASL_SSL)"
            )
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("mutual TLS needs both ssl_certfile and ssl_keyfile")
        return self


class DlqSettings(Section):
    topic: str | None = Field(None, description="Dead-letter topic; default '<source topic>.dlq'")
    suffix: str = Field(".dlq", description="Appended to the source topic to name its dead-letter topic")
    ack_timeout_ms: int = Field(10_000, ge=100, description="How long a dead-letter write may wait for the broker")

    @field_validator("topic")
    @classmethod
    def _topic_name(cls, value: str | None) -> str | None:
        return None if value is None else check_topic_name(value)

    @field_validator("suffix")
    @classmethod
    def _suffix(cls, value: str) -> str:
        if not value or not TOPIC_CHARS.fullmatch(value):
            raise ValueError("must be letters, digits, '.', '_' or '-' (it ends a topic's name), and not empty")
        return value

    def topic_for(self, source_topic: str) -> str:
        return self.topic or f"{source_topic}{self.suffix}"
