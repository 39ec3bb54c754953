"""The guarantee a read of Milvus names (`consistency.Consistency`): an older write's timestamp
where that covers every write the read needs, else None (Strong)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ingestor.consistency import Consistency


def test_nothing_written_reads_strong_until_a_write_with_a_timestamp_settles():
    c = Consistency(settle_s=1.0)
    assert c.guarantee(["a"], {1}, now_s=10.0) is None
    c.wrote(1, 10.0, 100, [])
    assert c.guarantee(["a"], {1}, now_s=10.1) is None, "not settled yet"
    assert c.guarantee(["a"], {1}, now_s=11.0) == 100


def test_a_record_written_since_the_guarantee_reads_strong():
    c = Consistency(settle_s=1.0)
    c.wrote(1, 10.0, 100, ["a"])
    c.wrote(1, 10.5, 200, ["b"])
    assert c.guarantee(["a", "c"], {1}, now_s=11.2) == 100, "a is older than the guarantee"
    assert c.guarantee(["b"], {1}, now_s=11.2) is None, "b's write came after it"
    assert c.guarantee(["b"], {1}, now_s=11.5) == 200


def test_a_partition_assigned_after_the_guarantee_was_written_waits_for_a_newer_write():
    c = Consistency(settle_s=1.0)
    c.wrote(1, 10.0, 100, [])
    assert c.guarantee(["a"], {2}, now_s=12.0) is None
    c.wrote(2, 12.0, 300, [])
    assert c.guarantee(["a"], {2}, now_s=12.1) is None
    assert c.guarantee(["a"], {1, 2}, now_s=13.0) == 300


def test_a_delete_without_a_timestamp_stays_recent_until_a_later_write_covers_it():
    c = Consistency(settle_s=1.0)
    c.wrote(1, 10.0, 100, ["a"])
    c.wrote(1, 10.2, 0, ["gone"])  # a Milvus 2.3 server gives a delete no timestamp
    assert c.guarantee(["gone"], {1}, now_s=20.0) is None
    assert c.guarantee(["a", "x"], {1}, now_s=20.0) == 100
    c.wrote(1, 20.0, 400, ["b"])
    assert c.guarantee(["gone", "b"], {1}, now_s=21.0) == 400


def test_without_timestamps_every_read_is_strong():
    c = Consistency(settle_s=1.0)
    c.wrote(1, 10.0, 0, ["a"])  # Milvus Lite gives no timestamps
    assert c.guarantee(["b"], {1}, now_s=20.0) is None


def test_too_many_uncovered_writes_are_forgotten_and_reads_go_strong():
    from ingestor import consistency

    c = Consistency(settle_s=1.0)
    c.wrote(1, 10.0, 100, [])
    c.wrote(1, 10.1, 0, [str(i) for i in range(consistency.MAX_UNCOVERED_IDS + 1)])
    assert c.guarantee(["x"], {1}, now_s=20.0) is None
    assert not c._recent, "nothing kept"
    c.wrote(1, 20.0, 500, [])
    assert c.guarantee(["0"], {1}, now_s=21.0) == 500


writes = st.lists(
    st.tuples(st.integers(1, 3), st.floats(0, 0.6), st.booleans(), st.sets(st.sampled_from("abcde"), max_size=3)),
    max_size=14,
)
reads = st.lists(
    st.tuples(st.floats(0, 0.6), st.sets(st.sampled_from("abcde"), max_size=3), st.sets(st.integers(1, 3), max_size=2)),
    max_size=12,
)


@settings(max_examples=400, deadline=None)
@given(writes, reads)
def test_a_guarantee_covers_every_write_of_ours_to_the_records_read_and_the_last_owners(ws, rs):
    """Writes (generation, gap, has a timestamp, ids) and reads (gap, ids, generations) in time: a
    guarantee is the timestamp of a write of ours acknowledged `settle_s` before, issued after the
    read's partitions were assigned, and no write of ours to a record read is after it (a write
    without a timestamp counts as after every write up to the next one with one)."""
    c = Consistency(settle_s=0.5)
    events = sorted(
        [(w[1] + i * 0.3, "w", w) for i, w in enumerate(ws)] + [(r[0] + i * 0.3, "r", r) for i, r in enumerate(rs)],
        key=lambda e: e[0],
    )
    now, ts, generation, done = 0.0, 0, 0, []
    for at, kind, event in events:
        now = max(now, at)
        if kind == "w":
            generation = max(generation, event[0])
            ts += 10
            c.wrote(generation, now, ts if event[2] else 0, sorted(event[3]))
            done.append((generation, now, ts, event[2], set(event[3])))
            continue
        _, ids, gens = event
        g = c.guarantee(sorted(ids), gens, now)
        if g is None:
            continue
        [base] = [w for w in done if w[2] == g]
        assert base[3] and base[1] <= now - 0.5 and base[0] >= max(gens, default=0)
        assert not any(w[2] > g and w[4] & ids for w in done), "a later write of a record read"
