"""What clients that are not ours write: librdkafka (kcat, confluent-kafka) with every codec Kafka
has, transactional producers that commit, abort or leave a transaction open, and ids and keys that
hold quotes, backslashes, brackets, newlines and any Unicode."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.support import harness

pytestmark = pytest.mark.services

CODECS = ("none", "gzip", "snappy", "lz4", "zstd")


def _doc(record_id: str, text: str) -> tuple[bytes, bytes]:
    return record_id.encode("utf-8"), json.dumps({"id": record_id, "text": text}, ensure_ascii=False).encode("utf-8")


def _vectors_match(rows: list[dict], texts: dict[str, str], model) -> None:
    """Each stored chunk is a piece of its record's text, with the vector plain encode gives it."""
    for record_id, chunks in harness.by_record(rows).items():
        assert all(c["text"] in texts[record_id] for c in chunks), record_id
    expected = model.encode([r["text"] for r in rows], convert_to_numpy=True, normalize_embeddings=True)
    stored = np.asarray([r["vector"] for r in rows], dtype=np.float32)
    stored /= np.linalg.norm(stored, axis=1, keepdims=True)
    cosine = (stored * expected).sum(axis=1)
    assert cosine.min() >= 0.999, f"worst cosine {cosine.min():.5f} for {rows[int(cosine.argmin())]['id']}"


def _stored_codecs(topic: str, partitions: int) -> dict[int, list[str]]:
    """The codec of the batch that holds each offset, per partition, as the broker stored it: Kafka's
    own DumpLogSegments on the partitions' segment files, found through DescribeLogDirs (the
    broker's data dir is wherever its server.properties put it)."""
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=harness.KAFKA)
    try:
        answers = admin.describe_log_dirs({topic: list(range(partitions))})
    finally:
        admin.close()
    dirs = {
        p["partition_index"]: Path(d["log_dir"]) / f"{topic}-{p['partition_index']}"
        for broker in answers
        for d in broker["log_dirs"]
        for t in d["topics"]
        if t["name"] == topic
        for p in t["partitions"]
    }
    assert sorted(dirs) == list(range(partitions)), answers
    segments = {str(f): p for p, d in dirs.items() for f in sorted(d.glob("*.log"))}
    assert sorted(set(segments.values())) == list(range(partitions)), f"no segment files readable in {dirs}"
    home = Path(os.environ.get("INGESTOR_HOME", Path.home() / ".cache" / "ingestor"))
    dump = subprocess.run(
        ["java", "-cp", f"{home}/kafka/lib/*", "kafka.tools.DumpLogSegments", "--files", ",".join(segments)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert dump.returncode == 0, dump.stdout[-3000:] + dump.stderr[-3000:]
    codecs: dict[int, dict[int, str]] = {p: {} for p in range(partitions)}
    partition = None
    for line in dump.stdout.splitlines():
        if line.startswith("Dumping "):
            partition = segments[line.removeprefix("Dumping ").strip()]
        elif found := re.match(r"baseOffset: (\d+) lastOffset: (\d+) count: \d+ .* compresscodec: (\w+)", line):
            first, last, codec = int(found[1]), int(found[2]), found[3].lower()
            codecs[partition].update(dict.fromkeys(range(first, last + 1), codec))
    return {p: [by_offset[o] for o in sorted(by_offset)] for p, by_offset in codecs.items()}


def test_batches_of_every_codec_from_kcat_land(services, tmp_path, reference_model):
    topic = harness.unique("codecs")
    harness.create_topic(topic, partitions=2)
    samples = harness.sample_records(10 * len(CODECS), offset=1500)
    texts: dict[str, str] = {}
    for i, codec in enumerate(CODECS):
        records = []
        for j, rec in enumerate(samples[10 * i : 10 * i + 10]):
            record_id = f"{codec}-{j}"
            texts[record_id] = rec["text"]
            records.append(_doc(record_id, rec["text"]))
        # Half of each codec's records to each partition, in batches librdkafka compresses.
        harness.kcat_produce(topic, records[:5], codec=codec, partition=0)
        harness.kcat_produce(topic, records[5:], codec=codec, partition=1)
    # Each record sits in a batch compressed with its producer's codec (librdkafka may send a batch
    # uncompressed, and the broker recompresses unless compression.type=producer): the consumer
    # really had to decode every codec.
    expected = [codec for codec in CODECS for _ in range(5)]
    assert _stored_codecs(topic, 2) == {0: expected, 1: expected}
    uri = str(tmp_path / "codecs.db")
    group = harness.unique("g")
    result = harness.run_ingestor(harness.ingestor_env(topic, group, uri), timeout=300)
    assert result.returncode == 0, result.output[-4000:]
    assert "cannot decode" not in result.output
    rows = harness.milvus_rows(uri, fields=("id", "vector", "text"))
    assert sorted(harness.by_record(rows)) == sorted(texts)
    _vectors_match(rows, texts, reference_model)
    committed, ends = harness.offsets(group, topic)
    assert committed == ends


def _stats_lags(env: dict[str, str], topic: str) -> dict[int, int]:
    """The lag per partition of `topic` as `ingestor stats` prints it for the group in `env`."""
    proc = subprocess.run(
        [sys.executable, "-m", "ingestor", "stats"],
        env={**env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # One table row per partition: "│ lag <topic>[<partition>] │ <lag> │".
    found = re.findall(rf"lag {re.escape(topic)}\[(\d+)\]\s*│\s*(\S+)\s*│", proc.stdout)
    assert found, proc.stdout
    lags = {int(p): v for p, v in found}
    assert all(v.isdigit() for v in lags.values()), proc.stdout
    return {p: int(v) for p, v in lags.items()}


def _commit_abort_commit(topic: str) -> tuple[dict[str, str], dict[str, str]]:
    """Three transactions of 10 records over 3 partitions: committed, aborted, committed.
    Returns the texts of the committed records and of the aborted ones, by id."""
    harness.create_topic(topic, partitions=3)
    samples = harness.sample_records(30, offset=1600)
    producer = harness.confluent_producer(transactional_id=harness.unique("tx"), compression_type="lz4")
    producer.init_transactions(60)
    committed: dict[str, str] = {}
    aborted: dict[str, str] = {}
    for name, rows, commit in (
        ("first", samples[:10], True),
        ("aborted", samples[10:20], False),
        ("second", samples[20:], True),
    ):
        producer.begin_transaction()
        for j, rec in enumerate(rows):
            key, value = _doc(f"{name}-{j}", rec["text"])
            producer.produce(topic, key=key, value=value, partition=j % 3)
        producer.flush(60)
        if commit:
            producer.commit_transaction(60)
        else:
            producer.abort_transaction(60)
        (committed if commit else aborted).update({f"{name}-{j}": rec["text"] for j, rec in enumerate(rows)})
    return committed, aborted


def test_aborted_transactions_never_land_and_the_drain_ends_at_lag_zero(services, tmp_path, reference_model):
    topic = harness.unique("tx")
    texts, _ = _commit_abort_commit(topic)
    uri = str(tmp_path / "tx.db")
    group = harness.unique("g")
    result = harness.run_ingestor(harness.ingestor_env(topic, group, uri), timeout=300)
    assert result.returncode == 0, result.output[-4000:]
    rows = harness.milvus_rows(uri, fields=("id", "vector", "text"))
    assert sorted(harness.by_record(rows)) == sorted(texts), "exactly the committed transactions' records"
    _vectors_match(rows, texts, reference_model)
    # Each partition ends in a transaction marker that no consumer receives: the commit still
    # reaches the end offset, so the lag is 0.
    committed, ends = harness.offsets(group, topic)
    assert committed == ends
    assert result.summary()["consumed"] == len(texts)


def test_read_uncommitted_ingests_aborted_records_too_and_still_drains(services, tmp_path, reference_model):
    # The option for producers whose aborts are not meant to hide records: every record written
    # lands, and the drain still ends (the markers are committed past) with lag 0.
    topic = harness.unique("tx-ru")
    committed_texts, aborted_texts = _commit_abort_commit(topic)
    texts = {**committed_texts, **aborted_texts}
    uri = str(tmp_path / "tx-ru.db")
    group = harness.unique("g")
    env = harness.ingestor_env(topic, group, uri, INGESTOR_KAFKA__ISOLATION_LEVEL="read_uncommitted")
    result = harness.run_ingestor(env, timeout=300)
    assert result.returncode == 0, result.output[-4000:]
    rows = harness.milvus_rows(uri, fields=("id", "vector", "text"))
    assert sorted(harness.by_record(rows)) == sorted(texts)
    _vectors_match(rows, texts, reference_model)
    committed, ends = harness.offsets(group, topic)
    assert committed == ends
    assert result.summary()["consumed"] == len(texts)


def test_an_open_transaction_holds_back_only_its_partition(services, tmp_path):
    topic = harness.unique("open-tx")
    harness.create_topic(topic, partitions=3)
    samples = harness.sample_records(40, offset=1700)
    plain = harness.confluent_producer()
    before = [_doc(f"before-{j}", r["text"]) for j, r in enumerate(samples[:10])]
    for key, value in before:
        plain.produce(topic, key=key, value=value, partition=0)
    plain.flush(60)
    open_tx = harness.confluent_producer(transactional_id=harness.unique("open"), transaction_timeout_ms=600_000)
    open_tx.init_transactions(60)
    open_tx.begin_transaction()
    pending = [_doc(f"pending-{j}", r["text"]) for j, r in enumerate(samples[10:15])]
    for key, value in pending:
        open_tx.produce(topic, key=key, value=value, partition=0)
    open_tx.flush(60)
    # Behind the open transaction on its partition, and free on the others.
    after = [_doc(f"after-{j}", r["text"]) for j, r in enumerate(samples[15:20])]
    others = [_doc(f"other-{j}", r["text"]) for j, r in enumerate(samples[20:40])]
    for key, value in after:
        plain.produce(topic, key=key, value=value, partition=0)
    for j, (key, value) in enumerate(others):
        plain.produce(topic, key=key, value=value, partition=1 + j % 2)
    plain.flush(60)
    uri = str(tmp_path / "open.db")
    group = harness.unique("g")
    env = harness.ingestor_env(topic, group, uri)
    try:
        result = harness.run_ingestor(env, timeout=300)
        assert result.returncode == 0, result.output[-4000:]
        ids = set(harness.by_record(harness.milvus_rows(uri, fields=("id",))))
        assert ids == {k.decode() for k, _ in before + others}
        committed, ends = harness.offsets(group, topic)
        assert committed[0] == len(before), "partition 0 commits up to its last stable offset"
        assert committed[1] == ends[1] and committed[2] == ends[2]
        # `ingestor stats` measures the lag as the daemon does, to the last stable offset: the
        # daemon has consumed all it can, so 0 everywhere, though the high watermark of
        # partition 0 (what a read_uncommitted client sees as its end) is past the open
        # transaction's records.
        assert ends[0] == len(before) + len(pending) + len(after) > committed[0]
        assert _stats_lags(env, topic) == {0: 0, 1: 0, 2: 0}
        # And it follows the setting: read_uncommitted counts to the high watermark.
        uncommitted = _stats_lags(dict(env, INGESTOR_KAFKA__ISOLATION_LEVEL="read_uncommitted"), topic)
        assert uncommitted == {0: ends[0] - committed[0], 1: 0, 2: 0}
    except BaseException:
        open_tx.abort_transaction(60)
        raise
    open_tx.commit_transaction(60)
    result = harness.run_ingestor(env, timeout=300)
    assert result.returncode == 0, result.output[-4000:]
    ids = set(harness.by_record(harness.milvus_rows(uri, fields=("id",))))
    assert ids == {k.decode() for k, _ in before + pending + after + others}
    committed, ends = harness.offsets(group, topic)
    assert committed == ends


HOSTILE_IDS = [
    'it\'s "quoted" \\ back\\slash',
    "bra]ck[et), (paren",
    "new\nline\r\tand tab",
    "emoji 🚀 日本語 ' \" ] ,",
]


@pytest.mark.parametrize("backend", ["lite", "server"])
def test_hostile_ids_land_as_themselves_and_tombstones_delete_exactly_their_id(services, tmp_path, request, backend):
    topic = harness.unique("ids")
    harness.create_topic(topic, partitions=2)
    samples = harness.sample_records(len(HOSTILE_IDS) + 2, offset=1800)
    ids = ["victim1", "victim2", *HOSTILE_IDS]
    producer = harness.confluent_producer()
    for record_id, rec in zip(ids, samples):
        key, value = _doc(record_id, rec["text"])
        producer.produce(topic, key=key, value=value)
    producer.flush(60)
    # Keys built to break out of a quoted id list, then the tombstones of two hostile ids.
    attacks = ["nope','victim1", 'nope", "victim2', "nope\\', \\'victim1", "x'] or id != ['y", 'x"] or id != ["y']
    for key in attacks + HOSTILE_IDS[:2]:
        producer.produce(topic, key=key.encode("utf-8"), value=None)
    producer.flush(60)
    # The Lite server and the 2.3.5 server parse expressions with different grammars.
    if backend == "lite":
        uri, collection = str(tmp_path / "ids.db"), "documents"
    else:
        uri, collection = request.getfixturevalue("milvus_server"), harness.unique("ids").replace("-", "_")
    env = harness.ingestor_env(topic, harness.unique("g"), uri, INGESTOR_MILVUS__COLLECTION=collection)
    result = harness.run_ingestor(env, timeout=300)
    assert result.returncode == 0, result.output[-4000:]
    stored = sorted(harness.by_record(harness.milvus_rows(uri, collection, fields=("id",))))
    assert stored == sorted(["victim1", "victim2", *HOSTILE_IDS[2:]])
    # A replay by another group: the records still stored are skipped as unchanged, which takes
    # reading each back from Milvus by its id.
    again = harness.run_ingestor(dict(env, INGESTOR_KAFKA__GROUP_ID=harness.unique("g")), timeout=300)
    assert again.returncode == 0, again.output[-4000:]
    assert again.summary()["skipped"] == len(stored)
    assert sorted(harness.by_record(harness.milvus_rows(uri, collection, fields=("id",)))) == stored
