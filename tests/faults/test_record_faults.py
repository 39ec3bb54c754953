"""Faults in the data and in the set-up: poison records of every kind among good ones, tombstones,
identical texts across partitions, two processes on one Milvus Lite file, a collection of another
dimension (fault matrix rows 12, 13, 14, 15, 18, 19)."""

from __future__ import annotations

import pytest

from tests.faults import oracle
from tests.faults.stack import Rec, Scenario, doc, poison, sample, tombstone
from tests.integration.test_end_to_end import BAD_RECORDS
from tests.support import harness

pytestmark = pytest.mark.services


def test_poison_records_and_tombstones_among_good_ones(scenario: Scenario, reference_model):
    scn = scenario
    scn.create_topic(4)
    scn.settings["INGESTOR_KAFKA__MAX_RECORD_BYTES"] = "100000"
    good = sample(140)
    bad = [poison(k, v, reason) for k, v, reason in BAD_RECORDS]
    # Deleted within the same stream, and one inserted now and deleted by a later run.
    gone = doc({"id": "deleted-in-stream", "text": "Written, then deleted by the tombstone that follows."})
    later = doc({"id": "deleted-later", "text": "Written by the first run, deleted by the second."})
    stream: list[Rec] = []
    for i, g in enumerate(good):
        stream.append(g)
        if i % 10 == 5 and bad:
            stream.append(bad.pop(0))
        if i == 30:
            stream.append(gone)
        if i == 100:
            stream.append(tombstone("deleted-in-stream"))
    stream += bad + [later]
    scn.produce(stream)
    first = scn.run()
    assert first.returncode == 0, first.output[-4000:]
    s = first.summary()
    assert s["dead_lettered"] == len(BAD_RECORDS), s
    in_milvus = scn.milvus_ids()
    assert "deleted-later" in in_milvus and "deleted-in-stream" not in in_milvus
    assert oracle.marker_of(scn, "deleted-later") in oracle.markers(scn), "its cache marker should exist"

    scn.produce([tombstone("deleted-later")])
    facts = oracle.check(scn, reference_model)
    assert facts["drain"].summary()["deleted"] == 1
    assert "deleted-later" not in scn.milvus_ids()
    assert oracle.marker_of(scn, "deleted-later") not in oracle.markers(scn), "the marker goes with the entity"


def test_identical_texts_across_partitions_are_embedded_once(scenario: Scenario, reference_model):
    scn = scenario
    scn.create_topic(4)
    base = harness.sample_records(60, offset=400)
    recs = [doc({**r, "id": f"{r['id']}~{copy}"}) for r in base for copy in "ab"]
    # The two copies of a text go to two different partitions.
    scn.produce(recs, partition=[(i // 2 + i % 2) % 4 for i in range(len(recs))])
    # One window holds all 120 records (cut by time, not by size): each text is one unit of it.
    result = scn.run(
        INGESTOR_BATCH__MAX_WAIT_MS="3000",
        INGESTOR_BATCH__MAX_BATCH_RECORDS="256",
        INGESTOR_BATCH__MAX_BATCH_TOKENS="1000000",
    )
    assert result.returncode == 0, result.output[-4000:]
    s = result.summary()
    texts = oracle.model_texts(scn, [r["text"] for r in base], reference_model)  # chunks, with chunking
    assert s["embedded"] == len(texts) and s["upserted"] == 120, s
    oracle.check(scn, reference_model)


def test_two_processes_on_one_milvus_lite_file_the_second_refuses(scenario: Scenario, reference_model, tmp_path):
    scn = scenario
    scn.milvus_uri = str(tmp_path / "lite" / "shared.db")
    scn.create_topic(2)
    scn.produce(sample(30))
    d = scn.start()
    d.wait_ready()
    second = scn.run(timeout=180)
    assert second.returncode == 2, second.output[-4000:]
    message = " ".join(second.output.split())  # the console wraps long lines
    assert "another process is using the Milvus Lite file" in message, second.output[-2000:]
    assert "python -m ingestor.lite" in message, second.output[-2000:]
    scn.wait_caught_up(daemon=d)
    code, _ = d.terminate()
    assert code == 0, d.log()[-4000:]
    oracle.check(scn, reference_model)


@pytest.mark.parametrize("scenario", ["lite", "server"], indirect=True)
def test_a_collection_of_another_dimension_refuses_to_start(scenario: Scenario):
    from pymilvus import DataType, MilvusClient

    from ingestor.milvus_schema import schema_fields

    scn = scenario
    scn.create_topic(1)
    scn.produce(sample(5))
    client = MilvusClient(uri=scn.milvus_uri)
    try:
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False, description="other model")
        for name, (type_name, params) in schema_fields(scn.chunked).items():  # only the dimension differs
            extra = dict(params, dim=128) if name == "vector" else dict(params)
            schema.add_field(name, getattr(DataType, type_name), is_primary=(name == "id"), **extra)
        index = client.prepare_index_params()
        index.add_index("vector", index_type="AUTOINDEX", metric_type="COSINE")
        client.create_collection(scn.collection, schema=schema, index_params=index)
    finally:
        client.close()
    result = scn.run(timeout=180)
    assert result.returncode == 2, result.output[-4000:]
    message = " ".join(result.output.split())  # the console wraps long lines
    assert "vector dimension is 128" in message and "produces 384" in message, result.output[-2000:]
    committed, _ = scn.offsets()
    assert all(c is None for c in committed.values()), "nothing may be consumed"
    with harness.milvus(scn.milvus_uri) as client:
        info = client.describe_collection(scn.collection)
    dims = [f["params"].get("dim") for f in info["fields"] if f["name"] == "vector"]
    assert [int(x) for x in dims] == [128], "the existing collection must be left as it was"


def _refused(marker: str, reason: str, n: int, offset: int) -> list[Rec]:
    """Good-looking records the fault hooks single out by `marker` in their id or text."""
    out = []
    for r in harness.sample_records(n, offset):
        rec = doc({**r, "id": f"{r['id']}{marker}", "text": f"{r['text']} {marker}"})
        out.append(poison(rec.key, rec.value, reason))
    return out


def _interleave(good: list[Rec], bad: list[Rec], every: int) -> list[Rec]:
    stream, bad = [], list(bad)
    for i, g in enumerate(good):
        stream.append(g)
        if i % every == every // 2 and bad:
            stream.append(bad.pop(0))
    return stream + bad


def _ingest_in_big_batches(scn: Scenario, good: list[Rec], bad: list[Rec], every: int) -> harness.Run:
    """Publish `bad` among `good` and drain once in batches of up to 64 records, so every refused
    record shares its batch with dozens of good ones; the run must exit 0."""
    scn.create_topic(2)
    scn.produce(_interleave(good, bad, every))
    result = scn.run(INGESTOR_BATCH__MAX_BATCH_RECORDS="64", INGESTOR_BATCH__MAX_WAIT_MS="1000")
    assert result.returncode == 0, result.output[-4000:]
    return result


@pytest.mark.parametrize("scenario", ["lite", "server"], indirect=True)
def test_milvus_rejects_one_record_only_it_goes_to_the_dlq(scenario: Scenario, reference_model):
    """Row 8: the real server refuses the marked entities (a vector one dimension short, handed over
    by the fault hook); bisection sends only those to the DLQ and the rest of each batch lands."""
    scn = scenario
    scn.settings["INGESTOR_FAULT_SINK_REJECT"] = "@@reject@@"
    bad = _refused("@@reject@@", "sink_rejected", 3, offset=900)
    result = _ingest_in_big_batches(scn, sample(150), bad, every=40)
    s = result.summary()
    assert s["dead_lettered"] == 3 and s["upserted"] == 150, s
    errors = [d.headers["ingestor.error"] for d in oracle.dead_letters(scn)]
    assert all("dim" in e for e in errors), f"the DLQ should carry Milvus's own refusal: {errors}"
    facts = oracle.check(scn, reference_model)
    assert facts["rows"] == 150 and facts["dead_letters"] == 3


def test_out_of_memory_splits_the_batch_and_a_text_that_always_fails_goes_to_the_dlq(
    scenario: Scenario, reference_model
):
    """Row 17: every forward pass over 8 texts raises torch.OutOfMemoryError, and the marked texts
    make any pass that holds them fail; batches are split until they fit, and only the texts that
    fail alone are dead-lettered."""
    scn = scenario
    scn.settings.update(INGESTOR_FAULT_OOM_OVER="8", INGESTOR_FAULT_FAIL_TEXT="@@poison@@")
    bad = _refused("@@poison@@", "embed_failed", 2, offset=950)
    result = _ingest_in_big_batches(scn, sample(120), bad, every=50)
    s = result.summary()
    assert s["dead_lettered"] == 2 and s["upserted"] == 120, s
    assert "out of memory" in result.output.lower() or "OutOfMemoryError" in result.output, (
        "the split should be visible in the log"
    )
    facts = oracle.check(scn, reference_model)
    assert facts["rows"] == 120 and facts["dead_letters"] == 2
