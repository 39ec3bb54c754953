"""The fault tests' own set of services and the per-test scenario around them.

The fault tests stop, freeze and restart Kafka, Redis and Milvus. Other people's tests use the
services on the default ports at the same time, so the fault tests never touch those: they run a
dedicated set (other ports, another state directory, Milvus as a server process that can be killed)
started by the session fixture in conftest.py and wiped at the end.

Every daemon a scenario starts runs with chunking set explicitly (`chunking.enabled`, one entity per
chunk of a record, `<id>#<n>`): on, unless the environment says INGESTOR_FAULTS_CHUNKING=0 (the
whole suite with one entity per record) or a test sets `Scenario.chunking` (or the setting itself in
`Scenario.settings`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingestor.config import ChunkingSettings
from tests.support import harness

# The default port set and state dir are slot 0. Several sessions of this suite on one machine
# (test.sh runs it too) would wreck each other's services: each session claims a free slot with a
# lock held for its whole life, and slot N shifts every port by 100 * N.
BASE_PORTS = {"kafka": 19092, "controller": 19093, "redis": 16379, "milvus": 19531, "lite": 19541}
# The Milvus each scenario writes to: the daemon's Milvus Lite server, or a real Milvus server.
BACKENDS = {"lite": "lite", "server": "milvus"}  # backend -> its service in services.sh
SLOTS = 8
# The fields of a chunk entity besides its id (`<doc_id>#<chunk_index>`), text and vector.
CHUNK_FIELDS = ("doc_id", "chunk_index", "chunk_count", "char_start", "char_end")


def chunking_default() -> bool:
    """Whether scenarios run the daemon with chunking on: yes, unless INGESTOR_FAULTS_CHUNKING=0."""
    return os.environ.get("INGESTOR_FAULTS_CHUNKING", "1").strip().lower() not in ("0", "false", "no", "off")


def chunking_settings(env: Mapping[str, str]) -> ChunkingSettings:
    """The chunk settings of a daemon run with `env` (the INGESTOR_CHUNKING__* variables, the
    project's defaults for the rest)."""
    prefix = "INGESTOR_CHUNKING__"
    return ChunkingSettings.model_validate(
        {k[len(prefix) :].lower(): v for k, v in env.items() if k.startswith(prefix)}
    )


def claim_slot() -> tuple[int, int]:
    """(slot number, fd of its lock); the lock goes with the process."""
    import fcntl

    # Machine-wide, not per checkout: two clones running this suite would share the ports.
    locks = Path(os.environ.get("INGESTOR_HOME", Path.home() / ".cache" / "ingestor")) / "fault-slots"
    locks.mkdir(parents=True, exist_ok=True)
    for n in range(SLOTS):
        fd = os.open(locks / f"faults-slot-{n}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return n, fd
    raise RuntimeError(f"all {SLOTS} fault-stack slots are taken by other sessions")


@dataclass
class Stack:
    """The dedicated services of one slot: where they answer and how to hurt them."""

    slot: int = 0

    def port(self, name: str) -> int:
        return BASE_PORTS[name] + 100 * self.slot

    @property
    def state_dir(self) -> Path:
        return harness.REPO / ".state" / ("faults" if self.slot == 0 else f"faults-{self.slot}")

    @property
    def env(self) -> dict[str, str]:
        """What services.sh needs to run this slot's services."""
        return {
            "INGESTOR_KAFKA_PORT": str(self.port("kafka")),
            "INGESTOR_KAFKA_CONTROLLER_PORT": str(self.port("controller")),
            "INGESTOR_REDIS_PORT": str(self.port("redis")),
            "INGESTOR_MILVUS_PORT": str(self.port("milvus")),
            "INGESTOR_LITE_PORT": str(self.port("lite")),
            "INGESTOR_STATE_DIR": str(self.state_dir),
            "INGESTOR_MILVUS_SERVER": "1",
            "INGESTOR_LITE_SERVER": "1",
        }

    @property
    def kafka(self) -> str:
        return f"127.0.0.1:{self.port('kafka')}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.port('redis')}/0"

    def milvus_uri(self, backend: str = "lite") -> str:
        return f"http://127.0.0.1:{self.port(BACKENDS[backend])}"

    def services(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        result = harness.services(*args, timeout=timeout, env=self.env)
        if result.returncode != 0:
            raise AssertionError(f"services.sh {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result

    def pid(self, service: str) -> int:
        result = harness.services("pid", service, env=self.env)
        assert result.returncode == 0, f"{service} is not running: {result.stderr}"
        return int(result.stdout.strip())

    def signal(self, service: str, sig: int) -> None:
        """Signal the service's whole process group (services.sh makes each one a group leader)."""
        pid = self.pid(service)
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            pass

    @contextmanager
    def frozen(self, service: str) -> Iterator[None]:
        """SIGSTOP the service for the block (a hung process: connections open, no answers)."""
        self.signal(service, signal.SIGSTOP)
        try:
            yield
        finally:
            self.signal(service, signal.SIGCONT)

    def thaw_all(self) -> None:
        for service in ("kafka", "redis", "milvus", "lite"):
            result = harness.services("pid", service, env=self.env)
            if result.returncode == 0:
                try:
                    os.killpg(int(result.stdout.strip()), signal.SIGCONT)
                except (ProcessLookupError, ValueError):
                    pass

    def milvus_write_quota(self, deny: bool, wait_s: float = 90) -> None:
        """Deny (or allow) every write on the Milvus server, as its quota protection does: the
        server watches its milvus.yaml and takes `quotaAndLimits.limitWriting.forceDeny` within
        seconds ("quota exceeded[reason=the writing has been deactivated by the administrator]").
        Returns once a probe write shows the server acting on it (`wait_s` 0: at once)."""
        path = self.state_dir / "milvus" / "configs" / "milvus.yaml"
        if not path.exists():
            return
        lines = path.read_text().split("\n")
        section = next(i for i, line in enumerate(lines) if line.strip() == "limitWriting:")
        at = next(i for i in range(section, len(lines)) if lines[i].strip().startswith("forceDeny:"))
        lines[at] = re.sub(r"forceDeny: \w+", f"forceDeny: {'true' if deny else 'false'}", lines[at])
        path.write_text("\n".join(lines))
        if wait_s:
            harness.wait_for(
                lambda: self._writes_denied() is deny,
                wait_s,
                interval_s=1,
                what=f"the Milvus server to {'deny' if deny else 'allow'} writes",
            )

    def _writes_denied(self) -> bool | None:
        """Whether a probe write is refused by quota now (None: no answer)."""
        from pymilvus import MilvusClient

        client = MilvusClient(uri=self.milvus_uri("server"), timeout=10)
        try:
            if not client.has_collection("quota_probe"):
                client.create_collection("quota_probe", dimension=2, id_type="string", max_length=16)
            client.upsert("quota_probe", [{"id": "p", "vector": [0.5, 0.5]}])
            return False
        except Exception as exc:
            return True if "quota exceeded" in str(exc) else None
        finally:
            client.close()

    def ensure_milvus_server(self) -> None:
        """Make sure the Milvus server works before a scenario that needs it: an earlier test's kill
        or freeze can leave Milvus 2.3.5 up but stalled (its log says "RootCoord haven't
        synchronized the time tick"), which is Milvus's fault, not the one under test. Restart
        it; if a restart does not help, start it again on empty state."""
        uri = self.milvus_uri("server")
        problem = harness.milvus_server_problem(uri)
        if problem is None:
            return
        for attempt in ("restart", "wipe"):
            print(f"fault stack: the Milvus server does not work ({problem}): {attempt}", flush=True)
            self.services("stop", "milvus")
            if attempt == "wipe":
                for part in ("etcd", "data", "rocksmq", "rocksmq_meta_kv"):
                    shutil.rmtree(self.state_dir / "milvus" / part, ignore_errors=True)
            self.services("start", "milvus", timeout=300)
            try:
                harness.wait_milvus_server(uri, 180)  # a restart waits out the old sessions' TTL (30 s)
                return
            except AssertionError as exc:
                problem = str(exc)
        raise AssertionError(f"the fault stack's Milvus server does not work after a wipe: {problem}")

    def redis(self) -> Any:
        import redis

        return redis.Redis.from_url(self.redis_url, socket_timeout=5)

    def healthy(self) -> bool:
        return harness.services("status", env=self.env).returncode == 0


# -- records ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rec:
    """One record a test publishes, with what the oracle expects of it."""

    key: bytes | None
    value: bytes | None
    kind: str  # "doc" | "tombstone" | "poison"
    id: str | None = None
    text: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Produced:
    rec: Rec
    partition: int
    offset: int


def doc(record: dict[str, Any]) -> Rec:
    key, value = harness.json_record(record)
    return Rec(key, value, "doc", str(record["id"]), record["text"])


def docs(records: Iterable[dict[str, Any]]) -> list[Rec]:
    return [doc(r) for r in records]


def tombstone(record_id: str) -> Rec:
    return Rec(record_id.encode(), None, "tombstone", record_id)


def poison(key: bytes | None, value: bytes | None, reason: str) -> Rec:
    return Rec(key, value, "poison", reason=reason)


def sample(n: int, offset: int = 0) -> list[Rec]:
    return docs(harness.sample_records(n, offset))


# -- one test's world ------------------------------------------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:40]


@dataclass
class Scenario:
    """Unique topic, group, collection and cache prefix for one test; the records it published;
    the ingestor processes it started (killed at teardown if still running)."""

    stack: Stack
    name: str
    logdir: Path
    partitions: int = 4
    topic: str = ""
    group: str = ""
    collection: str = ""
    key_prefix: str = ""
    milvus_uri: str = ""
    backend: str = "lite"  # see BACKENDS
    produced: list[Produced] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    settings: dict[str, str] = field(default_factory=dict)  # extra INGESTOR_* for every run
    chunking: bool = field(default_factory=chunking_default)  # INGESTOR_CHUNKING__ENABLED of every run

    def __post_init__(self) -> None:
        tag = harness.unique(_slug(self.name)[:20] or "t").replace("-", "_")
        self.topic = self.topic or f"flt-{tag}"
        self.group = self.group or f"g-{tag}"
        self.collection = self.collection or f"c_{tag}"
        self.key_prefix = self.key_prefix or f"ft:{tag}"
        self.milvus_uri = self.milvus_uri or self.stack.milvus_uri(self.backend)

    @property
    def milvus_service(self) -> str:
        """The services.sh name of the Milvus this scenario writes to (to stop, kill or freeze it)."""
        return BACKENDS[self.backend]

    @property
    def dlq_topic(self) -> str:
        return self.topic + ".dlq"

    def create_topic(self, partitions: int | None = None) -> None:
        self.partitions = partitions or self.partitions
        harness.create_topic(self.topic, self.partitions, bootstrap=self.stack.kafka)

    # -- environment and processes -------------------------------------------------------------

    def env(self, redis: bool = True, **extra: str) -> dict[str, str]:
        env = harness.ingestor_env(
            self.topic,
            self.group,
            self.milvus_uri,
            redis=redis,
            bootstrap=self.stack.kafka,
            redis_url=self.stack.redis_url,
            INGESTOR_MILVUS__COLLECTION=self.collection,
            INGESTOR_REDIS__KEY_PREFIX=self.key_prefix,
            # Small retry caps: outages in these tests last seconds, recovery should too.
            INGESTOR_RETRY__MAX_BACKOFF_MS="2000",
            INGESTOR_RUNTIME__SHUTDOWN_TIMEOUT_S="30",
            INGESTOR_CHUNKING__ENABLED="true" if self.chunking else "false",
        )
        env.update(self.settings)
        env.update(extra)
        return env

    def start(
        self, name: str = "daemon", env: dict[str, str] | None = None, args: tuple[str, ...] = (), **extra: str
    ) -> Daemon:
        """`ingestor run ARGS` in the background."""
        log_path = self.logdir / f"{name}-{len(self.procs)}.log"
        proc = harness.start_ingestor(env or self.env(**extra), *args, log_path=log_path)
        self.procs.append(proc)
        return Daemon(proc, log_path)

    def run(self, env: dict[str, str] | None = None, timeout: float = 240, **extra: str) -> harness.Run:
        """`ingestor run --until-caught-up` to completion."""
        result = harness.run_ingestor(env or self.env(**extra), timeout=timeout)
        (self.logdir / f"run-{time.monotonic_ns()}.log").write_text(result.output)
        return result

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)

    # -- Kafka -----------------------------------------------------------------------------------

    def produce(self, recs: Iterable[Rec], partition: int | list[int] | None = None) -> list[Produced]:
        """Publish in order and remember where each record landed. `partition`: one for all, or
        one per record; None lets the key decide."""
        from kafka import KafkaProducer

        recs = list(recs)
        parts = partition if isinstance(partition, list) else [partition] * len(recs)
        assert len(parts) == len(recs)
        out: list[Produced] = []
        producer = KafkaProducer(bootstrap_servers=self.stack.kafka, acks="all", linger_ms=5, max_request_size=8 << 20)
        try:
            pending: list[tuple[Rec, Any]] = []

            def settle() -> None:
                producer.flush()
                for rec, future in pending:
                    meta = future.get(timeout=60)
                    out.append(Produced(rec, meta.partition, meta.offset))
                pending.clear()

            for rec, part in zip(recs, parts):
                if rec.key is None and rec.value is None:
                    settle()
                    out.append(self._produce_null())
                else:
                    pending.append((rec, producer.send(self.topic, key=rec.key, value=rec.value, partition=part)))
            settle()
        finally:
            producer.close()
        self.produced.extend(out)
        return out

    def produce_kcat(self, recs: Iterable[Rec], partition: int, codec: str) -> list[Produced]:
        """Publish keyed records through kcat (librdkafka) to one partition, compressed with
        `codec`; their offsets follow that partition's end offset, in order."""
        recs = list(recs)
        start = self.end_offsets().get(partition, 0)
        harness.kcat_produce(
            self.topic,
            [(r.key or b"", r.value or b"") for r in recs],
            codec=codec,
            partition=partition,
            bootstrap=self.stack.kafka,
        )
        assert self.end_offsets()[partition] == start + len(recs), "kcat: unexpected end offset"
        out = [Produced(r, partition, start + i) for i, r in enumerate(recs)]
        self.produced.extend(out)
        return out

    def _produce_null(self) -> Produced:
        """kafka-python cannot send a null key with a null value; the Java client can. Its
        position: the partition whose end offset moved."""
        before = self.end_offsets()
        harness.produce_null_record(self.topic, self.stack.kafka)
        after = self.end_offsets()
        moved = [p for p in after if after[p] != before.get(p, 0)]
        assert len(moved) == 1, f"null record: cannot tell where it landed ({before} -> {after})"
        rec = Rec(None, None, "poison", reason="tombstone_without_key")
        return Produced(rec, moved[0], before.get(moved[0], 0))

    def offsets(self) -> tuple[dict[int, int | None], dict[int, int]]:
        """(committed, end offsets); retried while a just restarted broker settles."""
        from kafka.errors import KafkaError

        for attempt in range(5):
            try:
                return harness.offsets(self.group, self.topic, bootstrap=self.stack.kafka)
            except KafkaError:
                if attempt == 4:
                    raise
                time.sleep(2)
        raise AssertionError("unreachable")

    def committed(self) -> dict[int, int]:
        committed, _ = self.offsets()
        return {p: (c or 0) for p, c in committed.items()}

    def end_offsets(self) -> dict[int, int]:
        return self.offsets()[1]

    def caught_up(self) -> bool:
        committed, ends = self.offsets()
        return all((committed.get(p) or 0) >= end for p, end in ends.items())

    # -- Milvus ----------------------------------------------------------------------------------

    @property
    def chunked(self) -> bool:
        """Whether its daemons write one entity per chunk (as `env()` sets chunking)."""
        return chunking_settings(self.env()).enabled

    def entities(self, fields: tuple[str, ...] = ("id",), strict: bool = True) -> list[dict[str, Any]]:
        """Every entity in the collection now (strong consistency), with these fields. The Milvus
        Lite server drops idle client connections ("Too many pings"), so a failed read is retried
        on a fresh client; `strict=False` (wait loops) answers nothing while Milvus is down instead
        of raising."""
        last: Exception | None = None
        for _ in range(5):
            try:
                return harness.milvus_rows(self.milvus_uri, self.collection, fields=fields)
            except Exception as exc:
                last = exc
                if not strict:
                    return []
                time.sleep(1)
        raise AssertionError(f"cannot read Milvus at {self.milvus_uri}: {last}")

    def milvus_ids(self, strict: bool = True) -> set[str]:
        """Ids of the records with an entity in the collection now: with chunking, the doc_id of
        every chunk (a record in the middle of a write counts; the oracle checks every chunk)."""
        if self.chunked:
            return {r["doc_id"] for r in self.entities(("id", "doc_id"), strict=strict)}
        return {r["id"] for r in self.entities(("id",), strict=strict)}

    def count(self) -> int:
        return len(self.milvus_ids())

    def ids_of(self, produced: Iterable[Produced]) -> set[str]:
        return {p.rec.id for p in produced if p.rec.kind == "doc" and p.rec.id is not None}

    def all_in_milvus(self, produced: Iterable[Produced]) -> bool:
        want = self.ids_of(produced)
        return want <= self.milvus_ids()

    def wait_progress(self, at_least: int, timeout_s: float = 120, daemon: Daemon | None = None) -> int:
        """Until Milvus holds at least `at_least` records; fails early if `daemon` died."""

        seen = {"n": 0}

        def check() -> bool:
            if daemon is not None:
                daemon.assert_running()
            seen["n"] = len(self.milvus_ids(strict=False))
            return seen["n"] >= at_least

        harness.wait_for(check, timeout_s, interval_s=0.5, what=f"{at_least} records in {self.collection}")
        return seen["n"]

    def wait_landed(self, produced: Iterable[Produced], timeout_s: float = 120, daemon: Daemon | None = None) -> None:
        produced = list(produced)

        def check() -> bool:
            if daemon is not None:
                daemon.assert_running()
            return self.ids_of(produced) <= self.milvus_ids(strict=False)

        try:
            harness.wait_for(check, timeout_s, interval_s=0.5, what=f"{len(produced)} records to land in Milvus")
        except AssertionError as exc:
            missing = self.ids_of(produced) - self.milvus_ids(strict=False)
            where = sorted((p.partition, p.offset) for p in produced if p.rec.id in missing)
            committed, ends = self.offsets()
            raise AssertionError(
                f"{exc}: {len(missing)} missing at (partition, offset) {where[:20]}; "
                f"committed {committed}, end offsets {ends}"
            ) from None

    def wait_caught_up(self, timeout_s: float = 120, daemon: Daemon | None = None) -> None:
        def check() -> bool:
            if daemon is not None:
                daemon.assert_running()
            return self.caught_up()

        harness.wait_for(check, timeout_s, interval_s=0.5, what=f"group {self.group} to commit up to the end offsets")


@dataclass
class Daemon:
    """A running `ingestor run` (without --until-caught-up) and its log."""

    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def running(self) -> bool:
        return self.proc.poll() is None

    def assert_running(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(f"ingestor exited with {self.proc.returncode}:\n{self.log()[-4000:]}")

    def wait_log(self, pattern: str, timeout_s: float = 120, count: int = 1) -> None:
        """Until the log holds `count` lines matching the regex `pattern` (fails if it dies first)."""
        regex = re.compile(pattern, re.M)

        def check() -> bool:
            if len(regex.findall(self.log())) >= count:
                return True
            self.assert_running()
            return False

        harness.wait_for(check, timeout_s, interval_s=0.25, what=f"{pattern!r} in {self.log_path.name}")

    def owning(self) -> int:
        """How many partitions it owned after its latest assignment change (0 before the first)."""
        counts = re.findall(r"partitions (?:assigned|revoked): .*\(owning (\d+)\)$", self.log(), re.M)
        return int(counts[-1]) if counts else 0

    def wait_owning(self, accept: Callable[[int], bool], timeout_s: float = 90) -> int:
        """Until the partitions it owns satisfy `accept` (fails if it dies first)."""

        def check() -> bool:
            self.assert_running()
            return accept(self.owning())

        harness.wait_for(check, timeout_s, interval_s=0.25, what=f"an ownership change in {self.log_path.name}")
        return self.owning()

    def wait_ready(self, timeout_s: float = 180) -> None:
        """Until it owns partitions (the model loaded, Milvus and Kafka answered)."""
        self.wait_log(r"partitions assigned: (?!none)\S", timeout_s)

    def terminate(self, timeout_s: float = 90) -> tuple[int, float]:
        """SIGTERM; (exit code, seconds it took to exit)."""
        started = time.monotonic()
        code = harness.stop(self.proc, signal.SIGTERM, timeout_s=timeout_s)
        return code, time.monotonic() - started

    def kill(self) -> int:
        return harness.stop(self.proc, signal.SIGKILL, timeout_s=30)

    def summary(self) -> dict[str, int]:
        return harness.Run(self.proc.returncode or 0, self.log()).summary()


def dump(obj: Any) -> str:
    return json.dumps(obj, default=str, sort_keys=True)
