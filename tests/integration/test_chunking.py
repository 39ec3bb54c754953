"""Long documents through the real services with chunking on (Milvus Lite and a Milvus server,
Redis, Kafka fed by librdkafka with zstd): every chunk in Milvus is the splitter's, with the
model's vector of its text; then documents are edited, shrunk, grown and deleted, and the
collection ends as exactly the chunks of the last versions, embedding only the chunks that changed,
while a reader searching throughout a shrink always finds the document."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from bench.corpus import edit_middle_paragraph, long_documents
from ingestor.chunking import Splitter
from tests.support import harness

pytestmark = pytest.mark.services

OVERLAP = 32
FIELDS = ("id", "doc_id", "chunk_index", "chunk_count", "char_start", "char_end", "text")
Layout = dict[str, tuple[str, int, int, int, int, str]]  # chunk id -> the FIELDS after id


@pytest.fixture(scope="module")
def splitter(reference_splitter) -> Splitter:
    assert reference_splitter.overlap_tokens == OVERLAP
    return reference_splitter


def layout(texts: dict[str, str], splitter: Splitter) -> Layout:
    out: Layout = {}
    for record_id, text in texts.items():
        chunks = splitter.split(text)
        for c in chunks:
            out[f"{record_id}#{c.index}"] = (record_id, c.index, len(chunks), c.char_start, c.char_end, c.text)
    return out


def stored(rows: list[dict]) -> Layout:
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)), "a chunk is stored twice"
    return {r["id"]: tuple(r[f] for f in FIELDS[1:]) for r in rows}  # type: ignore[misc]


def produce(topic: str, records: list[tuple[str, str | None]]) -> None:
    """Through librdkafka (confluent-kafka), zstd-compressed; a None text is a tombstone."""
    producer = harness.confluent_producer(compression_type="zstd")
    for record_id, text in records:
        value = None if text is None else json.dumps({"id": record_id, "text": text}).encode()
        producer.produce(topic, key=record_id.encode(), value=value)
    assert producer.flush(60) == 0


def edits(
    texts: dict[str, str], chunks: Layout, sizes: dict[str, int]
) -> tuple[dict[str, str | None], dict[str, list[str]]]:
    """The second versions: an edit inside one paragraph, shrinks to a third, growths, deletes
    (`sizes` of each); each kind drawn from documents of three chunks or more."""
    counts = {v[0]: v[2] for v in chunks.values()}
    long_ones = sorted(i for i, n in counts.items() if n >= 3)
    assert len(long_ones) > sum(sizes.values()), "the corpus should hold many documents of several chunks"
    kinds, start = {}, 0
    for kind, n in sizes.items():
        kinds[kind], start = long_ones[start : start + n], start + n
    donor = texts[long_ones[-1]].split("\n\n")
    after: dict[str, str | None] = {}
    for i in kinds["edited"]:
        after[i] = edit_middle_paragraph(texts[i])
    for i in kinds["shrunk"]:
        paragraphs = texts[i].split("\n\n")
        after[i] = "\n\n".join(paragraphs[: max(1, len(paragraphs) // 3)])
    for i in kinds["grown"]:
        after[i] = texts[i] + "\n\n" + "\n\n".join(donor[:6])
    for i in kinds["deleted"]:
        after[i] = None
    return after, kinds


class Reader(threading.Thread):
    """Searches a Milvus server for the shrinking documents, again and again, and notes every
    time one of them was not there."""

    def __init__(self, uri: str, collection: str, record_ids: list[str]) -> None:
        super().__init__(daemon=True)
        self.uri, self.collection, self.ids = uri, collection, record_ids
        self.polls = 0
        self.missing: list[set[str]] = []
        self.errors: list[str] = []
        self.halt = threading.Event()

    def run(self) -> None:
        from ingestor.expressions import field_in

        with harness.milvus(self.uri) as client:
            while not self.halt.is_set():
                try:
                    rows = client.query(
                        self.collection,
                        filter=field_in("doc_id", self.ids),
                        output_fields=["doc_id"],
                        consistency_level="Strong",
                        timeout=10,
                    )
                except Exception as exc:  # the reader's own trouble is reported, not hidden
                    self.errors.append(str(exc))
                    time.sleep(0.2)
                    continue
                found = {r["doc_id"] for r in rows}
                if found != set(self.ids):
                    self.missing.append(set(self.ids) - found)
                self.polls += 1


# Per backend: which documents, and how many of them each edit kind takes. Lite gets every fourth
# document of the corpus (all its lengths) and the longest; the server, which takes the same writes
# through another implementation, the first 90.
SCALE = {
    "lite": (slice(None, None, 4), {"edited": 12, "shrunk": 10, "grown": 10, "deleted": 6}),
    "server": (slice(90), {"edited": 12, "shrunk": 12, "grown": 12, "deleted": 6}),
}
VECTOR_SAMPLE = 8  # every 8th chunk's stored vector is compared with the model's (~1/8 of the encode)


@pytest.fixture(scope="module", params=["lite", "server"])
def chunked(request, services, splitter, tmp_path_factory):
    topic = harness.unique("chunks")
    harness.create_topic(topic, partitions=4)
    part, sizes = SCALE[request.param]
    corpus = long_documents()
    longest = max(corpus, key=lambda d: len(d.text))
    texts = {d.id: d.text for d in [*corpus[part], *([longest] if request.param == "lite" else [])]}
    produce(topic, list(texts.items()))
    if request.param == "server":
        uri, collection = request.getfixturevalue("milvus_server"), harness.unique("chunks").replace("-", "_")
    else:
        uri, collection = str(tmp_path_factory.mktemp("milvus") / "chunks.db"), "documents"
    group = harness.unique("g")
    env = harness.ingestor_env(
        topic,
        group,
        uri,
        INGESTOR_MILVUS__COLLECTION=collection,
        INGESTOR_CHUNKING__ENABLED="true",
        INGESTOR_KAFKA__MAX_RECORD_BYTES="200000",
    )
    first = harness.run_ingestor(env)
    assert first.returncode == 0, first.output[-4000:]
    rows1 = harness.milvus_rows(uri, collection, FIELDS + ("vector",))
    before = layout(texts, splitter)

    after, kinds = edits(texts, before, sizes)
    produce(topic, list(after.items()))
    reader = Reader(uri, collection, kinds["shrunk"]) if request.param == "server" else None
    if reader is not None:
        reader.start()
    try:
        second = harness.run_ingestor(env)
    finally:
        if reader is not None:
            reader.halt.set()
            reader.join(timeout=30)
    assert second.returncode == 0, second.output[-4000:]
    final = {i: t for i, t in {**texts, **after}.items() if t is not None}
    return {
        "backend": request.param,
        "uri": uri,
        "collection": collection,
        "env": env,
        "texts": texts,
        "before": before,
        "rows1": rows1,
        "first": first,
        "after": after,
        "kinds": kinds,
        "expected": layout(final, splitter),
        "second": second,
        "reader": reader,
        "rows2": harness.milvus_rows(uri, collection, FIELDS),
    }


def test_every_chunk_in_milvus_is_the_splitters_chunk(chunked):
    assert stored(chunked["rows1"]) == chunked["before"]
    s = chunked["first"].summary()
    assert s["upserted"] == len(chunked["texts"]) and s["consumed"] == len(chunked["texts"])


def test_every_stored_vector_is_the_models_vector_of_its_chunk_text(chunked, reference_model):
    rows = sorted(chunked["rows1"], key=lambda r: r["id"])[::VECTOR_SAMPLE]
    expected = reference_model.encode(
        [r["text"] for r in rows], convert_to_numpy=True, normalize_embeddings=True, batch_size=64
    )
    got = np.asarray([r["vector"] for r in rows], dtype=np.float32)
    got /= np.linalg.norm(got, axis=1, keepdims=True)
    cosine = (got * expected).sum(axis=1)
    assert cosine.min() >= 0.999, f"worst cosine {cosine.min():.5f} for {rows[int(cosine.argmin())]['id']}"


def test_after_edits_shrinks_growths_and_deletes_the_collection_is_exactly_the_last_versions_chunks(chunked):
    got = stored(chunked["rows2"])
    expected = chunked["expected"]
    assert set(got) - set(expected) == set(), "orphan chunks"
    assert set(expected) - set(got) == set(), "missing chunks"
    assert got == expected
    deleted = set(chunked["kinds"]["deleted"])
    assert not {v[0] for v in got.values()} & deleted


def test_only_the_chunks_that_changed_were_embedded(chunked):
    s = chunked["second"].summary()
    kinds = chunked["kinds"]
    changed = len(kinds["edited"]) + len(kinds["shrunk"]) + len(kinds["grown"])
    assert s["consumed"] == changed + len(kinds["deleted"])
    assert s["upserted"] == changed and s["deleted"] == len(kinds["deleted"])
    old_texts = {v[5] for v in chunked["before"].values()}
    new_ids = {i for i in chunked["after"] if chunked["after"][i] is not None}
    new_texts = {v[5] for v in chunked["expected"].values() if v[0] in new_ids}
    assert s["embedded"] == len(new_texts - old_texts)
    assert s["cache_hits"] >= len(new_texts & old_texts) > s["embedded"]


def test_a_reader_searching_throughout_a_shrink_always_finds_the_document(chunked):
    reader = chunked["reader"]
    if reader is None:
        pytest.skip("Milvus Lite serves one process: the reader runs against the Milvus server")
    assert reader.polls >= 5, f"the reader ran {reader.polls} times ({reader.errors[-3:]})"
    assert reader.missing == [], f"{len(reader.missing)} of {reader.polls} searches missed a document"


def test_a_collection_of_chunks_refuses_a_daemon_without_chunking(chunked):
    env = dict(chunked["env"], INGESTOR_CHUNKING__ENABLED="false", INGESTOR_KAFKA__GROUP_ID=harness.unique("g"))
    run = harness.run_ingestor(env, timeout=300)
    assert run.returncode == 2, run.output[-3000:]
    assert "one entity per chunk" in run.output and "Traceback" not in run.output
    assert "INGESTOR_CHUNKING__ENABLED=true" in run.output  # what to set to write it


def test_search_keeps_each_records_best_chunk_with_its_span(chunked, reference_model):
    if chunked["backend"] != "server":
        pytest.skip("read in this process: Milvus Lite's file belongs to one process at a time")
    from ingestor.config import MilvusSettings
    from ingestor.sink import MilvusSink

    expected = chunked["expected"]
    picks = sorted(i for i, v in expected.items() if v[2] >= 3 and v[1] == 1)[:5]
    sink = MilvusSink(MilvusSettings(uri=chunked["uri"], collection=chunked["collection"]), chunked=True)
    try:
        for chunk_id in picks:
            record_id, index, _count, start, end, text = expected[chunk_id]
            hits = sink.search(reference_model.encode([text], normalize_embeddings=True)[0], 5)
            assert len(hits) == 5 and len({h["doc_id"] for h in hits}) == 5, "one hit per record"
            top = hits[0]
            assert (top["doc_id"], top["chunk_index"], top["char_start"], top["char_end"]) == (
                record_id,
                index,
                start,
                end,
            )
            assert top["id"] == chunk_id and top["text"] == text
    finally:
        sink.close()


# The crash point is the writer's, whatever the sink: CI runs it on the server; Lite is a slow test.
@pytest.mark.parametrize("backend", [pytest.param("lite", marks=pytest.mark.slow), "server"])
def test_a_kill_between_new_chunks_and_the_surplus_delete_replays_to_exactly_the_expected_chunks(
    backend, services, splitter, tmp_path, request
):
    """Fault matrix row 27: kill -9 (the `after_upsert` crash point: Milvus acknowledged the new
    chunks, the surplus delete has not run) leaves extra chunks only; the replay removes them."""
    topic = harness.unique("chunkkill")
    harness.create_topic(topic, partitions=2)
    texts = {d.id: d.text for d in [d for d in long_documents() if len(d.text) >= 5_000][:15]}
    produce(topic, list(texts.items()))
    if backend == "server":
        uri, collection = request.getfixturevalue("milvus_server"), harness.unique("chunkkill").replace("-", "_")
    else:
        uri, collection = str(tmp_path / "kill.db"), "documents"
    env = harness.ingestor_env(
        topic, harness.unique("g"), uri, INGESTOR_MILVUS__COLLECTION=collection, INGESTOR_CHUNKING__ENABLED="true"
    )
    first = harness.run_ingestor(env)
    assert first.returncode == 0, first.output[-4000:]
    assert stored(harness.milvus_rows(uri, collection, FIELDS)) == layout(texts, splitter)

    shrunk = {i: "\n\n".join(t.split("\n\n")[: max(1, t.count("\n\n") // 4)]) for i, t in texts.items()}
    produce(topic, list(shrunk.items()))
    crashed = harness.run_ingestor(dict(env, INGESTOR_FAULT_CRASH_AT="after_upsert:1"))
    assert crashed.returncode == -9, crashed.output[-4000:]
    expected = layout(shrunk, splitter)
    left = stored(harness.milvus_rows(uri, collection, FIELDS))
    # Surplus chunks stayed (nothing is missing: old chunks stand in for new ones not yet written),
    # and new chunks landed.
    assert set(left) > set(expected), "the crash should leave surplus chunks behind"
    assert any(left[i] == v for i, v in expected.items()), "the crash came before any new chunk landed"

    replay = harness.run_ingestor(env)
    assert replay.returncode == 0, replay.output[-4000:]
    assert stored(harness.milvus_rows(uri, collection, FIELDS)) == expected
    committed, ends = harness.offsets(env["INGESTOR_KAFKA__GROUP_ID"], topic)
    assert committed == ends
