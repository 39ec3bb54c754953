"""Test harness: the real local services (started by deploy/local/services.sh), real ingestor
processes, and the oracle helpers that read Kafka, Redis and Milvus back record by record."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ingestor.corpus import SAMPLE, load_corpus

REPO = Path(__file__).resolve().parents[2]
SERVICES = REPO / "deploy" / "local" / "services.sh"
KAFKA = os.environ.get("INGESTOR_TEST_KAFKA", f"127.0.0.1:{os.environ.get('INGESTOR_KAFKA_PORT', '9092')}")
MILVUS_SERVER = f"http://127.0.0.1:{os.environ.get('INGESTOR_MILVUS_PORT', '19530')}"
FAULT_PREFIX = "INGESTOR_FAULT_"  # the variables of `tests.support.hooks`
REDIS_URL = os.environ.get(
    "INGESTOR_TEST_REDIS", f"redis://127.0.0.1:{os.environ.get('INGESTOR_REDIS_PORT', '6379')}/0"
)


def services(*args: str, timeout: float = 180, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`env`: extra environment for services.sh (another port set or state dir)."""
    full = None if env is None else {**os.environ, **env}
    return subprocess.run(
        ["bash", str(SERVICES), *args], capture_output=True, text=True, timeout=timeout, check=False, env=full
    )


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def sample_records(n: int, offset: int = 0) -> list[dict[str, Any]]:
    """Records of the bundled sample corpus as JSON objects (id, text, metadata)."""
    return [{"id": r.id, "text": r.text, "metadata": r.metadata} for r in load_corpus(SAMPLE)[offset : offset + n]]


# -- Kafka -----------------------------------------------------------------------------------------


def create_topic(
    topic: str, partitions: int = 4, bootstrap: str | None = None, topic_configs: dict[str, str] | None = None
) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap or KAFKA)
    try:
        admin.create_topics(
            [NewTopic(topic, num_partitions=partitions, replication_factor=1, topic_configs=topic_configs or {})]
        )
    finally:
        admin.close()


def produce(
    topic: str,
    records: Iterable[tuple[bytes | None, bytes | None]],
    partition: int | None = None,
    bootstrap: str | None = None,
) -> int:
    """Publish in order; a (None, None) record goes through the Java client (see NullRecord.java)."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap or KAFKA, acks="all", linger_ms=5, max_request_size=8 << 20)
    n = 0
    for k, v in records:
        if k is None and v is None:
            producer.flush()
            produce_null_record(topic, bootstrap)
        else:
            producer.send(topic, key=k, value=v, partition=partition)
        n += 1
    producer.flush()
    producer.close()
    return n


def produce_null_record(topic: str, bootstrap: str | None = None) -> None:
    home = Path(os.environ.get("INGESTOR_HOME", Path.home() / ".cache" / "ingestor"))
    subprocess.run(
        [
            "java",
            "-cp",
            f"{home}/kafka/lib/*",
            str(REPO / "tests" / "support" / "NullRecord.java"),
            bootstrap or KAFKA,
            topic,
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )


def kcat_produce(
    topic: str,
    records: Iterable[tuple[bytes, bytes]],
    codec: str = "none",
    partition: int | None = None,
    bootstrap: str | None = None,
) -> int:
    """Publish keyed records through kcat (librdkafka, a client that is not ours), compressed with
    `codec` (none, gzip, snappy, lz4, zstd): each key and value one line, tab-separated."""
    lines = []
    for key, value in records:
        assert not any(c in key + value for c in (b"\t", b"\n")), "kcat reads one record per line"
        lines.append(key + b"\t" + value + b"\n")
    cmd = ["kcat", "-P", "-b", bootstrap or KAFKA, "-t", topic, "-z", codec, "-K", "\t", "-X", "linger.ms=50"]
    if partition is not None:
        cmd += ["-p", str(partition)]
    subprocess.run(cmd, input=b"".join(lines), check=True, capture_output=True, timeout=120)
    return len(lines)


def confluent_producer(bootstrap: str | None = None, **config: Any) -> Any:
    """A confluent-kafka (librdkafka) producer: with `transactional_id`, a transactional one."""
    from confluent_kafka import Producer

    conf = {"bootstrap.servers": bootstrap or KAFKA, "acks": "all", "linger.ms": 5}
    conf.update({k.replace("_", "."): v for k, v in config.items()})
    return Producer(conf)


def json_record(rec: dict[str, Any]) -> tuple[bytes | None, bytes]:
    key = rec.get("id")
    return (str(key).encode() if key is not None else None, json.dumps(rec).encode())


@dataclass
class DeadLetter:
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]


def read_topic(topic: str, timeout_s: float = 20, bootstrap: str | None = None) -> list[DeadLetter]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap or KAFKA, enable_auto_commit=False, group_id=None)
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        if not parts:
            return []
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        ends = consumer.end_offsets(parts)
        out: list[DeadLetter] = []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < ends[tp] for tp in parts) and time.monotonic() < deadline:
            for _tp, recs in consumer.poll(timeout_ms=500).items():
                for r in recs:
                    out.append(
                        DeadLetter(r.key, r.value, {k: v.decode("utf-8", "replace") for k, v in r.headers or []})
                    )
        return out
    finally:
        consumer.close(autocommit=False)


def offsets(group: str, topic: str, bootstrap: str | None = None) -> tuple[dict[int, int | None], dict[int, int]]:
    """(committed by partition, end offset by partition)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap or KAFKA, group_id=group, enable_auto_commit=False)
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        ends = consumer.end_offsets(parts)
        return {tp.partition: consumer.committed(tp) for tp in parts}, {tp.partition: ends[tp] for tp in parts}
    finally:
        consumer.close(autocommit=False)


# -- ingestor processes --------------------------------------------------------------------------


@dataclass
class Run:
    returncode: int
    output: str

    def summary(self) -> dict[str, int]:
        found = re.findall(r"stopped: (consumed=.*)$", self.output, re.M)
        assert found, f"no summary line in ingestor output:\n{self.output[-3000:]}"
        return {k: int(v) for k, v in (kv.split("=") for kv in found[-1].split())}


def ingestor_env(
    topic: str,
    group: str,
    milvus_uri: str,
    redis: bool = True,
    bootstrap: str | None = None,
    redis_url: str | None = None,
    **extra: str,
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INGESTOR_")}
    env.update(
        {
            "INGESTOR_KAFKA__BOOTSTRAP_SERVERS": bootstrap or KAFKA,
            "INGESTOR_KAFKA__TOPICS": topic,
            "INGESTOR_KAFKA__GROUP_ID": group,
            "INGESTOR_MILVUS__URI": milvus_uri,
            "INGESTOR_METRICS__PORT": "0",
            "INGESTOR_MODEL__DEVICE": "cpu",
            "INGESTOR_RUNTIME__SHUTDOWN_TIMEOUT_S": "60",
            "PYTHONUNBUFFERED": "1",
        }
    )
    if redis:
        env["INGESTOR_REDIS__URL"] = redis_url or REDIS_URL
        # Tests share one Redis: a key prefix of their own keeps every test's cache cold.
        env["INGESTOR_REDIS__KEY_PREFIX"] = unique("t")
    env.update(extra)
    return env


def with_hooks(env: dict[str, str]) -> dict[str, str]:
    """`env`, and where it asks for a fault (an INGESTOR_FAULT_* variable), the hooks that make it:
    `ingestor run` installs what INGESTOR_HOOKS names (`ingestor.hooks`), from this checkout."""
    if not any(k.startswith(FAULT_PREFIX) for k in env):
        return env
    path = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return {**env, "INGESTOR_HOOKS": "tests.support.hooks:from_environment", "PYTHONPATH": path}


def run_ingestor(env: dict[str, str], *args: str, timeout: float = 600) -> Run:
    cmd = [sys.executable, "-m", "ingestor", "run", "--until-caught-up", *args]
    proc = subprocess.run(cmd, env=with_hooks(env), capture_output=True, text=True, timeout=timeout, check=False)
    return Run(proc.returncode, proc.stdout + proc.stderr)


def start_ingestor(
    env: dict[str, str], *args: str, log_path: Path, until_caught_up: bool = False
) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "ingestor", "run", *(["--until-caught-up"] if until_caught_up else []), *args]
    log = open(log_path, "ab")
    return subprocess.Popen(cmd, env=with_hooks(env), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str) -> tuple[int, str]:
    """(status, body); (0, "") when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return 0, ""


def metric_value(text: str, name: str, **labels: str) -> float:
    """Sum of a metric's samples in Prometheus text, over the samples that carry `labels`."""
    total = 0.0
    for found, value in re.findall(rf"^{name}(?:{{([^}}]*)}})? ([0-9.e+-]+)$", text, re.M):
        have = dict(re.findall(r'(\w+)="([^"]*)"', found))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(value)
    return total


def wait_for(predicate: Any, timeout_s: float, interval_s: float = 0.25, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout_s: float = 90) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
    return proc.wait(timeout=timeout_s)


# -- Milvus ----------------------------------------------------------------------------------------


@contextmanager
def milvus(uri: str) -> Iterator[Any]:
    """A client for a Milvus *server*. Milvus Lite files are read through `milvus_rows`, in a
    subprocess: Milvus Lite keeps a file locked for the life of the process that opened it."""
    from pymilvus import MilvusClient

    assert uri.startswith("http"), "open Milvus Lite files with milvus_rows / milvus_search"
    client = MilvusClient(uri=uri)
    try:
        yield client
    finally:
        client.close()


def milvus_server_problem(uri: str, timeout_s: float = 30) -> str | None:
    """Why the Milvus server at `uri` cannot do the round trip a test needs (None: it can): create
    a collection, upsert, read it back strongly consistent, drop it. `services.sh status` only
    lists collections, which Milvus 2.3.5 answers while creates or writes still hang: for a while
    after a start, or for good when a kill or a freeze left its time tick stalled."""
    from pymilvus import MilvusClient

    name = f"probe_{os.getpid()}_{time.monotonic_ns()}"
    try:
        client = MilvusClient(uri=uri, timeout=timeout_s)
    except Exception as exc:
        return f"connect: {exc}"
    try:
        client.create_collection(name, dimension=2, id_type="string", max_length=16, timeout=timeout_s)
        client.upsert(name, [{"id": "p", "vector": [0.5, 0.5]}], timeout=timeout_s)
        rows = client.query(
            name, filter='id == "p"', output_fields=["id"], consistency_level="Strong", timeout=timeout_s
        )
        client.drop_collection(name, timeout=timeout_s)
        return None if len(rows) == 1 else f"read back {rows}"
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        client.close()


def wait_milvus_server(uri: str, timeout_s: float = 180) -> None:
    """Until the server at `uri` does the round trip of `milvus_server_problem`."""
    deadline = time.monotonic() + timeout_s
    while (problem := milvus_server_problem(uri)) is not None:
        if time.monotonic() > deadline:
            raise AssertionError(f"the Milvus server at {uri} does not work after {timeout_s:.0f}s: {problem}")
        time.sleep(2)


def _read(uri: str, collection: str, fields: tuple[str, ...], queries: list[list[float]]) -> dict[str, Any]:
    """Every entity (these fields), and the top-3 ids of each query vector, read through ingestor's
    own sink (`bench.milvus.rows`, an iterator, so duplicates would show), as JSON types."""
    from bench import milvus
    from ingestor.config import MilvusSettings
    from ingestor.sink import MilvusSink

    sink = MilvusSink(MilvusSettings(uri=uri, collection=collection))
    try:
        rows = milvus.rows(sink, list(fields))
        out = {"rows": rows, "hits": [[h["id"] for h in sink.search(q, 3)] for q in queries] if rows else []}
    finally:
        sink.close()
    return json.loads(json.dumps(out, default=float))


# A Milvus Lite file is read in a process of its own: Milvus Lite keeps a file locked for the life
# of the process that opened it.
_READER = r"""
import json, sys
sys.path.insert(0, sys.argv[5])
from tests.support.harness import _read
json.dump(_read(sys.argv[1], sys.argv[2], tuple(sys.argv[3].split(",")), json.loads(sys.argv[4])), sys.stdout)
"""


def _read_milvus(uri: str, collection: str, fields: tuple[str, ...], queries: list[list[float]]) -> dict[str, Any]:
    if uri.startswith("http"):  # a server locks nothing: read it here, without starting a Python per read
        return _read(uri, collection, fields, queries)
    proc = subprocess.run(
        [sys.executable, "-c", _READER, uri, collection, ",".join(fields), json.dumps(queries), str(REPO)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def milvus_rows(
    uri: str,
    collection: str = "documents",
    fields: tuple[str, ...] = ("id", "vector", "content_hash", "truncated", "text", "metadata"),
) -> list[dict[str, Any]]:
    """Every entity in the collection (an iterator, so duplicates would show): a Milvus server's
    read in this process, a Milvus Lite file's in a subprocess."""
    return _read_milvus(uri, collection, fields, [])["rows"]


def by_record(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """A chunked collection's rows grouped by record id, each record's in chunk order. Fails unless
    every record's ids are exactly `<id>#0` … `<id>#<n-1>`, each once (so an entity stored twice,
    or a gap, shows here)."""
    chunks: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for row in rows:
        record_id, sep, index = row["id"].rpartition("#")
        assert sep and index.isdigit(), f"not a chunk id: {row['id']!r}"
        chunks.setdefault(record_id, []).append((int(index), row))
    out: dict[str, list[dict[str, Any]]] = {}
    for record_id, found in chunks.items():
        found.sort(key=lambda pair: pair[0])
        indices = [i for i, _ in found]
        assert indices == list(range(len(found))), f"record {record_id!r} has chunks {indices}"
        out[record_id] = [row for _, row in found]
    return out


def one_chunk_each(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Rows by record id, for records short enough to be one chunk: each is exactly `<id>#0`."""
    out = {}
    for record_id, found in by_record(rows).items():
        assert len(found) == 1, f"record {record_id!r} has {len(found)} chunks"
        out[record_id] = found[0]
    return out


def milvus_search(uri: str, vectors: list[list[float]], collection: str = "documents") -> list[list[str]]:
    """Top-3 ids for each query vector."""
    return _read_milvus(uri, collection, ("id",), vectors)["hits"]


# -- ingestor serve --------------------------------------------------------------------------------


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def serve_env(milvus_uri: str, redis: bool = False, **extra: str) -> dict[str, str]:
    """The environment of an `ingestor serve` on a free port, on the CPU, with `extra` settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INGESTOR_")}
    env.update(
        {
            "INGESTOR_MILVUS__URI": milvus_uri,
            "INGESTOR_MODEL__DEVICE": "cpu",
            "INGESTOR_SERVE__PORT": str(free_port()),
            "INGESTOR_RUNTIME__SHUTDOWN_TIMEOUT_S": "20",
            "PYTHONUNBUFFERED": "1",
        }
    )
    if redis:
        env["INGESTOR_REDIS__URL"] = REDIS_URL
        env["INGESTOR_REDIS__KEY_PREFIX"] = unique("t")
    env.update(extra)
    return env


def start_serve(env: dict[str, str], log_path: Path, timeout_s: float = 180) -> Server:
    """`ingestor serve` in a subprocess, once /readyz answers 200."""
    log = open(log_path, "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ingestor", "serve"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{env['INGESTOR_SERVE__PORT']}"
    server = Server(proc, url, log_path)
    deadline = time.monotonic() + timeout_s
    while http_get(f"{url}/readyz")[0] != 200:
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc, timeout_s=30)
            raise AssertionError(f"ingestor serve did not get ready:\n{server.log()[-4000:]}")
        time.sleep(0.25)
    return server


def run_serve(env: dict[str, str], timeout: float = 300) -> Run:
    """`ingestor serve` to its end: for a start that must fail."""
    proc = subprocess.run(
        [sys.executable, "-m", "ingestor", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Run(proc.returncode, proc.stdout + proc.stderr)
