"""Fixtures of the fault suite: a dedicated set of services for the whole session (never the
default ones: other tests use those concurrently), and one isolated scenario per test."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest

from tests.faults import oracle
from tests.faults.stack import Scenario, Stack, claim_slot
from tests.support import harness

pytestmark = pytest.mark.services

# pymilvus logs every failed call (the tests poll Milvus while it is down) and warns on every
# strongly consistent iterator against Milvus Lite: the tests' own assertions say what matters.
logging.getLogger("pymilvus").setLevel(logging.CRITICAL)


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    """Kafka, Redis, a Milvus Lite server and a real Milvus server on their own ports and state
    dir (ports 19092, 19093, 16379, 19541, 19531 and .state/faults; a concurrent session of this
    suite gets the next slot, every port + 100); wiped at the end."""
    slot, lock = claim_slot()
    s = Stack(slot)
    try:
        result = harness.services("up", env=s.env, timeout=300)
        if result.returncode != 0:
            pytest.fail(f"services.sh up (fault stack) failed:\n{result.stdout}\n{result.stderr}")
        s.ensure_milvus_server()
        yield s
        s.thaw_all()
    finally:
        harness.services("down", "--wipe", env=s.env, timeout=300)
        os.close(lock)


@pytest.fixture(scope="session")
def reference_model():
    """The model as plain sentence-transformers loads it, one copy for the vectors and the
    oracle's chunks (`oracle.reference_model`)."""
    return oracle.reference_model()


@pytest.fixture
def scenario(stack: Stack, request: pytest.FixtureRequest, tmp_path) -> Iterator[Scenario]:
    """Per test: unique names; afterwards its processes are killed and whatever the test left
    frozen, stopped or reconfigured (if it failed half-way) is repaired for the next one.

    The Milvus Lite server by default; `@pytest.mark.parametrize("scenario", ["lite", "server"],
    indirect=True)` runs a test against each backend."""
    scn = Scenario(stack, request.node.name, tmp_path, backend=getattr(request, "param", "lite"))
    if scn.backend == "server":
        stack.ensure_milvus_server()
    try:
        yield scn
    finally:
        scn.kill_all()
        _repair(stack)


def _repair(stack: Stack) -> None:
    stack.thaw_all()
    stack.milvus_write_quota(deny=False, wait_s=0)
    if not stack.healthy():
        stack.services("up")
    r = stack.redis()
    try:
        r.config_set("maxmemory", "0")
        r.config_set("maxmemory-policy", "noeviction")
    finally:
        r.close()
