"""The query side's queue with a fake clock: admission by tokens, batches cut as the daemon cuts
them, and Retry-After from the rate seen; then the model thread over it with a fake model stage."""

from __future__ import annotations

import threading

import numpy as np

from ingestor.batching import BatchLimits
from ingestor.serve.model_thread import ModelThread, Request
from ingestor.serve.queue import Queue
from ingestor.work import Unit

LIMITS = BatchLimits(max_records=4, max_tokens=64)


def queue(max_queued_tokens: int = 100, max_wait_ms: int = 10, window: int = 8) -> Queue[int]:
    return Queue(LIMITS, max_wait_ms, window, max_queued_tokens, tokens=lambda n: n)


def test_a_text_waits_at_most_max_wait_ms_at_low_load():
    q = queue()
    assert q.admit([5], now_s=0.0)
    assert q.take(0.005) == []
    assert q.deadline() == 0.010
    assert q.take(0.010) == [[5]]
    assert q.deadline() is None and q.take(1.0) == []


def test_after_a_pass_the_window_waits_for_the_clients_it_answered():
    """Their next requests come just after the pass: cut at once, the texts that waited through it
    would ride alone, and the answered clients' texts in the pass after."""
    q = queue(max_wait_ms=10)
    assert q.admit([1, 2], now_s=0.0)
    [first] = q.take(0.010)
    assert q.admit([3], now_s=0.012)  # arrives while the pass runs
    q.done(first, 0.010, now_s=0.020)
    assert q.take(0.021) == []  # waited long enough itself, but the pass just ended
    assert q.deadline() == 0.030
    assert q.admit([4, 5], now_s=0.022)  # the answered clients come back
    assert q.take(0.030) == [[5, 4, 3]]


def test_a_full_batch_after_a_pass_is_cut_at_once():
    q = queue(max_wait_ms=10)
    assert q.admit([1], 0.0)
    q.done(q.take(0.010)[0], 0.01, now_s=0.020)
    assert q.admit([1, 2, 3, 4], now_s=0.020)
    assert q.take(0.020) == [[4, 3, 2, 1]]


def test_a_full_batch_is_cut_at_once_sorted_longest_first():
    q = queue()
    assert q.admit([3, 9, 1, 7], now_s=0.0)  # max_records reached
    assert q.take(0.0) == [[9, 7, 3, 1]]


def test_a_batch_of_tokens_is_cut_at_once_and_split_by_the_token_budget():
    q = queue(max_queued_tokens=1_000)
    assert q.admit([40, 30, 20], now_s=0.0)  # 90 tokens: over one pass's 64
    batches = q.take(0.0)
    assert sorted(x for b in batches for x in b) == [20, 30, 40]
    assert all(len(b) * max(b) <= LIMITS.max_tokens or len(b) == 1 for b in batches)


def test_a_client_batch_larger_than_a_pass_is_split_across_passes_and_all_served():
    q = queue(max_queued_tokens=10_000, window=8)
    texts = list(range(1, 21))  # 20 texts, 4 per pass at most, a window of 8
    assert q.admit(texts, now_s=0.0)
    served: list[int] = []
    now = 0.0
    while q.queued_texts:
        for batch in q.take(now):
            assert len(batch) <= LIMITS.max_records
            served += batch
            q.done(batch, 0.01, now)
        now += 0.01
    assert sorted(served) == texts
    assert q.queued_tokens == 0


def test_admission_counts_tokens_not_requests():
    q = queue(max_queued_tokens=20)
    assert q.admit([10], 0.0)
    assert q.admit([5, 5], 0.0)  # exactly full
    assert not q.admit([1], 0.0)  # one token more does not fit, however small the request
    assert q.queued_tokens == 20 and q.queued_texts == 3
    batches = q.take(1.0)
    for b in batches:
        q.done(b, 0.1, 1.1)
    assert q.queued_tokens == 0
    assert q.admit([1], 1.1)


def test_a_request_larger_than_the_budget_is_served_alone_not_refused_for_ever():
    q = queue(max_queued_tokens=20)
    assert q.admit([15, 15], 0.0)  # nothing waits: admitted although over the budget
    assert not q.admit([1], 0.0)
    now = 1.0
    while q.queued_texts:
        for b in q.take(now):
            q.done(b, 0.1, now)
        now += 0.1
    assert q.admit([1], now)


def test_retry_after_follows_the_embedding_rate():
    q = queue(max_queued_tokens=1_000)
    assert q.retry_after_s() == 1  # nothing measured yet
    assert q.admit([10] * 4, 0.0)
    [batch] = q.take(0.0)
    q.done(batch, 1.0, 1.0)  # 40 tokens a second
    assert q.admit([10] * 4 * 5, 0.0)  # 200 tokens queued: five seconds' worth
    assert q.retry_after_s() == 5
    q.tokens_per_s = 0.001
    assert q.retry_after_s() == 60  # capped


class FakeStage:
    """The model stage's interface: a unit's vector is its token count, in one dimension."""

    def __init__(self) -> None:
        self.passes: list[list[int]] = []

    def collate(self, work) -> None:
        pass

    def embed(self, work) -> None:
        self.passes.append([u.tokens for u in work.units])
        for u in work.units:
            if u.text == "poison":
                raise RuntimeError("boom")
            u.vector = np.array([u.tokens], dtype=np.float32)


def units(*tokens: int, text: str = "t") -> list[Unit]:
    out = []
    for n in tokens:
        u = Unit(text, "sha", [])
        u.tokens = n
        out.append(u)
    return out


def test_the_model_thread_serves_each_request_whole_across_passes():
    stage = FakeStage()
    q: Queue = Queue(LIMITS, 1, 8, 1_000, ModelThread.tokens)
    thread = ModelThread(stage, q)  # type: ignore[arg-type]
    thread.start()
    try:
        finished = [threading.Event() for _ in range(3)]
        requests = [Request(units(*range(1 + i, 11 + i)), finished[i].set) for i in range(3)]
        assert all(thread.submit(r) for r in requests)
        assert all(e.wait(10) for e in finished)
        for r in requests:
            assert [int(u.vector[0]) for u in r.units] == [u.tokens for u in r.units]
            assert r.left == 0 and not r.failed
        assert all(len(p) <= LIMITS.max_records for p in stage.passes)
        assert q.queued_tokens == 0
    finally:
        thread.stop()


def test_a_pass_that_raises_fails_its_requests_and_the_thread_goes_on():
    stage = FakeStage()
    thread = ModelThread(stage, Queue(LIMITS, 1, 8, 1_000, ModelThread.tokens))  # type: ignore[arg-type]
    thread.start()
    try:
        bad, good = threading.Event(), threading.Event()
        poisoned = Request(units(3, text="poison"), bad.set)
        assert thread.submit(poisoned) and bad.wait(10)
        assert poisoned.failed and poisoned.units[0].vector is None
        fine = Request(units(3), good.set)
        assert thread.submit(fine) and good.wait(10)
        assert not fine.failed and thread.alive
    finally:
        thread.stop()
