"""The model identity a collection was written with, and comparing it with ours. Pure.

A collection records, in its property `ingestor.identity` (a JSON object), everything that decides
what its vectors mean: the model's name, backend, precision and dimension, whether the model
normalises its output, and the chunking settings. `ingestor run` writes it when it creates the
collection (and adopts a collection from before identities were recorded by writing it then);
`ingestor run` and `ingestor serve` both refuse to start on a collection whose identity differs
from theirs, since a query embedded with other settings finds the wrong neighbours without any
error (`mismatch` says what differs and which setting to change).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any

PROPERTY = "ingestor.identity"

# Each field of an identity, and the setting that decides it (what a refusal tells the operator).
SETTINGS = {
    "model": "model.name (INGESTOR_MODEL__NAME)",
    "backend": "model.backend (INGESTOR_MODEL__BACKEND)",
    "precision": "model.precision (INGESTOR_MODEL__PRECISION)",
    "dimension": "model.name (INGESTOR_MODEL__NAME): the dimension is the model's",
    "normalized": "model.name (INGESTOR_MODEL__NAME): normalising is the model's last module",
    "chunking": "chunking.enabled, chunking.max_tokens, chunking.overlap_tokens (INGESTOR_CHUNKING__*)",
}


@dataclass(frozen=True, slots=True)
class ModelIdentity:
    model: str
    backend: str
    precision: str
    dimension: int
    normalized: bool
    chunking: str  # "off", or "<max_tokens>/<overlap_tokens>" as the splitter cuts

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    def describe(self) -> str:
        """One line for logs and refusals."""
        return (
            f"model={self.model} backend={self.backend} precision={self.precision} dimension={self.dimension} "
            f"normalized={str(self.normalized).lower()} chunking={self.chunking}"
        )


def chunking_label(max_tokens: int | None, overlap_tokens: int | None) -> str:
    """`off` without chunking, else the splitter's effective limits."""
    return "off" if max_tokens is None else f"{max_tokens}/{overlap_tokens or 0}"


def of_model(embedder: Any, splitter: Any | None) -> ModelIdentity:
    """The identity of what `embedder` (an `embedder.Embedder`, or an object with its interface)
    writes with `splitter` (a `chunking.Splitter`, None without chunking)."""
    name, _, variant = str(embedder.identity).partition("@")
    settings = getattr(embedder, "settings", None)
    return ModelIdentity(
        model=settings.name if settings is not None else name,
        backend=settings.backend if settings is not None else "torch",
        precision=settings.precision if settings is not None else variant,
        dimension=int(embedder.dimension),
        normalized=bool(getattr(embedder, "normalized", False)),
        chunking=chunking_label(
            splitter.max_tokens if splitter is not None else None,
            splitter.overlap_tokens if splitter is not None else None,
        ),
    )


class UnreadableIdentity(ValueError):
    """The collection's identity property is not one this version can read."""


def from_properties(properties: dict[str, Any] | None) -> ModelIdentity | None:
    """The identity a collection's properties hold, None when they hold none (a collection from
    before identities were recorded). Raises UnreadableIdentity for a value that does not parse."""
    raw = (properties or {}).get(PROPERTY)
    if raw is None:
        return None
    try:
        data = json.loads(raw)
        names = {f.name for f in fields(ModelIdentity)}
        if not isinstance(data, dict) or set(data) != names:
            raise ValueError(f"expected the keys {sorted(names)}")
        return ModelIdentity(
            model=str(data["model"]),
            backend=str(data["backend"]),
            precision=str(data["precision"]),
            dimension=int(data["dimension"]),
            normalized=bool(data["normalized"]),
            chunking=str(data["chunking"]),
        )
    except (ValueError, TypeError) as exc:
        raise UnreadableIdentity(f"property {PROPERTY} = {str(raw)[:200]!r} does not parse: {exc}") from None


def differences(stored: ModelIdentity, ours: ModelIdentity) -> list[str]:
    """The names of the fields that differ, in the order of the dataclass."""
    return [f.name for f in fields(ModelIdentity) if getattr(stored, f.name) != getattr(ours, f.name)]


def mismatch(stored: ModelIdentity, ours: ModelIdentity, where: str) -> str | None:
    """Why a collection written with `stored` cannot be used with `ours` (None when they agree):
    both identities, and the settings to change."""
    differ = differences(stored, ours)
    if not differ:
        return None
    settings = "; ".join(f"{name}: {SETTINGS[name]}" for name in differ)
    return (
        f"Milvus collection {where} was written with {stored.describe()}, but this configuration has "
        f"{ours.describe()}. Set {settings} to match the collection, or use another milvus.collection"
    )
