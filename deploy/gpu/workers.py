"""Worker processes per device, as deployed: `ingestor run --devices D --workers K --until-caught-up`
for each K asked, all writing to one shared Milvus server (`deploy/local/services.sh up
--milvus-server`; or the daemon's own Lite server, `up --lite-server`), each K on a fresh topic,
consumer group, collection and cache prefix holding the same records.

A small model leaves a fast GPU waiting on one process's Python (the GIL: Kafka decoding,
tokenising, Redis, Milvus packing); K consumer-group members sharing the device spread that work
over cores. This measures whether they do, through the real CLI, Kafka, Redis and Milvus.

Throughput = rows / (last write - first write), from the `ingested_at` each row carries (stamped
when its upsert is sent), so the workers' start-up (model loads, group joins) is not counted; the
command's wall time is reported beside it. Every id must be in Milvus exactly once.

    python deploy/gpu/workers.py --input FILE --limit 20000 --workers 1,2,3 --devices 0 \\
        --milvus-uri http://127.0.0.1:19530 [--model PATH --precision fp16] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ingestor.bench.services import DEFAULT_REDIS_URL, Services, drop_collection, milvus_rows
from ingestor.corpus import SAMPLE, load_corpus
from ingestor.config import Settings


def run_once(run: int, k: int, args: argparse.Namespace, records: list[Any], svc: Services) -> dict[str, Any]:
    topic = svc.topic(f"workers-{run}-{k}", records)
    collection = f"workers_{run}_{k}_{svc.run_id}"
    cmd = [sys.executable, "-m", "ingestor", "run", "--devices", args.devices, "--workers", str(k),
           "--until-caught-up", "--topics", topic, "--group-id", svc.name(f"workers-{run}-{k}"),
           "--milvus-uri", args.milvus_uri, "--collection", collection, "--redis-url", args.redis_url,
           "--log-level", os.environ.get("WORKERS_LOG_LEVEL", "WARNING")]
    if args.model:
        cmd += ["--model", args.model]
    if args.precision:
        cmd += ["--precision", args.precision]
    env = {**os.environ, "INGESTOR_METRICS__PORT": "0",
           "INGESTOR_REDIS__KEY_PREFIX": svc.redis_prefix(f"workers-{run}-{k}")}
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)  # its workers share the group
    try:
        rc = proc.wait(timeout=args.timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        rc = -9
    wall = time.perf_counter() - started
    rows = milvus_rows(args.milvus_uri, collection, ["id", "ingested_at"])
    drop_collection(args.milvus_uri, collection)
    ids = [r["id"] for r in rows]
    stamps = [int(r["ingested_at"]) for r in rows]
    span_s = (max(stamps) - min(stamps)) / 1000 if stamps else None
    return {
        "workers": k, "rc": rc, "records": len(records), "milvus_rows": len(rows),
        "ids_match": len(ids) == len(set(ids)) and set(ids) == {r.id for r in records},
        "write_span_s": span_s, "texts_per_s": round(len(rows) / span_s, 1) if span_s else None,
        "wall_s": round(wall, 2),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--input", type=Path, default=SAMPLE)
    ap.add_argument("--limit", type=int, default=2000)
    ap.add_argument("--workers", default="1,2", help="worker counts to run, comma-separated")
    ap.add_argument("--devices", default="0", help="as for `ingestor run --devices` (cpu to try it on a CPU)")
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--milvus-uri", default="http://127.0.0.1:19530")
    ap.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    ap.add_argument("--model")
    ap.add_argument("--precision")
    ap.add_argument("--timeout-s", type=float, default=300)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    records = load_corpus(args.input)[: args.limit]
    svc = Services(Settings(), args.redis_url, args.partitions, keep=False)
    results = []
    try:
        for run, k in enumerate(int(x) for x in args.workers.split(",")):
            result = run_once(run, k, args, records, svc)
            print(json.dumps(result), flush=True)
            results.append(result)
    finally:
        svc.cleanup()
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0 if all(r["rc"] == 0 and r["ids_match"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
