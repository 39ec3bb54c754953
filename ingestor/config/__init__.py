"""Settings: one typed object, validated at start.

Sources, highest priority first: CLI flags, environment variables ``INGESTOR_<SECTION>__<FIELD>``
(for example ``INGESTOR_KAFKA__BOOTSTRAP_SERVERS``), an optional YAML file (``--config``), and the
defaults of the sections (`ingestor.config.sections`).
"""

from __future__ import annotations

import contextvars
from pathlib import Path
from typing import Any, cast

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, YamlConfigSettingsSource

from ingestor.config.sections import (
    BACKEND_PRECISIONS,
    DEFAULT_MODEL,
    DEVICE_BATCH_DEFAULTS,
    GC_GEN0_THRESHOLD,
    Backend,
    BatchSettings,
    ChunkingSettings,
    DlqSettings,
    KafkaSettings,
    MetricsSettings,
    MilvusSettings,
    ModelSettings,
    Precision,
    RedisSettings,
    RetrySettings,
    RuntimeSettings,
    ServeSettings,
    is_lite_uri,
    parse_variant,
)
from ingestor.errors import ConfigError

__all__ = [
    "BACKEND_PRECISIONS",
    "DEFAULT_MODEL",
    "DEVICE_BATCH_DEFAULTS",
    "GC_GEN0_THRESHOLD",
    "Backend",
    "BatchSettings",
    "ChunkingSettings",
    "DlqSettings",
    "KafkaSettings",
    "MetricsSettings",
    "MilvusSettings",
    "ModelSettings",
    "Precision",
    "RedisSettings",
    "RetrySettings",
    "RuntimeSettings",
    "ServeSettings",
    "Settings",
    "describe",
    "format_validation_error",
    "is_lite_uri",
    "load_settings",
    "parse_variant",
]

_yaml_file: contextvars.ContextVar[Path | None] = contextvars.ContextVar("ingestor_yaml_file", default=None)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="INGESTOR_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    dlq: DlqSettings = Field(default_factory=DlqSettings)
    batch: BatchSettings = Field(default_factory=BatchSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    chunking: ChunkingSettings = Field(default_factory=ChunkingSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    milvus: MilvusSettings = Field(default_factory=MilvusSettings)
    retry: RetrySettings = Field(default_factory=RetrySettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    serve: ServeSettings = Field(default_factory=ServeSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _yaml_file.get()
        if path is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
        return tuple(sources)

    @model_validator(mode="after")
    def _cross_checks(self) -> Settings:
        if self.dlq.topic is None and any(t.endswith(self.dlq.suffix) for t in self.kafka.topics):
            raise ValueError(f"kafka.topics must not include a dead-letter topic (ending {self.dlq.suffix!r})")
        return self

    def redacted(self) -> dict[str, Any]:
        """The effective configuration with secrets hidden, for the start-up log line."""
        return self.model_dump(mode="json")  # SecretStr dumps as '**********'


def describe(path: str) -> str:
    """The description of a setting, `section.field`: the one text behind the docs and `--help`."""
    section, name = path.split(".")
    model = Settings.model_fields[section].annotation
    assert isinstance(model, type) and issubclass(model, BaseModel)
    return model.model_fields[name].description or ""


def load_settings(config_file: Path | None = None, overrides: dict[str, dict[str, Any]] | None = None) -> Settings:
    """Build the settings or raise ConfigError with one readable message per bad field."""
    if config_file is not None and not config_file.is_file():
        raise ConfigError(f"config file not found: {config_file}")
    token = _yaml_file.set(config_file)
    try:
        clean = {k: {f: v for f, v in section.items() if v is not None} for k, section in (overrides or {}).items()}
        # Settings(), not model_validate: its __init__ is what reads the environment and the file.
        return Settings(**cast(Any, {k: v for k, v in clean.items() if v}))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None
    except (ValueError, OSError, yaml.YAMLError) as exc:  # e.g. YAML syntax, a JSON list that does not parse
        raise ConfigError(f"invalid configuration: {exc}") from None
    finally:
        _yaml_file.reset(token)


def format_validation_error(exc: ValidationError) -> str:
    lines = ["invalid configuration:"]
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(settings)"
        env = "INGESTOR_" + "__".join(str(p).upper() for p in err["loc"]) if err["loc"] else ""
        got = err.get("input")
        shown = (
            ""
            if isinstance(got, (dict, list)) or got is None or "password" in field or "token" in field or "url" in field
            else f" (got {got!r})"
        )
        # A section-wide rule (settings that must fit together) names its own fields.
        hint = f" [env {env}]" if len(err["loc"]) > 1 else ""
        lines.append(f"  {field}: {err['msg'].removeprefix('Value error, ')}{shown}{hint}")
    return "\n".join(lines)
