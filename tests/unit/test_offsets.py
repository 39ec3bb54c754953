"""OffsetTracker: commit only over a contiguous done prefix, per ownership generation."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingestor.offsets import CommitPoint, OffsetTracker
from ingestor.records import Position, TopicPartition

TP = TopicPartition("docs", 0)
OTHER = TopicPartition("docs", 1)


def pos(offset: int, generation: int, epoch: int = 0, tp: TopicPartition = TP) -> Position:
    return Position(tp, offset, epoch, generation, 0)


def read(tracker: OffsetTracker, generation: int, offsets, tp: TopicPartition = TP, epoch: int = 0) -> list[Position]:
    positions = [pos(o, generation, epoch, tp) for o in offsets]
    for p in positions:
        assert tracker.add(p)
    return positions


def test_nothing_to_commit_before_anything_is_done():
    t = OffsetTracker()
    g = t.assign(TP)
    read(t, g, [0, 1, 2])
    assert t.to_commit() == {}


def test_contiguous_prefix_commits_last_plus_one_with_its_epoch():
    t = OffsetTracker()
    g = t.assign(TP)
    ps = [pos(0, g, epoch=4), pos(1, g, epoch=5), pos(2, g, epoch=6)]
    for p in ps:
        t.add(p)
    t.done(ps[:2])
    assert t.to_commit() == {TP: CommitPoint(offset=2, leader_epoch=5)}


def test_out_of_order_done_waits_for_the_gap():
    t = OffsetTracker()
    g = t.assign(TP)
    ps = read(t, g, [0, 1, 2, 3])
    t.done([ps[2], ps[3]])
    assert t.to_commit() == {}
    t.done([ps[1]])
    assert t.to_commit() == {}
    t.done([ps[0]])
    assert t.to_commit() == {TP: CommitPoint(4, 0)}


def test_offset_gaps_commit_after_last_done_read_offset():
    t = OffsetTracker()
    g = t.assign(TP)
    ps = read(t, g, [0, 1, 5, 6])
    t.done(ps[:2])
    assert t.to_commit()[TP].offset == 2
    t.done(ps[2:])
    assert t.to_commit()[TP].offset == 7


def test_partitions_are_independent():
    t = OffsetTracker()
    g0, g1 = t.assign(TP), t.assign(OTHER)
    a = read(t, g0, [0, 1])
    b = read(t, g1, [10, 11], tp=OTHER)
    t.done([a[0], b[1]])
    assert t.to_commit() == {TP: CommitPoint(1, 0)}
    t.done([b[0]])
    assert t.to_commit() == {TP: CommitPoint(1, 0), OTHER: CommitPoint(12, 0)}


def test_each_assign_gets_a_new_generation():
    t = OffsetTracker()
    g1 = t.assign(TP)
    t.revoke(TP)
    g2 = t.assign(TP)
    assert g1 != g2
    assert t.generation(TP) == g2


def test_stale_generation_done_is_ignored_after_revoke_and_assign():
    t = OffsetTracker()
    old = t.assign(TP)
    stale = read(t, old, [0, 1, 2])
    t.revoke(TP)
    new = t.assign(TP)
    read(t, new, [0, 1, 2])
    t.done(stale)
    assert t.to_commit() == {}
    assert t.in_flight() == 3


def test_stale_generation_add_is_refused():
    t = OffsetTracker()
    old = t.assign(TP)
    t.revoke(TP)
    t.assign(TP)
    assert t.add(pos(0, old)) is False
    assert t.in_flight() == 0


def test_is_current_follows_ownership():
    t = OffsetTracker()
    g = t.assign(TP)
    assert t.is_current(pos(0, g))
    t.revoke(TP)
    assert not t.is_current(pos(0, g))
    g2 = t.assign(TP)
    assert not t.is_current(pos(0, g))
    assert t.is_current(pos(0, g2))


def test_add_for_unowned_partition_is_refused():
    t = OffsetTracker()
    assert t.add(pos(0, 1)) is False


def test_add_out_of_order_raises():
    t = OffsetTracker()
    g = t.assign(TP)
    read(t, g, [5])
    with pytest.raises(ValueError):
        t.add(pos(5, g))
    with pytest.raises(ValueError):
        t.add(pos(4, g))


def test_revoke_returns_the_uncommitted_done_point():
    t = OffsetTracker()
    g = t.assign(TP)
    ps = read(t, g, [0, 1, 2])
    t.done(ps[:2])
    assert t.revoke(TP) == CommitPoint(2, 0)
    assert TP not in t.owned()


def test_revoke_returns_none_when_already_committed():
    t = OffsetTracker()
    g = t.assign(TP)
    ps = read(t, g, [0, 1])
    t.done(ps)
    t.committed(TP, CommitPoint(2, 0), g)
    assert t.revoke(TP) is None


def test_revoke_returns_none_when_nothing_done():
    t = OffsetTracker()
    g = t.assign(TP)
    read(t, g, [0])
    assert t.revoke(TP) is None


def test_revoke_of_unowned_partition_is_none():
    assert OffsetTracker().revoke(TP) is None


def test_committed_point_is_not_offered_again():
    t = OffsetTracker()
    g = t.assign(TP)
    ps = read(t, g, [0, 1, 2])
    t.done(ps[:1])
    point = t.to_commit()[TP]
    t.committed(TP, point, g)
    assert t.to_commit() == {}
    assert t.last_committed(TP) == point
    t.done(ps[1:])
    assert t.to_commit() == {TP: CommitPoint(3, 0)}


def test_commit_ack_from_an_old_generation_is_ignored():
    t = OffsetTracker()
    old = t.assign(TP)
    t.revoke(TP)
    new = t.assign(TP)
    ps = read(t, new, [0])
    t.done(ps)
    t.committed(TP, CommitPoint(1, 0), old)
    assert t.to_commit() == {TP: CommitPoint(1, 0)}


def test_older_commit_ack_does_not_move_committed_back():
    t = OffsetTracker()
    g = t.assign(TP)
    ps = read(t, g, [0, 1, 2])
    t.done(ps)
    t.committed(TP, CommitPoint(3, 0), g)
    t.committed(TP, CommitPoint(1, 0), g)
    assert t.last_committed(TP) == CommitPoint(3, 0)
    assert t.to_commit() == {}


def test_in_flight_counts_read_not_done_over_partitions():
    t = OffsetTracker()
    g0, g1 = t.assign(TP), t.assign(OTHER)
    a = read(t, g0, [0, 1, 2])
    b = read(t, g1, [0, 1], tp=OTHER)
    assert t.in_flight() == 5
    t.done([a[0], b[0]])
    assert t.in_flight() == 3
    t.done([a[2]])  # not contiguous: still in flight until a[1] is done
    assert t.in_flight() == 3
    t.done([a[1]])
    assert t.in_flight() == 1


def test_revoke_drops_in_flight_of_that_partition():
    t = OffsetTracker()
    g = t.assign(TP)
    read(t, g, [0, 1])
    t.revoke(TP)
    assert t.in_flight() == 0


# -- property ------------------------------------------------------------------------------------


@st.composite
def reads_and_completions(draw):
    gaps = draw(st.lists(st.integers(min_value=1, max_value=5), min_size=1, max_size=40))
    start = draw(st.integers(min_value=0, max_value=1000))
    offsets = []
    current = start
    for gap in gaps:
        offsets.append(current)
        current += gap
    order = draw(st.permutations(range(len(offsets))))
    k = draw(st.integers(min_value=0, max_value=len(offsets)))
    steps = draw(st.lists(st.integers(min_value=1, max_value=5), max_size=len(offsets)))
    return offsets, list(order[:k]), steps


def expected_point(offsets: list[int], done: set[int]) -> int | None:
    """(largest read offset o such that every read offset <= o is done) + 1, or None."""
    last = None
    for o in offsets:
        if o not in done:
            break
        last = o
    return None if last is None else last + 1


@settings(max_examples=300)
@given(reads_and_completions())
def test_commit_point_is_end_of_done_prefix_and_never_moves_back(case):
    offsets, completion, steps = case
    t = OffsetTracker()
    g = t.assign(TP)
    positions = {o: pos(o, g, epoch=o % 7) for o in offsets}
    for o in offsets:
        assert t.add(positions[o])
    done: set[int] = set()
    previous = -1
    i = 0
    chunks = list(steps) + [len(completion)]  # last chunk finishes the chosen prefix
    for size in chunks:
        if i >= len(completion):
            break
        chunk = [offsets[j] for j in completion[i : i + size]]
        i += size
        t.done([positions[o] for o in chunk])
        done.update(chunk)
        point = t.to_commit().get(TP)
        want = expected_point(offsets, done)
        assert (point.offset if point else None) == want
        if point is not None:
            assert point.offset >= previous
            assert point.leader_epoch == (point.offset - 1) % 7  # epoch of the last done record
            first_not_done = next((o for o in offsets if o not in done), None)
            if first_not_done is not None:
                assert point.offset <= first_not_done
            previous = point.offset
        assert t.in_flight() == len(offsets) - (offsets.index(want - 1) + 1 if want is not None else 0)


# -- following the fetch position over offsets never delivered (transaction markers, aborts) ------


def test_an_idle_partition_follows_the_position_past_offsets_never_delivered():
    t = OffsetTracker()
    g = t.assign(TP)
    ps = read(t, g, [0, 1, 2], epoch=3)
    t.done(ps)
    # Offset 3 is a commit marker: the consumer's next offset is 4.
    assert t.idle() == {TP: g}
    t.follow(TP, 4, g)
    assert t.to_commit() == {TP: CommitPoint(offset=4, leader_epoch=3)}


def test_a_partition_with_records_in_flight_does_not_follow():
    t = OffsetTracker()
    g = t.assign(TP)
    ps = read(t, g, [0, 1, 2])
    t.done(ps[:2])
    assert TP not in t.idle()
    t.follow(TP, 10, g)
    assert t.to_commit() == {TP: CommitPoint(offset=2, leader_epoch=0)}


def test_follow_never_moves_backwards_nor_for_an_old_generation():
    t = OffsetTracker()
    g = t.assign(TP)
    t.committed(TP, CommitPoint(50, 1), g)
    t.follow(TP, 40, g)
    assert t.to_commit() == {}
    t.follow(TP, 60, g + 1)
    assert t.to_commit() == {}
    g2 = t.assign(TP)
    t.follow(TP, 70, g)
    assert t.to_commit() == {}
    t.follow(TP, 70, g2)
    assert t.to_commit() == {TP: CommitPoint(offset=70, leader_epoch=-1)}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["read", "done", "follow"]), st.integers(0, 3)), max_size=40))
def test_follow_never_commits_past_a_record_in_flight(steps):
    """Whatever the interleaving, the commit point never passes a read record that is not done."""
    t = OffsetTracker()
    g = t.assign(TP)
    next_offset, pending = 0, []
    for action, n in steps:
        if action == "read":
            next_offset += n  # offsets skipped: markers or aborted records, never delivered
            pending += read(t, g, [next_offset])
            next_offset += 1
        elif action == "done" and pending:
            t.done([pending.pop(min(n, len(pending) - 1))])
        elif action == "follow":
            t.follow(TP, next_offset, g)
        point = t.to_commit().get(TP)
        if point is not None and pending:
            assert point.offset <= min(p.offset for p in pending)
