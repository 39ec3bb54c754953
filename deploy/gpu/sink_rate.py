"""How many rows per second the sink takes alone (`ingestor.bench.sink_rate`): no Kafka, no model,
no Redis. A fresh Milvus Lite file served from the child process, or a collection of its own on a
Milvus server (`--uri`, dropped afterwards).

    python deploy/gpu/sink_rate.py [--rows 24576] [--chunk 512] [--uri http://…] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from ingestor.bench.services import drop_collection
from ingestor.bench.variants import sink_rate


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=24_576)
    ap.add_argument("--chunk", type=int, default=512)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--uri", help="a Milvus server (http://host:port) instead of a fresh Lite file")
    args = ap.parse_args()
    collection = f"rate_{os.getpid()}"
    with tempfile.TemporaryDirectory() as tmp:
        uri = args.uri or f"{tmp}/rate.db"
        try:
            out = sink_rate(uri, collection, args.rows, args.chunk)
        finally:
            if args.uri:
                drop_collection(args.uri, collection)
    out["sink"] = args.uri or "Milvus Lite"
    print(json.dumps(out))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
