"""Every name a setting is known by (its `section.field`, its environment variable, its YAML key),
and the check that refuses a name that is none of them, suggesting the closest real one.

The names are read from the sections of `Settings`, so a section or field added there is known
here without further work."""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import AliasChoices, BaseModel
from pydantic.fields import FieldInfo

ENV_PREFIX = "INGESTOR_"
NESTED = "__"

# INGESTOR_* variables that are not settings: those of the scripts under deploy/, the test harness
# and the supervisor. A setting's variable always has a double underscore; these never do.
# tests/unit/test_config_strict.py fails when a script or test reads one that is not listed here.
OTHER_VARIABLES = frozenset(
    {
        # deploy/local (bootstrap.sh, services.sh, test.sh) and the bench
        "INGESTOR_HOME",
        "INGESTOR_VENV",
        "INGESTOR_BACKENDS_VENV",
        "INGESTOR_STATE_DIR",
        "INGESTOR_SERVICES",
        "INGESTOR_SERVICES_TIMEOUT",
        "INGESTOR_STOP_TIMEOUT",
        "INGESTOR_SECURE_SERVICES",
        "INGESTOR_MILVUS_SERVER",
        "INGESTOR_MILVUS_SESSION_TTL",
        "INGESTOR_LITE_SERVER",
        "INGESTOR_KAFKA_HEAP_OPTS",
        "INGESTOR_KAFKA_CDS",
        "INGESTOR_KAFKA_PORT",
        "INGESTOR_KAFKA_CONTROLLER_PORT",
        "INGESTOR_KAFKAS_PORT",
        "INGESTOR_KAFKAS_MTLS_PORT",
        "INGESTOR_KAFKAS_CONTROLLER_PORT",
        "INGESTOR_REDIS_PORT",
        "INGESTOR_REDISS_PORT",
        "INGESTOR_MILVUS_PORT",
        "INGESTOR_MILVUSS_PORT",
        "INGESTOR_LITE_PORT",
        "INGESTOR_FAULT_TESTS",
        "INGESTOR_BACKEND_TESTS",
        "INGESTOR_SLOW_TESTS",
        "INGESTOR_TEST_JOBS",
        "INGESTOR_SOAK_SEED",
        "INGESTOR_CHURN_SEED",
        "INGESTOR_CHURN_SECONDS",
        "INGESTOR_FAULTS_CHUNKING",
        # the daemon and its supervisor
        "INGESTOR_HOOKS",
        "INGESTOR_WORKER_RESTARTS",
        "INGESTOR_CHECKOUT",
    }
)
# Families of test-harness variables (tests/support/hooks.py's faults, the harness's service addresses).
OTHER_PREFIXES = ("INGESTOR_FAULT_", "INGESTOR_TEST_")


@dataclass(frozen=True, slots=True)
class Setting:
    section: str
    name: str
    field: FieldInfo

    @property
    def path(self) -> str:
        return f"{self.section}.{self.name}"

    @property
    def env(self) -> str:
        return env_name(self.section, self.name)

    @property
    def aliases(self) -> tuple[str, ...]:
        """Older names the field still reads (a rename to carry its unit)."""
        alias = self.field.validation_alias
        if isinstance(alias, AliasChoices):
            return tuple(str(c) for c in alias.choices if isinstance(c, str) and c != self.name)
        return ()


def env_name(section: str, name: str) -> str:
    return f"{ENV_PREFIX}{section.upper()}{NESTED}{name.upper()}"


def section_models(settings_cls: type[BaseModel]) -> dict[str, type[BaseModel]]:
    out: dict[str, type[BaseModel]] = {}
    for section, field in settings_cls.model_fields.items():
        model = field.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel), f"{section} is not a section"
        out[section] = model
    return out


def settings_of(settings_cls: type[BaseModel]) -> Iterator[Setting]:
    """Every setting, section by section in declaration order."""
    for section, model in section_models(settings_cls).items():
        for name, field in model.model_fields.items():
            yield Setting(section, name, field)


def known_env_names(settings_cls: type[BaseModel]) -> dict[str, str]:
    """Variable name -> the `section.field` it sets (aliases and whole-section JSON variables too)."""
    names: dict[str, str] = {}
    for section in section_models(settings_cls):
        names[f"{ENV_PREFIX}{section.upper()}"] = section  # the whole section as one JSON object
    for s in settings_of(settings_cls):
        names[s.env] = s.path
        for alias in s.aliases:
            names[env_name(s.section, alias)] = s.path
    return names


def _dict_prefixes(settings_cls: type[BaseModel]) -> tuple[str, ...]:
    """Variables under a dict setting (INGESTOR_MILVUS__INDEX_PARAMS__NLIST) set one of its keys."""
    return tuple(
        s.env + NESTED
        for s in settings_of(settings_cls)
        if getattr(s.field.annotation, "__origin__", s.field.annotation) is dict
    )


def closest(name: str, candidates: list[str]) -> str | None:
    """The candidate `name` most likely meant: one that differs only in its underscores first
    (INGESTOR_KAFKA_BOOTSTRAP_SERVERS for INGESTOR_KAFKA__BOOTSTRAP_SERVERS), else the nearest spelling."""
    squashed = {c.replace("_", ""): c for c in candidates}
    if name.replace("_", "") in squashed:
        return squashed[name.replace("_", "")]
    # Compared without the prefix they all share, which would make any two names look alike.
    bare = {c.removeprefix(ENV_PREFIX): c for c in candidates}
    found = difflib.get_close_matches(name.removeprefix(ENV_PREFIX), list(bare), n=1, cutoff=0.7)
    return bare[found[0]] if found else None


def unknown_variables(settings_cls: type[BaseModel], environ: Mapping[str, str]) -> list[str]:
    """One message per INGESTOR_* variable that sets nothing, naming the closest real one."""
    known = known_env_names(settings_cls)
    dicts = _dict_prefixes(settings_cls)
    problems = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in known or upper in OTHER_VARIABLES:
            continue
        if upper.startswith(OTHER_PREFIXES + dicts):
            continue
        guess = closest(upper, [n for n in known if NESTED in n])
        hint = f"; did you mean {guess}?" if guess else "; see docs/configuration.md for every setting"
        problems.append(f"{name}: no such setting{hint}")
    return problems


def unknown_yaml_keys(settings_cls: type[BaseModel], data: Any, where: str) -> list[str]:
    """One message per key of a YAML settings file that is not a section or a field of one."""
    if not isinstance(data, dict):
        return [f"{where}: expected a mapping of sections (kafka:, milvus:, ...), got {type(data).__name__}"]
    sections = section_models(settings_cls)
    problems = []
    for key, value in data.items():
        model = sections.get(str(key))
        if model is None:
            guess = closest(str(key), list(sections))
            problems.append(f"{where}: unknown section {key!r}" + (f"; did you mean {guess!r}?" if guess else ""))
            continue
        if not isinstance(value, dict):
            if value is not None:
                problems.append(f"{where}: section {key!r} must be a mapping of its settings")
            continue
        fields = list(model.model_fields)
        aliases = [a for s in settings_of(settings_cls) if s.section == key for a in s.aliases]
        for name in value:
            if name in fields or name in aliases:
                continue
            guess = closest(str(name), fields)
            hint = f"; did you mean {key}.{guess}?" if guess else f"; the settings of {key!r}: {', '.join(fields)}"
            problems.append(f"{where}: unknown setting {key}.{name}{hint}")
    return problems


def unparsable_json(settings_cls: type[BaseModel], environ: Mapping[str, str]) -> list[str]:
    """One message per variable whose value must be a JSON object and is not one: a whole section,
    or a setting that is a mapping (milvus.index_params). The parser's own message names a column."""
    sections = {f"{ENV_PREFIX}{section.upper()}" for section in section_models(settings_cls)}
    mappings = {
        s.env
        for s in settings_of(settings_cls)
        if getattr(s.field.annotation, "__origin__", s.field.annotation) is dict
    }
    problems = []
    for name, value in sorted(environ.items()):
        upper = name.upper()
        if upper not in sections and upper not in mappings:
            continue
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            example = '{"nlist": 1024}' if upper in mappings else '{"topics": ["a"], "group_id": "g"}'
            problems.append(f"{name}: expected a JSON object like {example}; this is not one")
    return problems
