"""The whole path on the real services: Kafka → ingestor (a real subprocess) → Milvus (Lite, the
embedded default, and a real Milvus server), with Redis; then the oracle, record by record."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.support import harness

pytestmark = pytest.mark.services

# One bad record per reason code the parser knows; (key, value, expected reason).
BAD_RECORDS: list[tuple[bytes | None, bytes | None, str]] = [
    (None, b'\xff\xfe{"text": "x"}', "invalid_utf8"),
    (None, b'{"text": "\\ud800 lone surrogate"}', "invalid_utf8"),
    (None, b'{"text": ', "invalid_json"),
    (None, b"[1, 2, 3]", "not_an_object"),
    (None, b'"just a string"', "not_an_object"),
    (None, b'{"id": "no-text"}', "missing_text"),
    (None, b'{"text": 5}', "text_not_string"),
    (None, b'{"text": "   "}', "blank_text"),
    (None, b'{"id": true, "text": "boolean id"}', "invalid_id"),
    (None, json.dumps({"id": "x" * 600, "text": "long id"}).encode(), "id_too_long"),
    (b"\xff\xfe", b'{"text": "id from a broken key"}', "invalid_key"),
    (None, b'{"text": "metadata is a list", "metadata": [1]}', "invalid_metadata"),
    (None, None, "tombstone_without_key"),
    (None, json.dumps({"id": "huge", "text": "y" * 200_000}).encode(), "too_large"),
]


@pytest.fixture(scope="module", params=["lite", "server"])
def run1(request, services, tmp_path_factory):
    topic = harness.unique("e2e")
    harness.create_topic(topic, partitions=4)
    good = harness.sample_records(520)
    # Two more ids whose texts repeat earlier records: embedded once, stored under both ids.
    dup_texts = [{"id": "dup-a", "text": good[0]["text"]}, {"id": "dup-b", "text": good[1]["text"]}]
    doomed = {"id": "to-delete", "text": "This record is deleted by the tombstone that follows it."}
    stream = [harness.json_record(r) for r in good[:260]]
    stream += [(k, v) for k, v, _ in BAD_RECORDS]
    stream += [harness.json_record(r) for r in good[260:] + dup_texts + [doomed]]
    stream.append((b"to-delete", None))
    harness.produce(topic, stream)
    if request.param == "server":
        uri, collection = request.getfixturevalue("milvus_server"), harness.unique("e2e").replace("-", "_")
    else:
        uri, collection = str(tmp_path_factory.mktemp("milvus") / "e2e.db"), "documents"
    group = harness.unique("g")
    env = harness.ingestor_env(
        topic, group, uri, INGESTOR_KAFKA__MAX_RECORD_BYTES="100000", INGESTOR_MILVUS__COLLECTION=collection
    )
    result = harness.run_ingestor(env)
    assert result.returncode == 0, result.output[-4000:]
    return {
        "topic": topic,
        "uri": uri,
        "collection": collection,
        "group": group,
        "env": env,
        "good": good + dup_texts,
        "result": result,
        "rows": harness.milvus_rows(uri, collection),
    }


def test_every_good_record_is_in_milvus_exactly_once(run1):
    records = harness.by_record(run1["rows"])  # fails on a chunk stored twice or missing
    assert set(records) == {r["id"] for r in run1["good"]}


def test_each_record_is_stored_as_the_splitters_chunks(run1, reference_splitter):
    texts = {r["id"]: r["text"] for r in run1["good"]}
    for record_id, rows in harness.by_record(run1["rows"]).items():
        chunks = reference_splitter.split(texts[record_id])
        assert [r["text"] for r in rows] == [c.text for c in chunks], record_id


def test_stored_vectors_match_plain_encode(run1, reference_model):
    rows = sorted(run1["rows"], key=lambda r: r["id"])[::3]  # a third: every row took the same path
    expected = reference_model.encode([r["text"] for r in rows], convert_to_numpy=True, normalize_embeddings=True)
    stored = np.asarray([r["vector"] for r in rows], dtype=np.float32)
    stored /= np.linalg.norm(stored, axis=1, keepdims=True)
    cosine = (stored * expected).sum(axis=1)
    assert cosine.min() >= 0.999, f"worst cosine {cosine.min():.5f} for {rows[int(cosine.argmin())]['id']}"


def _over_the_limit(records: list[dict], model) -> set[str]:
    tokens = model.tokenizer([r["text"] for r in records], truncation=False)["input_ids"]
    over = {r["id"] for r, ids in zip(records, tokens) if len(ids) > model.max_seq_length}
    assert over, "the sample corpus should hold texts beyond the model's limit"
    return over


def test_texts_over_the_model_limit_are_chunked_not_truncated(run1, reference_model):
    over = _over_the_limit(run1["good"], reference_model)
    records = harness.by_record(run1["rows"])
    assert {i for i, rows in records.items() if len(rows) > 1} == over
    assert not [r["id"] for r in run1["rows"] if r["truncated"]]


def test_search_for_an_exact_text_returns_its_id_first(run1, reference_model):
    texts = [r["text"] for r in run1["good"]]
    one_chunk = {i for i, rows in harness.by_record(run1["rows"]).items() if len(rows) == 1}
    picks = [r for r in run1["good"][100:400:37] if texts.count(r["text"]) == 1 and r["id"] in one_chunk]
    vectors = reference_model.encode([p["text"] for p in picks], normalize_embeddings=True)
    hits = harness.milvus_search(run1["uri"], vectors.tolist(), collection=run1["collection"])
    assert len(hits) == len(picks) >= 5
    for pick, top in zip(picks, hits):
        assert top[0] == f"{pick['id']}#0"


def test_bad_records_land_in_the_dlq_with_their_reason(run1):
    letters = harness.read_topic(run1["topic"] + ".dlq")
    got = sorted(dl.headers["ingestor.reason"] for dl in letters)
    assert got == sorted(reason for _, _, reason in BAD_RECORDS)
    by_value = {(dl.key, dl.value): dl for dl in letters}
    for key, value, reason in BAD_RECORDS:
        if key is None and value is None:  # travels as an empty value, flagged by a header
            dl = by_value[(None, b"")]
            assert dl.headers["ingestor.null_value"] == "true"
        else:
            dl = by_value[(key, value)]  # original key and value bytes, unchanged
        assert dl.headers["ingestor.reason"] == reason
        assert dl.headers["ingestor.topic"] == run1["topic"]
        assert dl.headers["ingestor.error"]
        assert int(dl.headers["ingestor.offset"]) >= 0 and int(dl.headers["ingestor.partition"]) in range(4)


def test_tombstone_deleted_its_id(run1):
    assert "to-delete" not in harness.by_record(run1["rows"])


def test_offsets_committed_to_the_end(run1):
    committed, ends = harness.offsets(run1["group"], run1["topic"])
    assert committed == ends


def test_identical_texts_are_embedded_once(run1, reference_splitter):
    s = run1["result"].summary()
    distinct = {r["text"] for r in run1["good"]}
    assert len(distinct) == len(run1["good"]) - 2
    chunk_texts = {c.text for text in distinct for c in reference_splitter.split(text)}
    # Every distinct chunk text runs through the model exactly once: a repeat in the same window
    # shares the forward pass, a repeat in a later window is a cache hit. (The doomed record's
    # tombstone follows it in the same window, so it is never embedded.)
    assert s["embedded"] == len(chunk_texts)
    assert s["cache_hits"] <= 2
    assert s["upserted"] == len(run1["good"])
    assert s["dead_lettered"] == len(BAD_RECORDS)


def test_replay_embeds_nothing_and_keeps_the_count(run1):
    env = dict(run1["env"], INGESTOR_KAFKA__GROUP_ID=harness.unique("replay"))
    result = harness.run_ingestor(env)
    assert result.returncode == 0, result.output[-4000:]
    s = result.summary()
    assert s["embedded"] == 0 and s["upserted"] == 0
    assert s["skipped"] == len(run1["good"])
    rows = harness.milvus_rows(run1["uri"], run1["collection"])
    assert len(rows) == len(run1["rows"]) == len({r["id"] for r in rows})


# -- chunking off: one entity per record, cut at the model's limit and flagged -------------------


@pytest.fixture(scope="module")
def unchunked(services, tmp_path_factory):
    topic = harness.unique("e2e-whole")
    harness.create_topic(topic, partitions=2)
    good = harness.sample_records(520)
    harness.produce(topic, [harness.json_record(r) for r in good])
    uri = str(tmp_path_factory.mktemp("milvus") / "whole.db")
    env = harness.ingestor_env(topic, harness.unique("g"), uri, INGESTOR_CHUNKING__ENABLED="false")
    result = harness.run_ingestor(env)
    assert result.returncode == 0, result.output[-4000:]
    return {"uri": uri, "env": env, "good": good, "rows": harness.milvus_rows(uri, fields=("id", "truncated"))}


def test_without_chunking_each_record_is_one_entity_under_its_own_id(unchunked):
    ids = [r["id"] for r in unchunked["rows"]]
    assert sorted(ids) == sorted(r["id"] for r in unchunked["good"])


def test_without_chunking_texts_over_the_model_limit_are_flagged_truncated(unchunked, reference_model):
    flagged = {r["id"] for r in unchunked["rows"] if r["truncated"]}
    assert flagged == _over_the_limit(unchunked["good"], reference_model)


def test_vectors_from_the_cache_keep_the_truncated_flag(unchunked):
    # Another collection fed from the same cache: every vector is a cache hit, nothing is embedded.
    cached = harness.unique("cached").replace("-", "_")
    env = dict(unchunked["env"], INGESTOR_KAFKA__GROUP_ID=harness.unique("cached"), INGESTOR_MILVUS__COLLECTION=cached)
    result = harness.run_ingestor(env)
    assert result.returncode == 0, result.output[-4000:]
    assert result.summary()["embedded"] == 0
    rows = harness.milvus_rows(unchunked["uri"], collection=cached, fields=("id", "truncated"))
    assert {r["id"] for r in rows if r["truncated"]} == {r["id"] for r in unchunked["rows"] if r["truncated"]} != set()


def test_a_collection_of_whole_records_refuses_the_default_daemon_and_says_what_to_set(unchunked):
    env = {k: v for k, v in unchunked["env"].items() if k != "INGESTOR_CHUNKING__ENABLED"}
    run = harness.run_ingestor(dict(env, INGESTOR_KAFKA__GROUP_ID=harness.unique("g")), timeout=300)
    assert run.returncode == 2, run.output[-3000:]
    assert "one entity per record" in run.output and "Traceback" not in run.output
    assert "INGESTOR_CHUNKING__ENABLED=false" in run.output
