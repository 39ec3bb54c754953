"""Fixtures of the unit tests: a pipeline whose collaborators are the fakes of tests/support/fakes.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.fakes import FakeSink, Log, pipeline_with


@pytest.fixture
def world() -> Iterator[tuple]:
    """(pipeline, tracker, log, sink), its threads stopped afterwards if a test started them."""
    log = Log()
    sink = FakeSink(log)
    pipeline, tracker = pipeline_with(log, sink)
    try:
        yield pipeline, tracker, log, sink
    finally:
        if pipeline._threads:
            pipeline.abort()
            pipeline.stop(timeout_s=5)
