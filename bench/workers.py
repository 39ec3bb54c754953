"""`python -m bench --workers-per-device 1,2,4`: worker processes per device, as deployed. For each K asked,
`ingestor run --devices D --workers-per-device K --until-caught-up` on a fresh topic, consumer group,
collection and cache prefix holding the same records, all writing to one Milvus server
(`deploy/local/services.sh up --milvus-server`, or the daemon's own Lite server, `up
--lite-server`).

A small model leaves a fast GPU waiting on one process's Python (the GIL: Kafka decoding,
tokenising, Redis, Milvus packing); K consumer-group members sharing the device spread that work
over cores. This measures whether they do, through the real CLI, Kafka, Redis and Milvus.

Throughput = records / (last write - first write), from the `ingested_at` each row carries (stamped
when its upsert is sent), so the workers' start-up (model loads, group joins) is not counted; the
command's wall time is reported beside it. Every record must be in Milvus exactly once (with
chunking, each of its chunks).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.services import Services, drop_collection, held, milvus_rows, record_fields
from ingestor.config import Settings
from ingestor.corpus import Record

PARTITIONS = 6  # enough for every worker of K = 1, 2, 4 (or 6) to own one


def run_workers(
    settings: Settings,
    records: list[Record],
    counts: list[int],
    devices: str,
    milvus_uri: str,
    redis_url: str,
    timeout_s: float,
    config: Path | None = None,
    progress: Callable[[str], None] = lambda s: None,
) -> list[dict[str, Any]]:
    """One `ingestor run` per K in `counts`, in turn; a figure per K."""
    svc = Services(settings, redis_url, PARTITIONS, keep=False)
    results = []
    try:
        for run, k in enumerate(counts):
            progress(f"ingestor run --devices {devices} --workers-per-device {k} on {len(records)} records")
            results.append(_run_once(run, k, settings, records, svc, devices, milvus_uri, redis_url, timeout_s, config))
            progress(str(results[-1]))
    finally:
        svc.cleanup()
    return results


def _run_once(
    run: int,
    k: int,
    settings: Settings,
    records: list[Record],
    svc: Services,
    devices: str,
    milvus_uri: str,
    redis_url: str,
    timeout_s: float,
    config: Path | None,
) -> dict[str, Any]:
    topic = svc.topic(f"workers-{run}-{k}", records)
    collection = f"workers_{run}_{k}_{svc.run_id}"
    model = settings.model
    cmd = [
        sys.executable,
        "-m",
        "ingestor",
        "run",
        "--devices",
        devices,
        "--workers-per-device",
        str(k),
        "--until-caught-up",
        "--topics",
        topic,
        "--group-id",
        svc.name(f"workers-{run}-{k}"),
        "--bootstrap-servers",
        settings.kafka.bootstrap_servers,
        "--milvus-uri",
        milvus_uri,
        "--collection",
        collection,
        "--redis-url",
        redis_url,
        "--model",
        model.name,
        "--backend",
        model.backend,
        "--precision",
        model.precision,
        "--log-level",
        settings.runtime.log_level,
    ]
    if config is not None:
        cmd += ["--config", str(config)]
    env = {
        **os.environ,
        "INGESTOR_METRICS__PORT": "0",
        "INGESTOR_REDIS__KEY_PREFIX": svc.redis_prefix(f"workers-{run}-{k}"),
    }
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)  # its workers share the group
    try:
        rc = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        rc = -9
    wall = time.perf_counter() - started
    chunked = settings.chunking.enabled  # the child reads the same settings
    try:
        rows = milvus_rows(milvus_uri, collection, record_fields(chunked) + ["ingested_at"])
    finally:
        drop_collection(milvus_uri, collection)
    stamps = [int(r["ingested_at"]) for r in rows]
    span_s = (max(stamps) - min(stamps)) / 1000 if stamps else None
    h = held(rows, chunked)
    return {
        "workers": k,
        "rc": rc,
        "collection": collection,
        "records": len(records),
        "milvus_rows": h.rows,
        "milvus_records": len(h.record_ids),
        "ids_match": h.match({r.id for r in records}),
        "write_span_s": span_s,
        "texts_per_s": round(len(h.record_ids) / span_s, 1) if span_s else None,
        "wall_s": round(wall, 2),
    }
