"""Rebalances mid-stream: a second consumer joins while the first is in the middle of a batch, then
the first leaves (fault matrix row 4), under the eager (range) and the cooperative (KIP-429) protocol."""

from __future__ import annotations

import pytest

from tests.faults import oracle
from tests.faults.stack import Daemon, Scenario, sample

pytestmark = pytest.mark.services


# cooperative-sticky passed 13 of 15 runs. Twice, on a loaded machine, the remaining worker took
# over a partition (committed 65, end 70), owned it and never fetched 65-69: a stall, nothing
# committed past it, inside kafka-python 3.0.12's cooperative path as far as our logs show. Until
# that is understood it is not the default, and its test runs with the slow ones.
@pytest.mark.parametrize("assignor", [pytest.param("cooperative-sticky", marks=pytest.mark.slow), "range"])
def test_a_second_consumer_joins_and_the_first_leaves_mid_stream(scenario: Scenario, reference_model, assignor):
    scn = scenario
    scn.create_topic(4)
    scn.settings.update(
        INGESTOR_KAFKA__ASSIGNOR=assignor,
        INGESTOR_BATCH__MAX_IN_FLIGHT_RECORDS="32",
        INGESTOR_KAFKA__MAX_POLL_RECORDS="16",
    )
    first = scn.produce(sample(160))
    d1, d2 = join_a_second_worker(scn)
    if assignor == "cooperative-sticky":
        # Incremental: the first worker kept its other partitions throughout (never owned 0).
        assert "(owning 0)" not in d1.log(), d1.log()[-3000:]
    oracle.check_committed_prefix(scn)
    # While both are members the group commits everything: a partition the first worker got back
    # is read again from its committed offset, not from where its fetches had got to before the
    # revoke (the records in flight then belong to no ownership that may commit them).
    scn.wait_landed(first, daemon=d2)
    scn.wait_caught_up(timeout_s=90, daemon=d1)
    second = scn.produce(sample(80, offset=160))
    code, took = d1.terminate()  # leaves with work in flight
    assert code == 0, d1.log()[-4000:]
    d2.wait_owning(lambda n: n == 4, timeout_s=60)
    scn.wait_landed(first + second, daemon=d2)
    scn.wait_caught_up(daemon=d2)
    code, _ = d2.terminate()
    assert code == 0, d2.log()[-4000:]
    facts = oracle.check(scn, reference_model)
    assert facts["rows"] == 240


def test_a_partition_handed_back_to_its_owner_is_read_again_from_its_commit(scenario: Scenario, reference_model):
    """An eager rebalance revokes everything and may hand a member back partitions it had fetched
    to the end: what it had in flight is dropped (that ownership may not commit it), and kafka-python
    keeps the old fetch position. Unless the member seeks back to the committed offset, those
    records are never read again and the partition never commits (found with two workers per GPU
    under `--until-caught-up`, which then never exited)."""
    scn = scenario
    scn.create_topic(4)
    # Everything fits in flight at once: the first worker fetches all of it before it is done.
    scn.settings.update(
        INGESTOR_KAFKA__ASSIGNOR="range",
        INGESTOR_BATCH__MAX_IN_FLIGHT_RECORDS="1000",
        INGESTOR_KAFKA__MAX_POLL_RECORDS="500",
    )
    produced = scn.produce(sample(160))
    d1, d2 = join_a_second_worker(scn)
    scn.wait_landed(produced, daemon=d1)
    scn.wait_caught_up(timeout_s=90, daemon=d1)
    for d in (d1, d2):
        code, _ = d.terminate()
        assert code == 0, d.log()[-4000:]
    facts = oracle.check(scn, reference_model)
    assert facts["rows"] == 160


def join_a_second_worker(scn: Scenario) -> tuple[Daemon, Daemon]:
    """A slow first worker on all four partitions (1.5 s more per batch: it is mid-batch whenever
    the group changes), then a second one joins; returns both once they share the partitions."""
    d1 = scn.start("d1", INGESTOR_FAULT_SLOW_EMBED_MS="1500")
    d1.wait_ready()
    assert d1.owning() == 4
    scn.wait_progress(10, daemon=d1)
    d2 = scn.start("d2")
    d2.wait_ready()
    # The join moved partitions: the first worker revoked some (all of them, under eager) and
    # both end up owning a share.
    d1.wait_log(r"partitions revoked: \S", timeout_s=60)
    d1.wait_owning(lambda n: 0 < n < 4)
    d2.wait_owning(lambda n: 0 < n < 4)
    return d1, d2
