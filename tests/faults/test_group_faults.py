"""Rebalances mid-stream: a second consumer joins while the first is in the middle of a batch, then
the first leaves (fault matrix row 4)."""

from __future__ import annotations

import re

import pytest

from tests.faults import oracle
from tests.faults.stack import Scenario, sample

pytestmark = pytest.mark.services


def _assigned(log: str) -> list[int]:
    """How many partitions each non-empty assignment in the log gave."""
    return [line.count("[") for line in re.findall(r"partitions assigned: (?!none)(.*)$", log, re.M)]


def test_a_second_consumer_joins_and_the_first_leaves_mid_stream(scenario: Scenario, reference_model):
    scn = scenario
    scn.create_topic(4)
    knobs = {"INGESTOR_BATCH__MAX_IN_FLIGHT_RECORDS": "32", "INGESTOR_KAFKA__MAX_POLL_RECORDS": "16"}
    first = scn.produce(sample(160))
    # The first worker is slow (1.5 s more per batch): it is mid-batch whenever the group changes.
    d1 = scn.start("d1", INGESTOR_FAULT_SLOW_EMBED_MS="1500", **knobs)
    d1.wait_ready()
    scn.wait_progress(10, daemon=d1)
    d2 = scn.start("d2", **knobs)
    d2.wait_ready()
    # The join rebalanced the group: the first worker gave partitions up and got some back.
    d1.wait_log(r"partitions revoked: \S", timeout_s=60)
    d1.wait_log(r"partitions assigned: (?!none)", count=2, timeout_s=60)
    assert _assigned(d1.log())[-1] < 4 and _assigned(d2.log())[-1] < 4, "both should own partitions"
    oracle.check_committed_prefix(scn)
    second = scn.produce(sample(80, offset=160))
    code, took = d1.terminate()  # leaves with work in flight
    assert code == 0, d1.log()[-4000:]
    d2.wait_log(r"partitions assigned: (?!none)", count=2, timeout_s=60)
    scn.wait_landed(first + second, daemon=d2)
    scn.wait_caught_up(daemon=d2)
    assert _assigned(d2.log())[-1] == 4, "the remaining worker should own every partition"
    code, _ = d2.terminate()
    assert code == 0, d2.log()[-4000:]
    facts = oracle.check(scn, reference_model)
    assert facts["rows"] == 240
