"""Scale-out against a real Milvus server: a supervisor's workers and independent daemons in one
consumer group, through kills and restarts; and a dozen consumers churning for minutes. The oracle
checks the end record by record."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time

import numpy as np
import pytest

from tests.faults import oracle
from tests.faults.stack import Daemon, Scenario, doc, sample
from tests.support import harness
from tests.support.hooks import stand_in_vector

pytestmark = pytest.mark.services


def _workers_of(supervisor: Daemon) -> list[int]:
    out = subprocess.run(
        ["pgrep", "-P", str(supervisor.proc.pid), "-f", "ingestor run"], capture_output=True, text=True, check=False
    )
    return [int(p) for p in out.stdout.split()]


@pytest.mark.parametrize("scenario", ["server"], indirect=True)
def test_a_supervisors_workers_and_independent_daemons_share_one_group_through_kills(
    scenario: Scenario, reference_model
):
    scn = scenario
    scn.create_topic(12)
    produced = scn.produce(sample(1500))
    knobs = dict(INGESTOR_KAFKA__SESSION_TIMEOUT_MS="10000", INGESTOR_KAFKA__HEARTBEAT_INTERVAL_MS="1000")
    supervisor = scn.start("supervisor", args=("--devices", "cpu", "--workers", "2"), **knobs)
    a = scn.start("a", **knobs)
    b = scn.start("b", **knobs)
    harness.wait_for(lambda: len(_workers_of(supervisor)) == 2, 60, what="the supervisor's two workers")
    scn.wait_progress(150, timeout_s=300, daemon=a)
    victim = _workers_of(supervisor)[0]
    os.kill(victim, signal.SIGKILL)  # one worker dies mid-stream; the supervisor restarts it
    harness.wait_for(
        lambda: victim not in _workers_of(supervisor) and len(_workers_of(supervisor)) == 2,
        120,
        what="the supervisor to restart its worker",
    )
    scn.wait_progress(450, timeout_s=300, daemon=a)
    code, _ = b.terminate()  # one daemon stops cleanly, and comes back
    assert code == 0, b.log()[-4000:]
    b = scn.start("b-again", **knobs)
    scn.wait_landed(produced, timeout_s=600, daemon=a)
    scn.wait_caught_up(timeout_s=120, daemon=a)
    for d in (supervisor, a, b):
        code, _ = d.terminate(timeout_s=120)
        assert code == 0, d.log()[-4000:]
    assert "worker 0" in supervisor.log() and "restarting" in supervisor.log()
    facts = oracle.check(scn, reference_model)
    assert facts["rows"] == 1500


# 90 s of churn in CI, 210 with the slow tests (INGESTOR_SLOW_TESTS=1).
CHURN_S = float(
    os.environ.get("INGESTOR_CHURN_SECONDS", "210" if os.environ.get("INGESTOR_SLOW_TESTS") == "1" else "90")
)
CONSUMERS = 12


@pytest.mark.timeout(CHURN_S + 600)
@pytest.mark.parametrize("scenario", ["server"], indirect=True)
def test_a_dozen_consumers_joining_and_leaving_for_minutes_lose_and_duplicate_nothing(scenario: Scenario):
    """Consumers join and leave (SIGTERM or SIGKILL) at random while records keep arriving; a
    stand-in model keeps a dozen daemons in memory. Seeded: INGESTOR_CHURN_SEED=N replays a run."""
    scn = scenario
    seed = int(os.environ.get("INGESTOR_CHURN_SEED", "12"))
    rng = random.Random(seed)
    scn.create_topic(12)
    scn.chunking = False  # the stand-in model has no tokenizer to cut chunks with: one entity per record
    scn.settings.update(
        INGESTOR_FAULT_STAND_IN_MODEL="1",
        INGESTOR_KAFKA__SESSION_TIMEOUT_MS="6000",
        INGESTOR_KAFKA__HEARTBEAT_INTERVAL_MS="1000",
        INGESTOR_BATCH__MAX_WAIT_MS="50",
    )
    texts = [r["text"] for r in harness.sample_records(3000)]
    live: list[Daemon] = []
    started = left = killed = 0
    n = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < CHURN_S:
        scn.produce([doc({"id": f"churn-{n + i}", "text": texts[(n + i) % len(texts)]}) for i in range(20)])
        n += 20
        live = [d for d in live if d.running()]
        if len(live) < CONSUMERS and (not live or rng.random() < 0.5):
            live.append(scn.start(f"c{started}"))
            started += 1
        elif len(live) > 1 and rng.random() < 0.3:
            d = live.pop(rng.randrange(len(live)))
            if rng.random() < 0.5:
                code, _ = d.terminate()
                assert code == 0, d.log()[-4000:]
                left += 1
            else:
                d.kill()
                killed += 1
        time.sleep(rng.uniform(0.5, 2.0))
    print(f"\nchurn seed {seed}: {started} consumers started, {left} left, {killed} killed, {n} records", flush=True)
    assert started >= CONSUMERS and left and killed
    for d in live:
        code, _ = d.terminate(timeout_s=120)
        assert code == 0, d.log()[-4000:]
    drain = scn.run(timeout=600)
    assert drain.returncode == 0, drain.output[-4000:]

    rows = harness.milvus_rows(scn.milvus_uri, scn.collection, fields=("id", "vector"))
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)), "an id is stored twice"
    assert set(ids) == {f"churn-{i}" for i in range(n)}
    for r in rows:
        want = stand_in_vector(texts[int(r["id"].split("-")[1]) % len(texts)])
        got = np.asarray(r["vector"], dtype=np.float32)
        assert float(np.dot(got / np.linalg.norm(got), want)) >= 0.999, r["id"]
    committed, ends = scn.offsets()
    assert committed == ends
    assert not oracle.dead_letters(scn)
