"""The one oracle every fault scenario ends with (see docs/reliability.md, "Fault matrix").

After the scenario: drain with `ingestor run --until-caught-up`, then check record by record:

- no loss, right result: every good id is in Milvus with a vector whose cosine with plain
  `SentenceTransformer.encode` of its text is >= 0.999; ids that were deleted are not;
- no duplicates: one entity per id (read with an iterator, so a duplicate would show);
- dead letters: exactly the poison records, by source position, with their reason and their
  original key and value bytes (a crash between the DLQ write and the commit may write one twice:
  `allow_dlq_duplicates`);
- offsets: committed == end offset, per partition;
- cache: no marker (`<prefix>:doc:*` of this collection) for an id that Milvus does not hold.

`check_committed_prefix` is the invariant that holds at every moment, not only at the end:
whatever the group committed is done (a good record below the committed offset is in Milvus, a
poison one is in the DLQ).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from ingestor.dedupe import marker_key
from tests.support import harness
from tests.faults.stack import Produced, Scenario

T = TypeVar("T")
COSINE_MIN = 0.999

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
    from ingestor.sink import _INCARNATION_PREFIX

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
    code = ("import json, sys\nfrom pymilvus import MilvusClient\n"
            "c = MilvusClient(uri=sys.argv[1])\n"
            "json.dump(c.describe_collection(sys.argv[2]), sys.stdout, default=str)\nc.close()\n")
    proc = subprocess.run([sys.executable, "-c", code, uri, collection], capture_output=True, text=True,
                          timeout=300, check=False)
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


def check_committed_prefix(scn: Scenario, committed: dict[int, int] | None = None) -> dict[int, int]:
    """Everything below the committed offsets is done. Read the offsets first, then Milvus and the
    DLQ (both only grow in these scenarios), so a later read can only hold more."""
    committed = scn.committed() if committed is None else committed
    in_milvus = scn.milvus_ids()
    letters = dead_letters(scn)
    lettered = {(int(d.headers["ingestor.partition"]), int(d.headers["ingestor.offset"])) for d in letters}
    last: dict[str, Produced] = {}
    for p in scn.produced:
        if p.offset < committed.get(p.partition, 0) and p.rec.id is not None:
            last[p.rec.id] = p
    missing = sorted(i for i, p in last.items() if p.rec.kind == "doc" and i not in in_milvus)
    assert not missing, (f"committed {committed} covers {len(missing)} record(s) not in Milvus: {missing[:10]}")
    unlettered = sorted((p.partition, p.offset) for p in scn.produced
                        if p.rec.kind == "poison" and p.offset < committed.get(p.partition, 0)
                        and (p.partition, p.offset) not in lettered)
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

    # Milvus: every good id once, with the right vector; no deleted id; nothing else.
    rows = _retry(lambda: harness.milvus_rows(scn.milvus_uri, scn.collection, fields=("id", "vector")))
    counts = Counter(r["id"] for r in rows)
    dups = {i: n for i, n in counts.items() if n > 1}
    assert not dups, f"ids stored more than once: {dict(list(dups.items())[:10])}"
    stored = set(counts)
    missing = sorted(set(want.good) - stored)
    assert not missing, f"{len(missing)} good record(s) missing from Milvus: {missing[:10]}"
    extra = sorted(stored - set(want.good))
    assert not extra, f"{len(extra)} unexpected id(s) in Milvus (deleted or never good): {extra[:10]}"
    rows.sort(key=lambda r: r["id"])
    ref = reference_vectors(reference_model, [want.good[r["id"]] for r in rows])
    got = np.asarray([r["vector"] for r in rows], dtype=np.float32)
    if len(got):
        got /= np.linalg.norm(got, axis=1, keepdims=True)
        cosine = (got * ref).sum(axis=1)
        worst = int(cosine.argmin())
        assert cosine[worst] >= COSINE_MIN, f"vector of {rows[worst]['id']} is off: cosine {cosine[worst]:.5f}"
    facts["rows"] = len(rows)

    # Dead letters: exactly the poison records.
    letters = dead_letters(scn)
    seen = Counter((int(d.headers["ingestor.partition"]), int(d.headers["ingestor.offset"])) for d in letters)
    assert set(seen) == set(want.poison), (
        f"DLQ holds {sorted(seen)} but the poison records are at {sorted(want.poison)}")
    if not allow_dlq_duplicates:
        twice = {k: n for k, n in seen.items() if n > 1}
        assert not twice, f"dead-lettered more than once: {twice}"
    for d in letters:
        pos = (int(d.headers["ingestor.partition"]), int(d.headers["ingestor.offset"]))
        p = want.poison[pos]
        assert d.headers["ingestor.topic"] == scn.topic
        assert d.headers["ingestor.reason"] == p.rec.reason, f"{pos}: reason {d.headers['ingestor.reason']} != {p.rec.reason}"
        value = None if d.headers.get("ingestor.null_value") == "true" and d.value == b"" else d.value
        assert (d.key, value) == (p.rec.key, p.rec.value), f"{pos}: DLQ record bytes differ from the original"
    facts["dead_letters"] = len(letters)

    # Offsets: committed == end, per partition.
    committed, ends = scn.offsets()
    assert committed == ends, f"committed {committed} != end offsets {ends}"

    # Cache: no marker for an id Milvus does not hold.
    facts["markers"] = check_markers(scn, stored)
    return facts
