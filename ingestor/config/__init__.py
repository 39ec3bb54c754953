"""Settings: one typed object, validated at start.

Sources, highest priority first: CLI flags, environment variables ``INGESTOR_<SECTION>__<FIELD>``
(for example ``INGESTOR_KAFKA__BOOTSTRAP_SERVERS``), an optional YAML file (``--config``), and the
defaults of the sections (`ingestor.config.sections`).
"""

from __future__ import annotations

import contextvars
import os
import re
from pathlib import Path
from typing import Any, cast

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, YamlConfigSettingsSource

from ingestor.config.kafka import DlqSettings, KafkaSettings
from ingestor.config.names import (
    closest,
    env_name,
    section_models,
    settings_of,
    unknown_variables,
    unknown_yaml_keys,
    unparsable_json,
)
from ingestor.config.sections import (
    BACKEND_PRECISIONS,
    DEFAULT_MODEL,
    DEVICE_BATCH_DEFAULTS,
    GC_GEN0_THRESHOLD,
    Backend,
    BatchSettings,
    ChunkingSettings,
    MetricsSettings,
    MilvusSettings,
    ModelSettings,
    Precision,
    RedisSettings,
    RetrySettings,
    RuntimeSettings,
    ServeSettings,
    parse_variant,
)
from ingestor.config.values import is_lite_uri
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
    "env_name",
    "settings_of",
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
    """Build the settings or raise ConfigError with one readable message per bad field. Strict: an
    INGESTOR_* variable or a YAML key that sets nothing is refused, naming the closest real one."""
    env = os.environ
    problems = unknown_variables(Settings, env) + unparsable_json(Settings, env)
    if config_file is not None:
        problems += unknown_yaml_keys(Settings, read_yaml(config_file), config_file.name)
    if problems:
        raise ConfigError("invalid configuration:\n" + "\n".join(f"  {p}" for p in problems))
    token = _yaml_file.set(config_file)
    try:
        clean = {k: {f: v for f, v in section.items() if v is not None} for k, section in (overrides or {}).items()}
        # Settings(), not model_validate: its __init__ is what reads the environment and the file.
        return Settings(**cast(Any, {k: v for k, v in clean.items() if v}))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None
    except (ValueError, OSError, yaml.YAMLError) as exc:  # what the checks above did not foresee
        raise ConfigError(f"invalid configuration: {exc}") from None
    finally:
        _yaml_file.reset(token)


def read_yaml(path: Path) -> Any:
    """A YAML settings file's content (an empty file is no settings), or ConfigError saying where it
    does not parse."""
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"invalid configuration: {path} is not valid YAML{where}: {problem}") from None
    return {} if data is None else data


_FIELD_WORD = re.compile(r"\b(?:([a-z]+)\.)?([a-z][a-z0-9_]*)\b")


def _variables_named(message: str, section: str | None) -> list[str]:
    """The variables of the settings a cross-field message mentions, `section.field` or (within
    `section`'s own rule) a bare field name, in the order they appear."""
    sections = section_models(Settings)
    found: list[str] = []
    for qualifier, word in _FIELD_WORD.findall(message):
        owner = qualifier if qualifier in sections else section
        if owner is None or (qualifier and qualifier not in sections):
            continue
        if word in sections[owner].model_fields and env_name(owner, word) not in found:
            found.append(env_name(owner, word))
    return found


def format_validation_error(exc: ValidationError) -> str:
    sections = section_models(Settings)
    lines = ["invalid configuration:"]
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        field = ".".join(loc) or "settings"
        if err["type"] == "extra_forbidden" and len(loc) == 2 and loc[0] in sections:
            # Only a whole section given as one JSON variable or object gets here: the names of the
            # environment and the YAML file are checked before.
            guess = closest(loc[1], list(sections[loc[0]].model_fields))
            lines.append(f"  {field}: no such setting" + (f"; did you mean {loc[0]}.{guess}?" if guess else ""))
            continue
        got = err.get("input")
        shown = (
            ""
            if isinstance(got, (dict, list)) or got is None or any(w in field for w in ("password", "token", "url"))
            else f" (got {got!r})"
        )
        message = err["msg"].removeprefix("Value error, ")
        if shown and repr(got) in message:  # the message quotes it already
            shown = ""
        if len(loc) >= 2 and loc[0] in sections and loc[1] in sections[loc[0]].model_fields:
            hint = f" [env {env_name(loc[0], loc[1])}]"
        else:  # a rule over several settings: the variables of those it names
            named = _variables_named(message, loc[0] if loc and loc[0] in sections else None)
            hint = f" [set {', '.join(named)}]" if named else ""
        lines.append(f"  {field}: {message}{shown}{hint}")
    return "\n".join(lines)
