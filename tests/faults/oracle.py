"""The one oracle every fault scenario ends with (see docs/reliability.md, "Fault matrix").

After the scenario: drain with `ingestor run --until-caught-up`, then check record by record:

- no loss, right result: every good record (the last version of each id) is in Milvus as exactly
  the entities it should be, each with a vector whose cosine with plain `SentenceTransformer.encode`
  of its text is >= 0.999; records that were deleted have no entity left. Without chunking that is
  one entity, `id` = the record's id, holding its text. With chunking (`chunking.enabled`, on for
  the fault stack unless `INGESTOR_FAULTS_CHUNKING=0`) it is one entity per chunk of the text as the
  project's own splitter cuts it (`ingestor.chunking.splitter_for` with the model's tokenizer and the
  run's chunk settings): id `<id>#<n>`, doc_id, chunk_index n, chunk_count, char_start, char_end and
  the chunk's text all as the splitter says; no orphan chunk (one whose doc_id has no live record,
  or whose chunk_index is at or past its record's chunk count: what a shrink must delete);
- no duplicates: one entity per entity id (read with an iterator, so a duplicate would show);
- dead letters: exactly the poison records, by source position, with their reason and their
  original key and value bytes (a crash between the DLQ write and the commit may write one twice:
  `allow_dlq_duplicates`);
- offsets: committed == end offset, per partition;
- cache: no marker (`<prefix>:doc:*` of this collection) for a record id that Milvus does not hold.

`check_committed_prefix` is the invariant that holds at every moment, not only at the end:
whatever the group committed is done (a good record below the committed offset is in Milvus, a
poison one is in the DLQ; a record with nothing published after its committed version is in Milvus
as exactly that version's chunks, or gone if that version is a tombstone).

`check_entities` is the record-by-record comparison itself, pure (rows in, expected text out), so
that it can be checked without services (tests/faults/test_oracle.py).
"""

from __future__ import annotations

import functools
import hashlib
import json
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, TypeVar

import numpy as np

from ingestor.chunking import Chunk, Splitter, chunk_id, splitter_for
from ingestor.dedupe import marker_key
from ingestor.milvus_schema import TEXT_MAX_BYTES
from ingestor.text import clip_utf8
from tests.faults.stack import CHUNK_FIELDS, Produced, Scenario, chunking_settings
from tests.support import harness

T = TypeVar("T")
COSINE_MIN = 0.999


@functools.cache
def reference_model() -> Any:
    """The model as plain sentence-transformers loads it: the oracle for stored vectors, and the
    tokenizer the expected chunks are cut with (the fault suite's `reference_model` fixture)."""
    from sentence_transformers import SentenceTransformer

    from ingestor.config import DEFAULT_MODEL
    from ingestor.embedder import resolve_model_path

    return SentenceTransformer(resolve_model_path(DEFAULT_MODEL), device="cpu")


_splitters: dict[tuple[Any, ...], Splitter] = {}


def splitter(env: Mapping[str, str], model: Any = None) -> Splitter | None:
    """The splitter a daemon run with `env` cuts records with (None: chunking off), made as the
    daemon makes it: `splitter_for` on the model's tokenizer at its maximum sequence length.
    `model`: a sentence-transformers model (default: `reference_model()`)."""
    settings = chunking_settings(env)
    if not settings.enabled:
        return None
    model = reference_model() if model is None else model
    limit = int(env.get("INGESTOR_MODEL__MAX_SEQ_LENGTH") or model.max_seq_length)
    key = (id(model), limit, settings.max_tokens, settings.overlap_tokens)
    if key not in _splitters:
        from ingestor.tokenizer import Tokenizer

        made = splitter_for(
            settings, SimpleNamespace(tokenizer=Tokenizer(model.tokenizer, limit), max_seq_length=limit)
        )
        assert made is not None
        _splitters[key] = made
    return _splitters[key]


_chunks: dict[tuple[int, str], list[Chunk]] = {}


def chunks_of(split: Splitter, text: str) -> list[Chunk]:
    """`split.split(text)`, remembered (the prefix check runs after every fault of a soak)."""
    key = (id(split), text)
    if key not in _chunks:
        _chunks[key] = split.split(text)
    return _chunks[key]


def model_texts(scn: Scenario, texts: Iterable[str], model: Any = None) -> set[str]:
    """The distinct texts the model sees for records of these texts in the scenario's runs (what a
    run's `embedded` counts when nothing is cached): their chunks' with chunking, else their own."""
    split = splitter(scn.env(), model)
    if split is None:
        return set(texts)
    return {c.text for t in texts for c in chunks_of(split, t)}


def store_text(env: Mapping[str, str]) -> bool:
    return env.get("INGESTOR_MILVUS__STORE_TEXT", "true").strip().lower() not in ("false", "0", "no", "off")


# The reference vectors of texts already checked (many tests share the sample corpus).
_reference: dict[str, np.ndarray] = {}


def reference_vectors(model: Any, texts: list[str]) -> np.ndarray:
    missing = sorted({t for t in texts if t not in _reference})
    if missing:
        encoded = model.encode(missing, convert_to_numpy=True, normalize_embeddings=True, batch_size=64)
        _reference.update(zip(missing, np.asarray(encoded, dtype=np.float32)))
    return np.stack([_reference[t] for t in texts]) if texts else np.zeros((0, 384), dtype=np.float32)


@dataclass
class Expected:
    """What the final state must be, derived from what the test published."""

    good: dict[str, str]  # id -> text of its last version
    deleted: set[str]  # ids whose last record is a tombstone
    poison: dict[tuple[int, int], Produced]  # (partition, offset) -> record


def expected(produced: list[Produced]) -> Expected:
    good: dict[str, str] = {}
    deleted: set[str] = set()
    poison: dict[tuple[int, int], Produced] = {}
    # One id always maps to one partition (keyed), so produce order is that id's log order.
    for p in produced:
        r = p.rec
        if r.kind == "doc":
            assert r.id is not None and r.text is not None
            good[r.id] = r.text
            deleted.discard(r.id)
        elif r.kind == "tombstone":
            assert r.id is not None
            good.pop(r.id, None)
            deleted.add(r.id)
        else:
            poison[(p.partition, p.offset)] = p
    return Expected(good, deleted, poison)


@dataclass(frozen=True)
class Wanted:
    """One entity the final state must hold."""

    id: str
    doc_id: str  # its record
    index: int
    count: int  # entities of its record
    char_start: int
    char_end: int
    text: str  # what the model embeds for it: the chunk's text, or the whole record's


def wanted(good: Mapping[str, str], split: Splitter | None) -> dict[str, Wanted]:
    """The entities of the good records (id -> text of the last version): without a splitter one
    per record, under the record's id; with one, one per chunk the splitter cuts, `<id>#<n>`."""
    out: dict[str, Wanted] = {}
    for record_id, text in good.items():
        if split is None:
            out[record_id] = Wanted(record_id, record_id, 0, 1, 0, len(text), text)
            continue
        chunks = chunks_of(split, text)
        for c in chunks:
            i = chunk_id(record_id, c.index)
            out[i] = Wanted(i, record_id, c.index, len(chunks), c.char_start, c.char_end, c.text)
    return out


def check_entities(
    rows: list[dict[str, Any]], good: Mapping[str, str], split: Splitter | None, with_text: bool = True
) -> dict[str, Wanted]:
    """Entities read from Milvus against the good records (id -> text of the last version): exactly
    the wanted ones, each once, each holding what it should. `rows`: id, text if read, and with a
    splitter the chunk fields. `with_text`: the collection stores texts (`milvus.store_text`).
    Returns the wanted entities by id."""
    want = wanted(good, split)
    counts = Counter(r["id"] for r in rows)
    dups = {i: n for i, n in counts.items() if n > 1}
    assert not dups, f"ids stored more than once: {dict(list(dups.items())[:10])}"
    if split is not None:
        misnamed = sorted(r["id"] for r in rows if r["id"] != chunk_id(r["doc_id"], r["chunk_index"]))
        assert not misnamed, f"{len(misnamed)} chunk id(s) other than <doc_id>#<chunk_index>: {misnamed[:10]}"
        orphans = sorted(r["id"] for r in rows if r["doc_id"] not in good)
        assert not orphans, (
            f"{len(orphans)} orphan chunk(s), of records with no live version (deleted or never good): {orphans[:10]}"
        )
        count_of = {w.doc_id: w.count for w in want.values()}
        surplus = sorted(r["id"] for r in rows if r["chunk_index"] >= count_of[r["doc_id"]])
        assert not surplus, (
            f"{len(surplus)} orphan chunk(s) at or past their record's chunk count (what a "
            f"shrink deletes): {surplus[:10]}"
        )
    stored = set(counts)
    missing = sorted(set(want) - stored)
    what = "chunk" if split is not None else "good record"
    assert not missing, f"{len(missing)} {what}(s) missing from Milvus: {missing[:10]}"
    extra = sorted(stored - set(want))
    assert not extra, f"{len(extra)} unexpected id(s) in Milvus (deleted or never good): {extra[:10]}"
    wrong: list[str] = []
    for r in rows:
        w = want[r["id"]]
        if split is not None:
            got = tuple(r[f] for f in CHUNK_FIELDS)
            exp = (w.doc_id, w.index, w.count, w.char_start, w.char_end)
            if got != exp:
                wrong.append(f"{r['id']}: {CHUNK_FIELDS} are {got}, the splitter says {exp}")
        if "text" in r:
            text = clip_utf8(w.text, TEXT_MAX_BYTES) if with_text else ""
            if r["text"] != text:
                wrong.append(f"{r['id']}: text {r['text'][:50]!r}... is not {text[:50]!r}...")
    assert not wrong, f"{len(wrong)} entit(ies) not as the last version of their record says: {wrong[:5]}"
    return want


def _retry(read: Callable[[], T], attempts: int = 4) -> T:
    """The Milvus Lite server drops idle connections ("Too many pings"): a read may fail once."""
    for attempt in range(attempts):
        try:
            return read()
        except Exception:
            if attempt == attempts - 1:
                raise
            time.sleep(1)
    raise AssertionError("unreachable")


def dead_letters(scn: Scenario) -> list[harness.DeadLetter]:
    return harness.read_topic(scn.dlq_topic, bootstrap=scn.stack.kafka)


def markers(scn: Scenario) -> set[str]:
    """Marker keys of this scenario's collection present in Redis now."""
    r = scn.stack.redis()
    try:
        return {k.decode() for k in r.scan_iter(match=f"{scn.key_prefix}:doc:*", count=1000)}
    finally:
        r.close()


def namespace(scn: Scenario) -> str:
    """What MilvusSink.namespace is for this collection (the markers' namespace)."""
    from ingestor.collection import _INCARNATION_PREFIX

    def describe() -> dict[str, Any]:
        if not scn.milvus_uri.startswith("http"):  # a Lite file: read it in a process of its own
            return _describe_lite(scn.milvus_uri, scn.collection)
        with harness.milvus(scn.milvus_uri) as client:
            return client.describe_collection(scn.collection)

    description = _retry(describe).get("description") or ""
    incarnation = description.split(_INCARNATION_PREFIX, 1)[1] if _INCARNATION_PREFIX in description else "external"
    return f"{scn.milvus_uri}||{scn.collection}|{incarnation}"


def _describe_lite(uri: str, collection: str) -> dict[str, Any]:
    """Milvus Lite keeps a file locked for the life of the process that opened it (see harness)."""
    code = (
        "import json, sys\nfrom pymilvus import MilvusClient\n"
        "c = MilvusClient(uri=sys.argv[1])\n"
        "json.dump(c.describe_collection(sys.argv[2]), sys.stdout, default=str)\nc.close()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, uri, collection], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def marker_of(scn: Scenario, record_id: str, ns: str | None = None) -> str:
    return marker_key(scn.key_prefix, ns if ns is not None else namespace(scn), record_id)


def check_markers(scn: Scenario, in_milvus: set[str]) -> set[str]:
    """No marker for an id Milvus does not hold. Returns the ids that have one."""
    present = markers(scn)
    if not present:
        return set()
    ns = namespace(scn)
    ns_part = hashlib.sha256(ns.encode()).hexdigest()[:16]
    candidates = in_milvus | {p.rec.id for p in scn.produced if p.rec.id}
    by_key = {marker_key(scn.key_prefix, ns, i): i for i in candidates}
    ours = {k for k in present if k.split(":")[-2] == ns_part}
    unknown = {k for k in ours if k not in by_key}
    assert not unknown, f"{len(unknown)} marker(s) for ids never published or not held: {sorted(unknown)[:5]}"
    with_marker = {by_key[k] for k in ours}
    orphans = with_marker - in_milvus
    assert not orphans, f"cache markers for ids Milvus does not hold: {sorted(orphans)[:10]}"
    return with_marker


def check_committed_prefix(scn: Scenario, committed: dict[int, int] | None = None, model: Any = None) -> dict[int, int]:
    """Everything below the committed offsets is done. Read the offsets first, then Milvus and the
    DLQ: a record's committed version stays done until a later record of its id (at or past the
    committed offset) is worked on, so only those may have moved on. `model`: the tokenizer's, for
    the chunks (default: `reference_model()`)."""
    committed = scn.committed() if committed is None else committed
    split = splitter(scn.env(), model)
    fields = ("id", "text", *(CHUNK_FIELDS if split is not None else ()))
    rows = scn.entities(fields)
    letters = dead_letters(scn)
    lettered = {(int(d.headers["ingestor.partition"]), int(d.headers["ingestor.offset"])) for d in letters}
    last: dict[str, Produced] = {}
    later: defaultdict[str, list[Produced]] = defaultdict(list)
    for p in scn.produced:  # one id is in one partition (keyed): produce order is its log order
        if p.rec.id is not None:
            if p.offset < committed.get(p.partition, 0):
                last[p.rec.id] = p
            else:
                later[p.rec.id].append(p)
    record_of = {r["id"]: r.get("doc_id", r["id"]) for r in rows}
    in_milvus = set(record_of.values())
    missing = sorted(
        i
        for i, p in last.items()
        if p.rec.kind == "doc" and i not in in_milvus and all(q.rec.kind == "doc" for q in later[i])
    )
    assert not missing, f"committed {committed} covers {len(missing)} record(s) not in Milvus: {missing[:10]}"
    settled = {i: p.rec for i, p in last.items() if not later[i]}
    deleted = sorted(i for i, rec in settled.items() if rec.kind == "tombstone" and i in in_milvus)
    assert not deleted, (
        f"committed {committed} covers the delete of {len(deleted)} record(s) still in Milvus: {deleted[:10]}"
    )
    good = {i: rec.text for i, rec in settled.items() if rec.kind == "doc" and rec.text is not None}
    try:
        check_entities([r for r in rows if record_of[r["id"]] in good], good, split, store_text(scn.env()))
    except AssertionError as exc:
        raise AssertionError(f"committed {committed}, records with nothing published after: {exc}") from None
    unlettered = sorted(
        (p.partition, p.offset)
        for p in scn.produced
        if p.rec.kind == "poison"
        and p.offset < committed.get(p.partition, 0)
        and (p.partition, p.offset) not in lettered
    )
    assert not unlettered, f"committed {committed} covers poison record(s) not in the DLQ: {unlettered}"
    return committed


def check(
    scn: Scenario,
    reference_model: Any,
    drain: bool = True,
    allow_dlq_duplicates: bool = False,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Drain, then every check of the module docstring. Returns facts for further assertions."""
    facts: dict[str, Any] = {}
    if drain:
        result = scn.run(env=env)
        assert result.returncode == 0, f"drain exited {result.returncode}:\n{result.output[-4000:]}"
        facts["drain"] = result
    want = expected(scn.produced)
    run_env = env or scn.env()
    split = splitter(run_env, reference_model)

    # Milvus: every good record as exactly its entities (its chunks, with chunking), each once,
    # with the right vector; nothing of a deleted record; nothing else.
    fields = ("id", "vector", "text", *(CHUNK_FIELDS if split is not None else ()))
    rows = _retry(lambda: harness.milvus_rows(scn.milvus_uri, scn.collection, fields=fields))
    entities = check_entities(rows, want.good, split, store_text(run_env))
    stored = {w.doc_id for w in entities.values()}
    rows.sort(key=lambda r: r["id"])
    ref = reference_vectors(reference_model, [entities[r["id"]].text for r in rows])
    got = np.asarray([r["vector"] for r in rows], dtype=np.float32)
    if len(got):
        got /= np.linalg.norm(got, axis=1, keepdims=True)
        cosine = (got * ref).sum(axis=1)
        worst = int(cosine.argmin())
        assert cosine[worst] >= COSINE_MIN, f"vector of {rows[worst]['id']} is off: cosine {cosine[worst]:.5f}"
    facts["rows"] = len(stored)  # records held (each one entity without chunking, its chunks with it)
    facts["entities"] = len(rows)

    # Dead letters: exactly the poison records.
    letters = dead_letters(scn)
    seen = Counter((int(d.headers["ingestor.partition"]), int(d.headers["ingestor.offset"])) for d in letters)
    assert set(seen) == set(want.poison), (
        f"DLQ holds {sorted(seen)} but the poison records are at {sorted(want.poison)}"
    )
    if not allow_dlq_duplicates:
        twice = {k: n for k, n in seen.items() if n > 1}
        assert not twice, f"dead-lettered more than once: {twice}"
    for d in letters:
        pos = (int(d.headers["ingestor.partition"]), int(d.headers["ingestor.offset"]))
        p = want.poison[pos]
        assert d.headers["ingestor.topic"] == scn.topic
        assert d.headers["ingestor.reason"] == p.rec.reason, (
            f"{pos}: reason {d.headers['ingestor.reason']} != {p.rec.reason}"
        )
        value = None if d.headers.get("ingestor.null_value") == "true" and d.value == b"" else d.value
        assert (d.key, value) == (p.rec.key, p.rec.value), f"{pos}: DLQ record bytes differ from the original"
    facts["dead_letters"] = len(letters)

    # Offsets: committed == end, per partition.
    committed, ends = scn.offsets()
    assert committed == ends, f"committed {committed} != end offsets {ends}"

    # Cache: no marker for a record Milvus does not hold.
    facts["markers"] = check_markers(scn, stored)
    return facts
