"""What is planned and not yet written (`in_flight.InFlight`): records, the chunks an earlier
work left for a later one, and texts being embedded."""

from __future__ import annotations

import hashlib

from ingestor.in_flight import InFlight
from ingestor.work import Unit


def _unit(text: str) -> Unit:
    return Unit(text, hashlib.sha256(text.encode()).hexdigest(), [])


def test_a_claimed_text_is_shared_until_its_owner_is_settled():
    in_flight = InFlight()
    owner = _unit("a")
    in_flight.claim([owner])
    later, other = _unit("a"), _unit("b")
    in_flight.enter([], [later, other])
    assert later.shares is owner and other.shares is None
    assert not later.to_embed and other.to_embed
    in_flight.settle([], [later])  # not the owner: nothing happens
    assert len(in_flight) == 1
    in_flight.settle([], [owner])
    again = _unit("a")
    in_flight.enter([], [again])
    assert again.shares is None and len(in_flight) == 0


def test_every_claimed_text_is_shared_however_many_and_settling_empties_the_registry():
    """A few records may hold thousands of chunks: no count of records bounds the texts in flight."""
    owners = [_unit(str(i)) for i in range(5_000)]
    in_flight = InFlight()
    in_flight.claim(owners)
    later = [_unit(str(i)) for i in range(5_000)]
    in_flight.enter([], later)
    assert all(u.shares is o for u, o in zip(later, owners, strict=True))
    in_flight.settle([], owners)
    assert len(in_flight) == 0


def test_an_id_an_earlier_work_carries_is_busy():
    in_flight = InFlight()
    in_flight.enter(["a", "b"], [])
    assert in_flight.busy_among(["a", "b"]) == set(), "carried once: by this window only"
    in_flight.enter(["a"], [])
    assert in_flight.busy_among(["a", "b", "c"]) == {"a"}


def test_an_extent_is_kept_only_while_a_later_work_still_carries_the_id():
    in_flight = InFlight()
    in_flight.enter(["a", "b"], [])
    in_flight.enter(["a"], [])  # a later window carries a again
    in_flight.settle(["a", "b"], [], {"a": 3, "b": 2})
    assert in_flight.extent("a") == 3, "the later work must trim what the earlier one left"
    assert in_flight.extent("b") is None, "no work carries b any more"
    in_flight.settle(["a"], [], {"a": 1})
    assert in_flight.extent("a") is None and in_flight.busy_among(["a", "b"]) == set()
