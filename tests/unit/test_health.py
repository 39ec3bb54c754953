"""The live and ready rules, over the daemon's vitals."""

from __future__ import annotations

from dataclasses import replace

from ingestor.health import Vitals, liveness, readiness

READY = Vitals(model_loaded=True, started=True, partitions=3)


def test_a_running_daemon_with_partitions_is_alive_and_ready():
    assert liveness(READY).ok
    assert readiness(READY).ok and readiness(READY).reason == "3 partition(s) assigned"
    assert readiness(replace(READY, partitions=0)).reason == "waiting for partitions"


def test_a_stopped_stage_or_a_stuck_consumer_loop_is_not_alive():
    assert not liveness(replace(READY, pipeline_healthy=False)).ok
    assert not liveness(replace(READY, consumer_idle_s=61)).ok
    assert not readiness(replace(READY, consumer_idle_s=61)).ok


def test_not_ready_while_loading_starting_or_stopping():
    assert readiness(replace(READY, model_loaded=False)).reason == "model loading"
    assert readiness(replace(READY, started=False)).reason == "starting"
    assert readiness(replace(READY, stopping=True)).reason == "shutting down"
    assert liveness(replace(READY, model_loaded=False)).ok, "loading the model is not a reason to restart"


def test_milvus_silence_makes_it_not_ready_but_still_alive():
    quiet = replace(READY, milvus_silent_s=16, milvus_ping_interval_s=5, milvus_error="milvus did not answer")
    assert readiness(quiet) == readiness(quiet) and not readiness(quiet).ok
    assert readiness(quiet).reason == "milvus did not answer"
    assert liveness(quiet).ok
    assert readiness(replace(quiet, milvus_silent_s=14)).ok


def test_a_blocked_partition_is_the_readiness_reason():
    why = "docs[0] at offset 7 cannot be decoded (corrupt_batch: ...); retrying"
    status = readiness(replace(READY, blocked=why))
    assert not status.ok and status.reason == why


def test_a_recent_broker_refusal_makes_it_not_ready_with_what_to_fix():
    why = "the brokers refused the login: check kafka.sasl_mechanism, kafka.sasl_username and kafka.sasl_password"
    status = readiness(replace(READY, kafka_refused=why))
    assert not status.ok and status.reason == why
    assert liveness(replace(READY, kafka_refused=why)).ok, "a restart does not fix a password"


def test_a_redis_refusal_leaves_it_ready_and_says_so():
    status = readiness(replace(READY, redis_refused="redis refused the login: check redis.username"))
    assert (
        status.ok
        and status.reason == "3 partition(s) assigned; without the cache: redis refused the login: check redis.username"
    )
