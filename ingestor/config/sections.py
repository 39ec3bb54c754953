"""The settings' sections, one per concern, each field with its default and the one description
behind the docs and `--help`. Names carry their unit. Secrets are ``SecretStr`` and never printed."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ingestor.config.base import Section, file_field, secret_file_field
from ingestor.config.values import check_milvus_uri, is_lite_uri
from ingestor.errors import ConfigError

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


class BatchSettings(Section):
    max_batch_records: int | None = Field(None, ge=1, description="Most records in one forward pass (unset: by device)")
    max_batch_tokens: int | None = Field(
        None, ge=16, description="Most tokens in one forward pass, padding included (unset: by device)"
    )
    max_wait_ms: int = Field(
        200,
        ge=0,
        description=(
            "Longest a record waits for its batch to fill (a window is cut sooner once its texts reach "
            "max_batch_tokens × 4 characters)"
        ),
    )
    max_window_records: int | None = Field(
        None, ge=1, description="Records sorted together by length (unset: by device)"
    )
    max_in_flight_records: int | None = Field(
        None, ge=1, description="Read but not done before partitions pause (unset: by device)"
    )
    max_write_bytes: int = Field(16 << 20, ge=1 << 16, description="Most bytes in one Milvus upsert call")
    pass_cost_tokens: int | None = Field(
        None,
        ge=0,
        description="Fixed cost of one forward pass in tokens, for the cheapest cut of small "
        "windows; 0 always fills passes greedily (unset: by device)",
    )

    def for_device(self, device: str) -> BatchSettings:
        """These settings with every unset limit filled in for `device` (cpu, cuda, cuda:N, mps)."""
        kind = "gpu" if device.startswith(("cuda", "mps")) else "cpu"
        base = DEVICE_BATCH_DEFAULTS[kind]
        records = self.max_batch_records or base["max_batch_records"]
        window = self.max_window_records or max(base["max_window_records"], 2 * records)
        return self.model_copy(
            update={
                "max_batch_records": records,
                "max_batch_tokens": self.max_batch_tokens or base["max_batch_tokens"],
                "max_window_records": window,
                "max_in_flight_records": self.max_in_flight_records or max(base["max_in_flight_records"], 2 * window),
                "pass_cost_tokens": base["pass_cost_tokens"]
                if self.pass_cost_tokens is None
                else self.pass_cost_tokens,
            }
        )


# A CPU pass costs a few ms plus a little per padded token, so moderate passes with an exact cut
# win; a GPU pass costs about the same kernel launches for 50 texts as for 500, so it needs far
# bigger passes, and a window and an in-flight budget that hold several of them. The figures
# behind these values are in docs/performance.md.
DEVICE_BATCH_DEFAULTS: dict[str, dict[str, int]] = {
    "cpu": {
        "max_batch_records": 64,
        "max_batch_tokens": 4_096,
        "max_window_records": 1_024,
        "max_in_flight_records": 4_096,
        "pass_cost_tokens": 64,
    },
    "gpu": {
        "max_batch_records": 512,
        "max_batch_tokens": 32_768,
        "max_window_records": 4_096,
        "max_in_flight_records": 16_384,
        "pass_cost_tokens": 2_048,
    },
}


class ChunkingSettings(Section):
    enabled: bool = Field(
        True,
        description=(
            "Split each record's text into chunks that fit the model, one entity per chunk (`<id>#<n>`); "
            "off: one entity per record (`<id>`), cut at the model's maximum sequence length and flagged "
            "`truncated`"
        ),
    )
    max_tokens: int | None = Field(
        None,
        ge=8,
        description=(
            "Most tokens in one chunk, the model's special tokens included (unset: the model's maximum "
            "sequence length, which it may not exceed)"
        ),
    )
    overlap_tokens: int = Field(32, ge=0, description="Tokens a chunk repeats from the end of the one before")


Backend = Literal["torch", "onnx", "openvino"]
Precision = Literal["fp32", "fp16", "bf16", "int8"]

# What each backend can run. ONNX Runtime and OpenVINO run on the CPU here: an fp16 ONNX export
# only pays on a GPU, and OpenVINO takes bf16 as a run-time hint on CPUs that have it (AMX, AVX512-BF16).
BACKEND_PRECISIONS: dict[str, tuple[str, ...]] = {
    "torch": ("fp32", "fp16", "bf16"),
    "onnx": ("fp32", "int8"),
    "openvino": ("fp32", "bf16", "int8"),
}


class ModelSettings(Section):
    # Field order matters: each validator below sees the fields declared above it.
    name: str = Field(DEFAULT_MODEL, description="sentence-transformers model name or local path")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N")
    backend: Backend = Field(
        "torch",
        description="torch, or sentence-transformers' onnx / openvino backends (CPU; optional extras "
        "ingestor[onnx] / ingestor[openvino]); their weights are exported once into cache_dir",
    )
    precision: Precision = Field(
        "fp32", description="torch: fp32, fp16, bf16; onnx: fp32, int8; openvino: fp32, bf16, int8"
    )
    max_seq_length: int | None = Field(None, ge=8, description="Override the model's maximum tokens")
    cache_dir: str | None = Field(
        None,
        description="Where onnx/openvino exports are kept (default $INGESTOR_HOME/models or ~/.cache/ingestor/models)",
    )

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        v = value.strip().lower()
        if v in ("auto", "cpu", "cuda", "mps") or (v.startswith("cuda:") and v[5:].isdigit()):
            return v
        raise ValueError("must be auto, cpu, cuda, cuda:N or mps")

    @field_validator("backend")
    @classmethod
    def _backend_device(cls, value: str, info: ValidationInfo) -> str:
        device = info.data.get("device", "auto")
        if value != "torch" and device not in ("auto", "cpu"):
            raise ValueError(
                f"the {value} backend runs on the CPU: set model.device to cpu or auto, "
                f"or use backend torch on {device}"
            )
        return value

    @field_validator("precision")
    @classmethod
    def _precision_for_backend(cls, value: str, info: ValidationInfo) -> str:
        backend = info.data.get("backend")
        if backend is None:  # the backend itself was invalid: that error is enough
            return value
        allowed = BACKEND_PRECISIONS[backend]
        if value not in allowed:
            others = [b for b, ps in BACKEND_PRECISIONS.items() if value in ps]
            raise ValueError(
                f"{value} is not available with model.backend={backend} (it runs "
                f"{', '.join(allowed)}); {value} needs backend {' or '.join(others)}"
            )
        return value

    @property
    def variant(self) -> str:
        """The backend and precision as one label: `fp16` for torch, `onnx-int8` otherwise."""
        return self.precision if self.backend == "torch" else f"{self.backend}-{self.precision}"


def parse_variant(label: str) -> dict[str, str]:
    """`fp16`, `onnx`, `onnx-int8`, `openvino-bf16` ... -> {"backend": ..., "precision": ...}.

    A bare backend means its fp32; a bare precision means torch. Raises ConfigError for a label
    that names no valid combination."""
    text = label.strip().lower()
    head, _, tail = text.partition("-")
    if head in BACKEND_PRECISIONS:
        backend, precision = head, tail or "fp32"
    else:
        backend, precision = "torch", text
    if precision not in BACKEND_PRECISIONS[backend]:
        choices = ", ".join(p if b == "torch" else f"{b}-{p}" for b, ps in BACKEND_PRECISIONS.items() for p in ps)
        raise ConfigError(f"{label!r} is not a backend and precision ingestor can run; one of: {choices}")
    return {"backend": backend, "precision": precision}


class RedisSettings(Section):
    url: SecretStr | None = Field(
        None,
        description=(
            "redis://host:port/db, or rediss:// for TLS (may hold user:password@); unset runs without a cache"
        ),
    )
    url_file: Path | None = secret_file_field("the URL")
    username: str | None = Field(None, description="ACL user (instead of one in the URL)")
    password: SecretStr | None = Field(
        None, description="Password of the ACL user, or of `requirepass` (never printed)"
    )
    password_file: Path | None = secret_file_field("the password")
    ssl_ca_file: Path | None = file_field(
        "CA bundle that signs the server's certificate (rediss://); default: the system's"
    )
    ssl_certfile: Path | None = file_field("Client certificate, PEM (rediss:// with mutual TLS)")
    ssl_keyfile: Path | None = file_field("Client private key, PEM (rediss:// with mutual TLS)")
    ssl_check_hostname: bool = Field(True, description="Verify that the server's certificate names its host")
    key_prefix: str = Field("ingestor", description="Prefix of every Redis key ingestor writes")
    embedding_ttl_s: int = Field(
        7 * 86_400,
        ge=1,
        validation_alias=AliasChoices("embedding_ttl_s", "embedding_ttl_seconds"),
        description="How long a cached vector lives (an eviction only costs re-embedding)",
    )
    marker_ttl_s: int = Field(
        30 * 86_400,
        ge=1,
        validation_alias=AliasChoices("marker_ttl_s", "marker_ttl_seconds"),
        description="How long a record's last-write marker lives",
    )
    socket_timeout_ms: int = Field(500, ge=10, description="Longest wait for Redis before the cache is bypassed")
    retry_after_ms: int = Field(5_000, ge=10, description="How long the cache is bypassed after a failure")

    @model_validator(mode="after")
    def _tls_needs_rediss(self) -> RedisSettings:
        given = [n for n in ("ssl_ca_file", "ssl_certfile", "ssl_keyfile") if getattr(self, n)]
        if given and not (self.url is not None and self.url.get_secret_value().startswith("rediss://")):
            raise ValueError(f"{', '.join(given)} set but the url is not rediss:// (TLS)")
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("mutual TLS needs both ssl_certfile and ssl_keyfile")
        return self


class MilvusSettings(Section):
    uri: str = Field(
        "./ingestor.db",
        description="A Milvus Lite file (a path ending in .db) or a server: http(s)://host:port, tcp://, unix:",
    )
    token: SecretStr | None = Field(None, description="user:password, or an API key (never printed)")
    token_file: Path | None = secret_file_field("the token")
    user: str | None = Field(None, description="Milvus user (with password; instead of a token)")
    password: SecretStr | None = Field(None, description="Password of the Milvus user (never printed)")
    password_file: Path | None = secret_file_field("the password")
    ca_file: Path | None = file_field("CA bundle, or the server's own certificate, for an https:// server")
    certfile: Path | None = file_field("Client certificate, PEM (mutual TLS)")
    keyfile: Path | None = file_field("Client private key, PEM (mutual TLS)")
    server_name: str | None = Field(
        None, description="The name the server's certificate holds, when not the URI's host"
    )
    db_name: str | None = Field(None, description="Milvus database (default: Milvus's own)")
    collection: str = Field("documents", description="Collection; created if missing, checked if present")
    store_text: bool = Field(True, description="Store each record's text in the entity (clipped at 65,535 bytes)")
    index_type: str = Field("AUTOINDEX", description="Vector index of a new collection")
    metric_type: Literal["COSINE", "IP", "L2"] = Field("COSINE", description="Similarity metric of the index")
    index_params: dict[str, Any] = Field(default_factory=dict, description="Extra index parameters (JSON)")
    timeout_s: float = Field(10.0, gt=0, description="Each Milvus call; one that times out is an outage, retried")
    lite_in_process: bool = Field(
        False,
        description=(
            "With a Milvus Lite file: serve it on this process's threads (pymilvus's default) instead of "
            "a child process. Lite is pure Python, and in-process it competes with the pipeline for the GIL"
        ),
    )

    @field_validator("uri")
    @classmethod
    def _uri(cls, value: str) -> str:
        return check_milvus_uri(value)

    @model_validator(mode="after")
    def _auth_fits_together(self) -> MilvusSettings:
        if (self.user is None) != (self.password is None):
            raise ValueError("a Milvus user needs its password, and a password its user")
        if self.user is not None and self.token is not None:
            raise ValueError("set a token or a user and password, not both")
        given = [n for n in ("ca_file", "certfile", "keyfile") if getattr(self, n)]
        if given and not self.uri.startswith("https://"):
            raise ValueError(f"{', '.join(given)} set but the uri is not https:// (TLS)")
        if (self.certfile is None) != (self.keyfile is None):
            raise ValueError("mutual TLS needs both certfile and keyfile")
        if self.certfile is not None and self.ca_file is None:
            raise ValueError("mutual TLS needs ca_file too")
        return self

    @property
    def is_lite(self) -> bool:
        return is_lite_uri(self.uri)

    @property
    def lite_child(self) -> bool:
        """A Milvus Lite file served from a child process (the default for a file)."""
        return self.is_lite and not self.lite_in_process


class RetrySettings(Section):
    initial_backoff_ms: int = Field(200, ge=1, description="First wait after a retriable failure")
    max_backoff_ms: int = Field(30_000, ge=1, description="Longest wait between retries")
    multiplier: float = Field(2.0, ge=1.0, description="Each wait is this many times the one before, up to the cap")
    jitter: float = Field(0.2, ge=0.0, le=1.0, description="Each wait varies by up to this fraction either way")


class MetricsSettings(Section):
    port: int = Field(9400, ge=0, le=65_535, description="Prometheus and health port; 0 turns it off")
    host: str = Field("127.0.0.1", description="Address of the metrics and health endpoint (0.0.0.0 in containers)")


class ServeSettings(Section):
    host: str = Field("127.0.0.1", description="Address `ingestor serve` listens on (0.0.0.0 in containers)")
    port: int = Field(
        8080, ge=1, le=65_535, description="Port of `ingestor serve`: its API, /metrics, /healthz, /readyz"
    )
    max_wait_ms: int = Field(
        0,
        ge=0,
        description="Longest a query waits for others to share its forward pass, and after a pass for the clients "
        "it answered (0: a pass is cut as soon as the model is free, and texts that arrive while it runs share "
        "the next; a pass is cut sooner once a batch's worth of tokens waits)",
    )
    max_queued_tokens: int = Field(
        65_536,
        ge=16,
        description="Tokens of queries admitted and not yet embedded; a request that does not fit gets 429 with "
        "Retry-After (a request larger than this is admitted when nothing waits)",
    )
    max_inputs_per_request: int = Field(
        2_048, ge=1, description="Most texts in one request (more: 413); larger batches than a pass takes are split"
    )
    max_input_chars: int = Field(100_000, ge=1, description="Most characters in one text (more: 413)")
    max_body_bytes: int = Field(8 << 20, ge=1_024, description="Largest request body in bytes (more: 413)")
    max_k: int = Field(1_000, ge=1, le=16_384, description="Most results one /search may ask for")
    cache: bool = Field(
        True,
        description="Look query vectors up in, and add them to, the Redis cache of ingestion (when redis.url is set)",
    )
    search_consistency: Literal["Strong", "Bounded", "Session", "Eventually"] = Field(
        "Bounded",
        description="Milvus consistency level of /search: Bounded reads without waiting for the server's clock, "
        "and may miss writes of the last few seconds",
    )


GC_GEN0_THRESHOLD = 50_000  # the daemon's default, and the Lite child's (see memory.tune_gc)


class RuntimeSettings(Section):
    shutdown_timeout_s: float = Field(
        30.0,
        gt=0,
        description="After SIGTERM/SIGINT the process exits 0 within this bound, in every state; "
        "a second signal exits at once",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level")
    log_format: Literal["text", "json"] = Field("text", description="text, or one JSON object per line")
    progress_interval_s: float = Field(30.0, gt=0, description="How often a progress line is logged")
    torch_threads: int | None = Field(None, ge=1, description="CPU threads for the model (default: torch's)")
    gc_gen0_threshold: int = Field(
        GC_GEN0_THRESHOLD,
        ge=0,
        description=(
            "Allocations between young-generation garbage collections, once the model is loaded (which is "
            "then frozen out of collection). At Python's 700, collection takes a large share of the pipeline's "
            "CPU at GPU batch sizes; 0 keeps Python's default"
        ),
    )
