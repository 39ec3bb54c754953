"""The bundled sample corpus and JSONL corpora: records of id, text and metadata, as the backends'
calibration, the bench and the tests read them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SAMPLE = Path(__file__).resolve().parent / "data" / "sample.jsonl"


@dataclass
class Record:
    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


def load_corpus(path: Path) -> list[Record]:
    out: list[Record] = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        line = line.strip()
        if not line:
            continue
        if line.startswith("{"):
            obj = json.loads(line)
            meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
            out.append(Record(str(obj.get("id", f"line-{n}")), str(obj["text"]), meta))
        else:
            out.append(Record(f"line-{n}", line))
    return out
