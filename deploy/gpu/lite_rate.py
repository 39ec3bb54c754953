"""How many rows per second Milvus Lite takes from the sink, alone: no Kafka, no model, no Redis.

The pipeline can go no faster than its sink; this measures that bound on the machine at hand, so
a benchmark's (f) ceiling can be read against it. Writes N rows of 384-dim vectors with stored
texts, in chunks of C, through `MilvusSink.upsert` into a fresh Lite file served from the child
process (or a collection on `--uri`), and prints rows/s and the CPU per row of the Lite child
and of this process.

    python deploy/gpu/lite_rate.py [--rows 24576] [--chunk 512] [--uri http://…] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from ingestor.bench import SAMPLE
from ingestor.config import MilvusSettings
from ingestor.memory import child_pids, cpu_seconds
from ingestor.sink import Entity, MilvusSink



def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=24_576)
    ap.add_argument("--chunk", type=int, default=512)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--uri", help="a Milvus server (http://host:port) instead of a fresh Lite file")
    args = ap.parse_args()
    texts = [json.loads(line)["text"] for line in SAMPLE.read_text().splitlines()[: args.chunk]]
    vectors = np.random.default_rng(0).standard_normal((args.chunk, 384)).astype(np.float32)
    chunks = [[Entity(f"r{i}-{j}", vectors[j], texts[j % len(texts)], {"source": "lite-rate", "j": j}, "0" * 64,
                      "m", False, "t", 0, i * args.chunk + j) for j in range(args.chunk)]
              for i in range(max(2, args.rows // args.chunk))]
    with tempfile.TemporaryDirectory() as tmp:
        sink = MilvusSink(MilvusSettings(uri=args.uri or f"{tmp}/rate.db", collection=f"rate_{os.getpid()}"), 384, "m")
        sink.connect()
        sink.ensure_collection()
        try:
            sink.upsert(chunks[0])  # the first write builds the collection's state: not timed
            child = next(iter(child_pids() or ()), None)  # the Lite child; none with --uri

            def server_cpu() -> float:
                return (cpu_seconds(child) or 0.0) if child else 0.0

            rows = sum(len(c) for c in chunks[1:])
            k0, s0, t0 = server_cpu(), time.process_time(), time.perf_counter()
            for chunk in chunks[1:]:
                sink.upsert(chunk)
            seconds = time.perf_counter() - t0
            out = {"rows": rows, "chunk": args.chunk, "seconds": round(seconds, 3),
                   "rows_per_s": round(rows / seconds), "server_cpu_us_per_row": round(1e6 * (server_cpu() - k0) / rows, 1) if child else None,
                   "client_cpu_us_per_row": round(1e6 * (time.process_time() - s0) / rows, 1)}
        finally:
            sink.close()
    print(json.dumps(out))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
