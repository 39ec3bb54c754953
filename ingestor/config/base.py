"""What every settings section shares: unknown fields refused, `X_file` beside a secret `X`, and
paths that must name an existing file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    model_validator,
)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)

    @model_validator(mode="after")
    def _read_secret_files(self) -> Any:
        """`X_file` beside a secret `X`: the secret is that file's content (how Kubernetes mounts a
        Secret), read once at start, one trailing newline dropped. Setting both is an error."""
        for name in type(self).model_fields:
            base = name.removesuffix("_file")
            path = getattr(self, name)
            if base == name or base not in type(self).model_fields or path is None:
                continue
            if getattr(self, base) is not None:
                raise ValueError(f"set {base} or {name}, not both")
            try:
                text = Path(path).read_text(encoding="utf-8")
            except OSError as exc:
                raise ValueError(f"{name}: cannot read {path}: {exc.strerror or exc}") from None
            text = text[:-1] if text.endswith("\n") else text
            if not text:
                raise ValueError(f"{name}: {path} is empty")
            object.__setattr__(self, base, SecretStr(text))
        for name, field in type(self).model_fields.items():
            value = getattr(self, name)
            if field.json_schema_extra == _MUST_EXIST and value is not None and not Path(value).is_file():
                raise ValueError(f"{name}: file not found: {value}")
        return self


# Marks a path setting that must name an existing file (a CA, a certificate, a key).
_MUST_EXIST: dict[str, Any] = {"file": "must exist"}


def file_field(description: str) -> Any:
    return Field(None, description=description, json_schema_extra=_MUST_EXIST)


def secret_file_field(secret: str) -> Any:
    return Field(None, description=f"A file holding {secret} (a mounted Secret), instead of the value itself")
