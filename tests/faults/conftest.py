"""Fixtures of the fault suite: a dedicated set of services for the whole session (never the
default ones: other tests use those concurrently), and one isolated scenario per test."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from tests import harness
from tests.faults.stack import SERVICES_ENV, Scenario, Stack

pytestmark = pytest.mark.services

# pymilvus warns on every strongly consistent iterator against Milvus Lite; the tests poll often.
logging.getLogger("pymilvus").setLevel(logging.ERROR)


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    """Kafka, Redis and a Milvus Lite *server* on their own ports and state dir; wiped at the end."""
    s = Stack()
    result = harness.services("up", env=SERVICES_ENV, timeout=300)
    if result.returncode != 0:
        pytest.fail(f"services.sh up (fault stack) failed:\n{result.stdout}\n{result.stderr}")
    yield s
    s.thaw_all()
    harness.services("down", "--wipe", env=SERVICES_ENV, timeout=300)


@pytest.fixture
def scenario(stack: Stack, request: pytest.FixtureRequest, tmp_path) -> Iterator[Scenario]:
    """Per test: unique names, and the stack as the test found it afterwards — whatever a failed
    test left frozen, stopped or reconfigured is repaired before the next one runs."""
    _repair(stack)
    scn = Scenario(stack, request.node.name, tmp_path)
    try:
        yield scn
    finally:
        scn.kill_all()
        _repair(stack)


def _repair(stack: Stack) -> None:
    stack.thaw_all()
    if not stack.healthy():
        stack.services("up")
    r = stack.redis()
    try:
        r.config_set("maxmemory", "0")
        r.config_set("maxmemory-policy", "noeviction")
    finally:
        r.close()

