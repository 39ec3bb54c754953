"""A seeded soak (fault matrix row 20): records keep arriving while random faults from the matrix
hit at random moments — kill -9 of the daemon, the broker frozen or restarted, Redis restarted
empty, Milvus stopped and started. Among the records, a few long documents (many chunks each, with
chunking on as the fault stack runs it), and later versions of some of them: shrunk to their first
third, edited in one paragraph, deleted. Every oracle holds at the end, chunk by chunk, and the
committed-prefix invariant after each fault. The seed is printed; INGESTOR_SOAK_SEED=N replays a
run."""

from __future__ import annotations

import os
import random
import signal
import time
from dataclasses import dataclass

import pytest

from bench.corpus import edit_middle_paragraph, long_documents
from tests.faults import oracle
from tests.faults.stack import Daemon, Rec, Scenario, doc, poison, sample, tombstone

pytestmark = pytest.mark.services

FAULTS = (
    "kill_daemon",
    "freeze_kafka",
    "restart_kafka",
    "restart_redis",
    "stop_milvus",
    "kill_milvus",
    "freeze_milvus",
    "peer_joins_and_leaves",
)
KNOBS = {
    "INGESTOR_BATCH__MAX_IN_FLIGHT_RECORDS": "64",
    "INGESTOR_KAFKA__MAX_POLL_RECORDS": "32",
    "INGESTOR_REDIS__RETRY_AFTER_MS": "1000",
}
POISON = [
    poison(None, b"\xff\xfe not utf-8", "invalid_utf8"),
    poison(None, b'{"text": ', "invalid_json"),
    poison(None, b'{"text": "   "}', "blank_text"),
    poison(None, b"[1, 2, 3]", "not_an_object"),
]


def long_versions(rng: random.Random, n: int, max_chars: int) -> tuple[list[Rec], list[Rec]]:
    """`n` long documents (`bench.corpus.long_documents`, 4,000 to `max_chars` characters) and
    later versions of some of them: a third of them shrunk to their first third of paragraphs (a
    shrink deletes the chunks past the new count), one edited in its middle paragraph, one deleted."""
    pool = [d for d in long_documents() if 4_000 <= len(d.text) <= max_chars]
    picked = rng.sample(pool, n)
    first = [doc({"id": d.id, "text": d.text, "metadata": d.metadata}) for d in picked]
    later: list[Rec] = []
    shrunk = max(1, n // 3)
    for d in picked[:shrunk]:
        paragraphs = d.text.split("\n\n")
        later.append(
            doc({"id": d.id, "text": "\n\n".join(paragraphs[: max(1, len(paragraphs) // 3)]), "metadata": d.metadata})
        )
    if n > shrunk:
        d = picked[shrunk]
        later.append(doc({"id": d.id, "text": edit_middle_paragraph(d.text), "metadata": d.metadata}))
    if n > shrunk + 1:
        later.append(tombstone(picked[shrunk + 1].id))
    return first, later


@dataclass
class Soak:
    scn: Scenario
    rng: random.Random
    daemon: Daemon | None = None
    log: list[str] | None = None

    def note(self, what: str) -> None:
        line = f"[soak +{time.monotonic() - self.t0:6.1f}s] {what}"
        print(line, flush=True)
        self.log.append(line)

    def __post_init__(self) -> None:
        self.t0 = time.monotonic()
        self.log = []

    def ensure_daemon(self) -> Daemon:
        if self.daemon is None or not self.daemon.running():
            if self.daemon is not None:
                raise AssertionError(
                    f"the daemon exited by itself ({self.daemon.proc.returncode}):\n{self.daemon.log()[-4000:]}"
                )
            self.daemon = self.scn.start("soak", **KNOBS)
            self.daemon.wait_ready()
            self.note("daemon started")
        return self.daemon

    def wait_some_progress(self) -> None:
        """A random moment: until Milvus holds a few more records (or all that were produced)."""
        d = self.ensure_daemon()
        now = len(self.scn.milvus_ids())
        target = min(now + self.rng.randint(5, 40), len(self.scn.ids_of(self.scn.produced)))
        self.scn.wait_progress(target, timeout_s=180, daemon=d)

    def inject(self, fault: str) -> None:
        stack, rng = self.scn.stack, self.rng
        self.note(f"fault: {fault}")
        if fault == "kill_daemon":
            assert self.daemon is not None
            self.daemon.proc.send_signal(signal.SIGKILL)
            self.daemon.proc.wait(timeout=30)
            self.daemon = None
        elif fault == "freeze_kafka":
            with stack.frozen("kafka"):
                time.sleep(rng.uniform(2, 8))  # the outage itself
        elif fault == "restart_kafka":
            stack.services("restart", "kafka")
        elif fault == "restart_redis":
            stack.services("restart", "redis")
        elif fault in ("stop_milvus", "kill_milvus"):
            if fault == "kill_milvus":
                stack.signal(self.scn.milvus_service, signal.SIGKILL)
                stack.services("stop", self.scn.milvus_service)  # until the killed process is gone
            else:
                stack.services("stop", self.scn.milvus_service)
            try:
                time.sleep(rng.uniform(2, 8))  # the outage itself
            finally:
                stack.services("start", self.scn.milvus_service)
        elif fault == "freeze_milvus":
            # Shorter than the server's etcd session TTL (30 s), which a longer freeze outlives.
            with stack.frozen(self.scn.milvus_service):
                time.sleep(rng.uniform(2, 8))
        elif fault == "peer_joins_and_leaves":
            # A second worker takes a share of the partitions, works a little, then leaves
            # cleanly or dies; its share moves back to the first.
            peer = self.scn.start("soak-peer", **KNOBS)
            peer.wait_ready()
            self.wait_some_progress()
            if rng.random() < 0.5:
                code, _ = peer.terminate()
                assert code == 0, peer.log()[-4000:]
            else:
                peer.kill()
            self.note("peer gone")
        else:
            raise ValueError(fault)
        oracle.check_committed_prefix(self.scn)


def soak(
    scn: Scenario,
    reference_model,
    seed: int,
    records: int,
    faults: int,
    long_docs: int = 6,
    long_max_chars: int = 12_000,
) -> None:
    rng = random.Random(seed)
    print(
        f"\nsoak seed {seed} ({records} records and {long_docs} long documents, {faults} faults, chunking "
        f"{'on' if scn.chunked else 'off'}): INGESTOR_SOAK_SEED={seed} replays it",
        flush=True,
    )
    scn.create_topic(4)
    stream: list[Rec] = list(sample(records))
    for bad in POISON:
        stream.insert(rng.randrange(len(stream)), bad)
    parts = [stream[i * len(stream) // (faults + 1) : (i + 1) * len(stream) // (faults + 1)] for i in range(faults + 1)]
    # The long documents go into the first part, their later versions into later ones (a fault
    # between): a shrink then finds the longer version's chunks written, and deletes its surplus.
    first, later = long_versions(rng, long_docs, long_max_chars)
    for rec in first:
        parts[0].insert(rng.randrange(len(parts[0]) + 1), rec)
    for rec in later:
        part = parts[rng.randrange(1, len(parts))]
        part.insert(rng.randrange(len(part) + 1), rec)
    s = Soak(scn, rng)
    try:
        for i, part in enumerate(parts[:-1]):
            landed = scn.produce(part)
            if i == 0:
                scn.wait_landed([p for p in landed if p.rec in first], timeout_s=300, daemon=s.ensure_daemon())
            s.wait_some_progress()
            s.inject(rng.choice(FAULTS))
        scn.produce(parts[-1])
        d = s.ensure_daemon()
        scn.wait_caught_up(timeout_s=300, daemon=d)
        code, _ = d.terminate()
        assert code == 0, d.log()[-4000:]
        s.note("caught up; oracle")
        oracle.check(scn, reference_model, allow_dlq_duplicates=True)
    except BaseException:
        print("\n".join(s.log or []), flush=True)
        print(f"soak seed {seed}: INGESTOR_SOAK_SEED={seed} replays it", flush=True)
        raise


def _seed(default: int | None) -> int:
    value = os.environ.get("INGESTOR_SOAK_SEED")
    if value:
        return int(value)
    return default if default is not None else random.SystemRandom().randrange(1 << 31)


# The server, the production sink, in CI; Lite with the slow tests.
@pytest.mark.parametrize("scenario", [pytest.param("lite", marks=pytest.mark.slow), "server"], indirect=True)
def test_soak_short(scenario: Scenario, reference_model):
    soak(scenario, reference_model, _seed(20), records=400, faults=3)


@pytest.mark.slow
def test_soak_long(scenario: Scenario, reference_model):
    soak(scenario, reference_model, _seed(None), records=3000, faults=12, long_docs=12, long_max_chars=40_000)
