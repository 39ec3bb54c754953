"""Liveness and readiness of `ingestor serve`: pure rules over its vitals."""

from __future__ import annotations

from ingestor.serve.health import Vitals, liveness, readiness


def test_alive_while_the_model_thread_runs():
    assert liveness(Vitals()).ok
    dead = Vitals(model_thread_alive=False)
    assert not liveness(dead).ok and not readiness(dead).ok
    assert readiness(dead).reason == "the model thread stopped"


def test_not_ready_while_stopping_or_when_the_collection_has_another_identity():
    assert readiness(Vitals()).ok
    assert readiness(Vitals(stopping=True)).reason == "shutting down"
    refused = readiness(Vitals(refused="written with model=x"))
    assert not refused.ok and "model=x" in refused.reason


def test_a_silent_milvus_leaves_it_ready_and_is_named():
    quiet = Vitals(milvus_silent_s=20.0, milvus_ping_interval_s=5.0, milvus_error="milvus: connection refused")
    status = readiness(quiet)
    assert status.ok and "/search unavailable" in status.reason and "connection refused" in status.reason
    assert readiness(Vitals(milvus_silent_s=10.0, milvus_ping_interval_s=5.0)).reason == "serving"
