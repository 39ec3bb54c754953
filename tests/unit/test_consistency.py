"""What a read of Milvus waits for (`consistency.Consistency`): an older write's timestamp where
that sees every write the read needs, else Session consistency, anchored by a write where no write
of ours came after the records' partitions were assigned."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ingestor.consistency import Consistency, Read


def test_nothing_written_anchors_then_reads_at_session_consistency():
    c = Consistency(settle_s=1.0)
    assert c.read(["a"], {1}, now_s=10.0) == Read(anchor=True, guarantee=None)
    c.wrote(1, 10.0, 100, [])  # the anchor
    assert c.read(["a"], {1}, now_s=10.1) == Read(anchor=False, guarantee=None), "not settled yet: Session"
    assert c.read(["a"], {1}, now_s=11.0) == Read(anchor=False, guarantee=100)


def test_a_record_written_since_the_guarantee_is_read_at_session_consistency():
    c = Consistency(settle_s=1.0)
    c.wrote(1, 10.0, 100, ["a"])
    c.wrote(1, 10.5, 200, ["b"])
    assert c.read(["a", "c"], {1}, now_s=11.2) == Read(False, 100), "a is older than the guarantee"
    assert c.read(["b"], {1}, now_s=11.2) == Read(False, None), "b's write came after it"
    assert c.read(["b"], {1}, now_s=11.5) == Read(False, 200)


def test_a_partition_assigned_after_the_guarantee_was_written_waits_for_a_newer_write():
    c = Consistency(settle_s=1.0)
    c.wrote(1, 10.0, 100, [])
    assert c.read(["a"], {2}, now_s=12.0) == Read(anchor=True, guarantee=None)
    c.wrote(2, 12.0, 300, [])
    assert c.read(["a"], {2}, now_s=12.1) == Read(False, None)
    assert c.read(["a"], {1, 2}, now_s=13.0) == Read(False, 300)


def test_without_timestamps_reads_are_session_reads():
    c = Consistency(settle_s=1.0)
    c.wrote(1, 10.0, 0, ["a"])  # Milvus Lite gives no timestamp
    assert c.read(["b"], {1}, now_s=20.0) == Read(False, None)


writes = st.lists(st.tuples(st.integers(1, 3), st.floats(0, 0.6), st.sets(st.sampled_from("abcde"), max_size=3)),
                  max_size=12)


@settings(max_examples=300, deadline=None)
@given(writes, st.lists(st.tuples(st.floats(0, 0.6), st.sets(st.sampled_from("abcde"), max_size=3),
                                  st.sets(st.integers(1, 3), max_size=2)), max_size=12))
def test_a_guarantee_covers_every_write_of_ours_to_the_records_read_and_the_last_owners(ws, reads):
    """Writes (generation, gap, ids) and reads (gap, ids, generations) interleaved in time: a read
    given a guarantee misses no write of ours to its records (none came after it), and the
    guarantee's write was issued after its partitions were assigned; a Session read without an
    anchor has some write of ours after their assignment."""
    c = Consistency(settle_s=0.5)
    now, ts, done = 0.0, 0, []
    events = sorted([(w[1] + i * 0.3, "w", w) for i, w in enumerate(ws)] +
                    [(r[0] + i * 0.3, "r", r) for i, r in enumerate(reads)], key=lambda e: e[0])
    generation = 0
    for at, kind, event in events:
        now = max(now, at)
        if kind == "w":
            generation = max(generation, event[0])
            ts += 10
            c.wrote(generation, now, ts, sorted(event[2]))
            done.append((generation, now, ts, set(event[2])))
            continue
        _, ids, gens = event
        read = c.read(sorted(ids), gens, now)
        newest = max(gens, default=0)
        if read.guarantee is not None:
            [base] = [w for w in done if w[2] == read.guarantee]
            assert base[1] <= now - 0.5 and base[0] >= newest
            assert not any(w[2] > read.guarantee and w[3] & ids for w in done)
        elif not read.anchor:
            assert newest == 0 or any(w[0] >= newest for w in done)
