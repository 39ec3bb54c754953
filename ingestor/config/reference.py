"""The settings described from the code: the help of a flag, the configuration reference
(`docs/configuration.md`, `ingestor config reference`), and the effective configuration with the
source of each value (`ingestor config show`)."""

from __future__ import annotations

import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import annotated_types
from pydantic import SecretStr
from pydantic_core import PydanticUndefined

from ingestor.config.names import ENV_PREFIX, NESTED, Setting, section_models, settings_of


def _settings_cls() -> Any:
    from ingestor.config import Settings

    return Settings


def setting(path: str) -> Setting:
    section, name = path.split(".")
    for s in settings_of(_settings_cls()):
        if s.section == section and s.name == name:
            return s
    raise KeyError(path)


def default_value(s: Setting) -> Any:
    if s.field.default_factory is not None:
        return s.field.default_factory()  # type: ignore[call-arg]
    return None if s.field.default is PydanticUndefined else s.field.default


def show_value(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, SecretStr):
        return "**********"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        import json

        return json.dumps(value) if value else "{}"
    return str(value)


def _members(annotation: Any) -> list[Any]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [a for a in typing.get_args(annotation) if a is not type(None)]
    return [annotation]


def type_text(s: Setting) -> str:
    """The type, as an operator writes it."""
    out = []
    for a in _members(s.field.annotation):
        origin = typing.get_origin(a)
        if origin is typing.Annotated:
            a = typing.get_args(a)[0]
            origin = typing.get_origin(a)
        if origin is typing.Literal:
            out.append("choice")
        elif origin is list:
            out.append("list")
        elif origin is dict:
            out.append("JSON object")
        elif a is SecretStr:
            out.append("secret")
        elif a is Path:
            out.append("file path")
        else:
            name = getattr(a, "__name__", str(a))
            out.append({"str": "string", "int": "integer", "float": "number", "bool": "boolean"}.get(name, name))
    return " or ".join(dict.fromkeys(out))


def allowed_text(s: Setting) -> str:
    """The values it takes: its choices, or its bounds."""
    for a in _members(s.field.annotation):
        if typing.get_origin(a) is typing.Literal:
            return ", ".join(str(c) for c in typing.get_args(a))
    bounds = []
    for m in s.field.metadata:
        for attr, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            if isinstance(m, getattr(annotated_types, attr.capitalize())):
                bounds.append(f"{sign} {getattr(m, attr)}")
    return ", ".join(bounds)


def flag_help(path: str) -> str:
    """A flag's help: the setting's description, its variable and its default."""
    s = setting(path)
    return f"{s.field.description} [env: {s.env}] [default: {show_value(default_value(s))}]"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def reference_markdown() -> str:
    """docs/configuration.md: every setting, section by section."""
    settings_cls = _settings_cls()
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated from the settings in ingestor/config/ by `python -m ingestor config reference > "
        "docs/configuration.md`; tests/unit/test_config_reference.py fails when it is stale. -->",
        "",
        "Sources, highest priority first: command-line flags, environment variables, a YAML file "
        "(`--config settings.yaml`), the defaults below. The variable of `section.field` is "
        f"`{ENV_PREFIX}SECTION{NESTED}FIELD`; in the YAML file it is `field:` under `section:`. A variable "
        f"or key that names no setting stops every command with exit 2 and the closest real name. "
        'A whole section may also be one variable holding a JSON object (`INGESTOR_KAFKA=\'{"group_id": "g"}\'`). '
        "A secret (`secret`) is never printed; each has a `_file` twin that reads it from a file "
        "(a mounted Secret). `ingestor config show` prints the effective values and where each came "
        "from; `ingestor config validate` checks them without connecting anywhere.",
        "",
        "```yaml",
        "# settings.yaml",
        "kafka:",
        "  bootstrap_servers: kafka-1:9092,kafka-2:9092",
        "  topics: [documents]",
        "milvus:",
        "  uri: http://milvus:19530",
        "```",
        "",
    ]
    for section, model in section_models(settings_cls).items():
        lines += [f"## `{section}`", ""]
        doc = (model.__doc__ or "").strip()
        if doc and not doc.startswith(("A base class", "Usage docs")):
            lines += [" ".join(doc.split()), ""]
        lines += ["| setting | variable | type | default | allowed | description |", "|---|---|---|---|---|---|"]
        for s in settings_of(settings_cls):
            if s.section != section:
                continue
            also = f" (also `{', '.join(s.aliases)}`)" if s.aliases else ""
            lines.append(
                f"| `{s.path}`{also} | `{s.env}` | {type_text(s)} | `{_cell(show_value(default_value(s)))}` "
                f"| {_cell(allowed_text(s))} | {_cell(s.field.description or '')} |"
            )
        lines.append("")
    return "\n".join(lines)


def sources(
    config_file: Path | None,
    overrides: Mapping[str, Mapping[str, Any]] | None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """`section.field` -> where its value came from: `flag`, `env NAME`, `file NAME`, else `default`."""
    import yaml

    environ = os.environ if environ is None else environ
    env = {k.upper(): k for k in environ}
    data: dict[str, Any] = {}
    if config_file is not None and config_file.is_file():
        loaded = yaml.safe_load(config_file.read_text(encoding="utf-8"))
        data = loaded if isinstance(loaded, dict) else {}
    out = {}
    for s in settings_of(_settings_cls()):
        given = (overrides or {}).get(s.section, {})
        names = [s.env] + [s.env.rsplit(NESTED, 1)[0] + NESTED + a.upper() for a in s.aliases]
        in_file = data.get(s.section) or {}
        if given.get(s.name) is not None:
            out[s.path] = "flag"
        elif any(n in env for n in names):
            out[s.path] = f"env {next(env[n] for n in names if n in env)}"
        elif s.name in _json_keys(environ, env.get(f"{ENV_PREFIX}{s.section.upper()}")):
            out[s.path] = f"env {env[f'{ENV_PREFIX}{s.section.upper()}']}"
        elif isinstance(in_file, dict) and any(k in in_file for k in (s.name, *s.aliases)):
            out[s.path] = f"file {config_file}"
        else:
            out[s.path] = "default"
    return out


def _json_keys(environ: Mapping[str, str], name: str | None) -> set[str]:
    """The keys of a whole section given as one JSON variable."""
    import json

    try:
        value = json.loads(environ[name]) if name is not None else {}
    except ValueError:
        return set()
    return set(value) if isinstance(value, dict) else set()


def effective_rows(settings: Any, where: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """(setting, value with secrets redacted, source) for every setting."""
    rows = []
    for s in settings_of(type(settings)):
        value = getattr(getattr(settings, s.section), s.name)
        rows.append((s.path, show_value(value), where.get(s.path, "default")))
    return rows
