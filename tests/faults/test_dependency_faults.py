"""Faults of the services around the daemon, while it runs: Kafka frozen and restarted, Milvus
stopped, Redis killed, hung, full and emptied, the dead-letter topic refusing writes (fault matrix
rows 6, 7, 9, 10, 11, 16). Each ends with the oracle."""

from __future__ import annotations

import signal
import time

import pytest
import redis as redis_lib

from tests.faults import oracle
from tests.faults.stack import Scenario, poison, sample
from tests.support import harness

pytestmark = pytest.mark.services

OUTAGE_S = 10  # how long each outage lasts: the fault itself, not a wait for something to happen
FREEZE_S = 4  # how long a frozen Milvus server is held after the daemon saw it fail


def test_broker_frozen_then_restarted_ingestion_resumes(scenario: Scenario, reference_model):
    scn = scenario
    scn.create_topic(4)
    first = scn.produce(sample(150))
    d = scn.start(INGESTOR_BATCH__MAX_IN_FLIGHT_RECORDS="32", INGESTOR_KAFKA__MAX_POLL_RECORDS="16")
    d.wait_ready()
    scn.wait_progress(10, daemon=d)
    with scn.stack.frozen("kafka"):
        time.sleep(OUTAGE_S)
        d.assert_running()
    oracle.check_committed_prefix(scn)
    scn.wait_landed(first, daemon=d)
    scn.wait_caught_up(daemon=d)

    scn.stack.services("restart", "kafka")
    d.assert_running()
    second = scn.produce(sample(60, offset=150))
    scn.wait_landed(second, daemon=d)
    scn.wait_caught_up(daemon=d)
    code, _ = d.terminate()
    assert code == 0, d.log()[-4000:]
    oracle.check(scn, reference_model)


@pytest.mark.parametrize("scenario", ["lite", "server"], indirect=True)
def test_milvus_stopped_pauses_commits_and_resumes(scenario: Scenario, reference_model):
    scn = scenario
    scn.create_topic(4)
    first = scn.produce(sample(200))
    d = scn.start(INGESTOR_BATCH__MAX_IN_FLIGHT_RECORDS="32", INGESTOR_KAFKA__MAX_POLL_RECORDS="16")
    d.wait_ready()
    scn.wait_progress(20, daemon=d)
    scn.stack.services("stop", scn.milvus_service)
    try:
        # Retry 3 comes > 1 s after the first failure: commits of work done before it have landed.
        d.wait_log(r"milvus unavailable, retry 3 ", timeout_s=60)
        before = scn.committed()
        time.sleep(OUTAGE_S)
        during = scn.committed()
        d.assert_running()
    finally:
        scn.stack.services("start", scn.milvus_service)
    assert during == before, f"committed moved while Milvus was down: {before} -> {during}"
    assert sum(during.values()) < 200
    oracle.check_committed_prefix(scn, during)
    scn.wait_landed(first, daemon=d)
    scn.wait_caught_up(daemon=d)
    assert "milvus recovered" in d.log()
    code, _ = d.terminate()
    assert code == 0, d.log()[-4000:]
    oracle.check(scn, reference_model)


@pytest.mark.parametrize("scenario", ["server"], indirect=True)
def test_milvus_server_killed_then_frozen_mid_stream_commits_nothing_meanwhile(scenario: Scenario, reference_model):
    """Row 7 against a real Milvus server: kill -9 of the server mid-stream, then a SIGSTOP
    (shorter than its etcd session TTL, which a longer freeze outlives: the server then exits)."""
    scn = scenario
    scn.create_topic(4)
    # Calls to a frozen server fail by their timeout: a short one keeps the freeze (3 failed calls,
    # then OUTAGE_S) well under the server's 30 s session TTL, which a longer freeze would outlive.
    d = scn.start(
        INGESTOR_BATCH__MAX_IN_FLIGHT_RECORDS="32",
        INGESTOR_KAFKA__MAX_POLL_RECORDS="16",
        INGESTOR_MILVUS__TIMEOUT_S="2",
    )
    d.wait_ready()
    for n, outage in enumerate(("killed", "frozen")):
        # Records arrive before each outage, so that it hits writes in flight.
        batch = scn.produce(sample(150, offset=150 * n))
        scn.wait_progress(150 * n + 20, daemon=d)
        retries = d.log().count("milvus unavailable, retry 3 ")
        scn.stack.signal(scn.milvus_service, signal.SIGKILL if outage == "killed" else signal.SIGSTOP)
        try:
            d.wait_log(r"milvus unavailable, retry 3 ", timeout_s=90, count=retries + 1)
            before = scn.committed()
            # A frozen server's etcd lease runs on: the freeze (the calls that fail first, then
            # this) must stay well inside its session TTL even on a slow machine, or some of its
            # components expire and the server is left half-alive.
            time.sleep(OUTAGE_S if outage == "killed" else FREEZE_S)
            during = scn.committed()
            d.assert_running()
        finally:
            if outage == "killed":
                scn.stack.services("start", scn.milvus_service)
            else:
                scn.stack.signal(scn.milvus_service, signal.SIGCONT)
        assert during == before, f"committed moved while Milvus was {outage}: {before} -> {during}"
        assert sum(during.values()) < 150 * (n + 1)
        oracle.check_committed_prefix(scn, during)
        scn.wait_landed(batch, timeout_s=240, daemon=d)
    scn.wait_caught_up(daemon=d)
    code, _ = d.terminate()
    assert code == 0, d.log()[-4000:]
    oracle.check(scn, reference_model)


@pytest.mark.parametrize("scenario", ["server"], indirect=True)
def test_milvus_denying_writes_by_quota_is_an_outage_not_a_dead_letter(scenario: Scenario, reference_model):
    scn = scenario
    scn.create_topic(4)
    first = scn.produce(sample(60))
    d = scn.start(INGESTOR_BATCH__MAX_IN_FLIGHT_RECORDS="32", INGESTOR_KAFKA__MAX_POLL_RECORDS="16")
    d.wait_ready()
    scn.wait_landed(first, daemon=d)
    scn.stack.milvus_write_quota(deny=True)
    try:
        second = scn.produce(sample(60, offset=60))
        d.wait_log(r"milvus unavailable, retry 3 .*quota exceeded", timeout_s=90)
        before = scn.committed()
        time.sleep(OUTAGE_S)
        assert scn.committed() == before, "committed moved while Milvus denied every write"
        d.assert_running()
    finally:
        scn.stack.milvus_write_quota(deny=False)
    scn.wait_landed(second, timeout_s=120, daemon=d)
    scn.wait_caught_up(daemon=d)
    code, _ = d.terminate()
    assert code == 0, d.log()[-4000:]
    assert not oracle.dead_letters(scn)
    oracle.check(scn, reference_model)


def _markers_resume(scn: Scenario, start: int) -> None:
    """Feed small batches until their cache markers get written again: the cache came back."""
    state = {"offset": start}

    def fed_and_marked() -> bool:
        batch = scn.produce(sample(5, offset=state["offset"]))
        state["offset"] += 5
        scn.wait_landed(batch, timeout_s=60)
        marked = oracle.check_markers(scn, scn.milvus_ids())
        return scn.ids_of(batch) <= marked

    harness.wait_for(fed_and_marked, 90, interval_s=0.5, what="cache writes to resume after Redis returned")


# Redis's faults do not depend on the Milvus backend: the server's run is with the slow tests.
@pytest.mark.parametrize("scenario", ["lite", pytest.param("server", marks=pytest.mark.slow)], indirect=True)
def test_redis_killed_then_hung_never_stalls_ingestion(scenario: Scenario, reference_model):
    scn = scenario
    scn.create_topic(4)
    scn.settings["INGESTOR_REDIS__RETRY_AFTER_MS"] = "1000"
    first = scn.produce(sample(40))
    d = scn.start()
    d.wait_ready()
    scn.wait_landed(first, daemon=d)
    assert oracle.check_markers(scn, scn.milvus_ids()), "markers should be written while Redis is up"

    scn.stack.signal("redis", 9)  # killed
    harness.wait_for(lambda: not _redis_answers(scn), 30, what="redis to be gone")
    while_down = scn.produce(sample(60, offset=40))
    scn.wait_landed(while_down, timeout_s=60, daemon=d)  # no stall: records land while Redis is down
    scn.stack.services("start", "redis")
    _markers_resume(scn, start=100)

    with scn.stack.frozen("redis"):  # hung: connections open, no answers
        while_hung = scn.produce(sample(60, offset=200))
        scn.wait_landed(while_hung, timeout_s=60, daemon=d)
    _markers_resume(scn, start=260)
    scn.wait_caught_up(daemon=d)
    code, _ = d.terminate()
    assert code == 0, d.log()[-4000:]
    log = d.log()
    assert "bypassing the cache" in log
    oracle.check(scn, reference_model)


def _redis_answers(scn: Scenario) -> bool:
    r = scn.stack.redis()
    try:
        return bool(r.ping())
    except redis_lib.RedisError:
        return False
    finally:
        r.close()


def test_redis_full_write_errors_are_counted_and_ingestion_goes_on(scenario: Scenario, reference_model):
    scn = scenario
    scn.create_topic(4)
    scn.produce(sample(120))
    r = scn.stack.redis()
    try:
        # Well over the limit (a filler of 2 MB), so that no write slips through a small dip.
        r.set(f"{scn.key_prefix}:filler", b"x" * (2 << 20))
        r.config_set("maxmemory-policy", "noeviction")
        r.config_set("maxmemory", "1mb")
        with pytest.raises(redis_lib.ResponseError, match="maxmemory"):
            r.set(f"{scn.key_prefix}:probe", b"x")
        result = scn.run()
        assert result.returncode == 0, result.output[-4000:]
        assert "redis store refused" in result.output and "maxmemory" in result.output
        assert result.summary()["upserted"] == 120
        assert not oracle.markers(scn), "every cache write should have been refused"
        # Then evicting (allkeys-lru) with little room: a replay writes the cache, Redis evicts.
        r.delete(f"{scn.key_prefix}:filler")
        r.config_set("maxmemory", "0")
        used = int(r.info("memory")["used_memory"])
        evicted_before = int(r.info("stats")["evicted_keys"])
        r.config_set("maxmemory-policy", "allkeys-lru")
        r.config_set("maxmemory", str(used + (120 << 10)))
        scn.group = harness.unique("g-lru")
        second = scn.run()
        assert second.returncode == 0, second.output[-4000:]
        assert int(r.info("stats")["evicted_keys"]) > evicted_before, "the cache should have evicted keys"
        # A replay over what survived: evicted markers and vectors only cost re-embedding.
        scn.group = harness.unique("g-after-lru")
        facts = oracle.check(scn, reference_model)
        s = facts["drain"].summary()
        assert s["skipped"] + s["upserted"] == 120 and s["upserted"] > 0, s
    finally:
        r.config_set("maxmemory", "0")
        r.config_set("maxmemory-policy", "noeviction")
        r.delete(f"{scn.key_prefix}:filler")
        r.close()


def test_redis_restarted_empty_replay_re_embeds_without_duplicates(scenario: Scenario, reference_model):
    scn = scenario
    scn.create_topic(4)
    produced = scn.produce(sample(120))
    first = scn.run()
    assert first.returncode == 0, first.output[-4000:]
    assert len(oracle.check_markers(scn, scn.milvus_ids())) == 120
    scn.stack.services("restart", "redis")
    assert not oracle.markers(scn), "redis has no persistence: it should come back empty"
    scn.group = harness.unique("g-replay")  # replay the whole topic
    facts = oracle.check(scn, reference_model)
    s = facts["drain"].summary()
    # Nothing cached any more: every text (every chunk) embedded again, every id written again,
    # nothing skipped.
    texts = oracle.model_texts(scn, [p.rec.text for p in produced if p.rec.text is not None], reference_model)
    assert s["embedded"] == len(texts) and s["upserted"] == 120 and s["skipped"] == 0 and s["cache_hits"] == 0, s
    assert facts["rows"] == 120


def test_unwritable_dlq_holds_the_poison_record_offset_until_it_is_written(scenario: Scenario, reference_model):
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

    scn = scenario
    scn.create_topic(1)
    # Every write to this DLQ is refused by the broker (MESSAGE_TOO_LARGE).
    harness.create_topic(scn.dlq_topic, 1, bootstrap=scn.stack.kafka, topic_configs={"max.message.bytes": "10"})
    first = scn.produce(sample(20))
    d = scn.start(INGESTOR_DLQ__ACK_TIMEOUT_MS="3000")
    d.wait_ready()
    scn.wait_landed(first, daemon=d)
    scn.wait_caught_up(daemon=d)
    bad = scn.produce([poison(None, b"[1, 2, 3]", "not_an_object")])
    scn.produce(sample(20, offset=20))
    d.wait_log(r"dlq unavailable, retry 3 ", timeout_s=90)
    assert scn.committed() == {0: bad[0].offset}, "the poison record's offset must not be committed"
    d.wait_log(r"dlq unavailable, retry 5 ", timeout_s=90)
    assert scn.committed() == {0: bad[0].offset}
    assert oracle.dead_letters(scn) == []
    oracle.check_committed_prefix(scn)

    admin = KafkaAdminClient(bootstrap_servers=scn.stack.kafka)
    try:
        admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, scn.dlq_topic, configs={"max.message.bytes": "1048588"})]
        )
    finally:
        admin.close()
    scn.wait_caught_up(daemon=d)
    assert len(oracle.dead_letters(scn)) == 1
    code, _ = d.terminate()
    assert code == 0, d.log()[-4000:]
    oracle.check(scn, reference_model)
