"""The model stage (`model_stage.ModelStage`), with a fake model: shared and cached vectors, one
pass for the rest, dead letters, its metrics."""

from __future__ import annotations

import numpy as np

from ingestor.errors import Reason


def _work(texts: list[str]):
    """A work whose units (one per text) all still need the model, as the batcher plans it."""
    from ingestor.batching import BatchLimits, plan
    from tests.support.fakes import Log, LoggingTracker, records_for

    items = records_for(
        LoggingTracker(Log()), [(None, b'{"id":"%d","text":"%s"}' % (i, t.encode())) for i, t in enumerate(texts)]
    )
    [work] = plan(items, BatchLimits(64, 8192))
    return work


def _stage(log, embedder=None):
    from ingestor.model_stage import ModelStage
    from tests.support.fakes import FakeEmbedder

    return ModelStage(embedder or FakeEmbedder(log))


def _prepared(stage, work):
    """What the batcher does before the work reaches the model thread."""
    stage.tokenize([u for u in work.units if u.to_embed])
    work.claimed = [u for u in work.units if u.to_embed]
    stage.collate(work)
    return work


def test_cached_and_shared_units_take_their_vectors_and_the_rest_run_one_pass():
    from ingestor import metrics
    from tests.support.fakes import Log

    log = Log()
    stage = _stage(log)
    work = _work(["cached", "shared", "new", "newer"])
    cached, shared, *_ = work.units
    cached.vector, cached.from_cache = np.full(4, 3.0, dtype=np.float32), True
    source = _work(["shared"]).units[0]
    source.vector, source.truncated = np.full(4, 2.0, dtype=np.float32), True
    shared.shares = source
    _prepared(stage, work)
    before = {m: metrics.total(m) for m in (metrics.RECORDS_CACHE_HIT, metrics.RECORDS_EMBEDDED)}
    stage.embed(work)
    assert log == [("forward", 2)], "one pass, over the units with no vector of their own"
    assert work.features is None and [u.text for u in work.units] == ["cached", "shared", "new", "newer"]
    assert np.array_equal(shared.vector, source.vector) and shared.truncated and shared.shares is None
    assert metrics.total(metrics.RECORDS_CACHE_HIT) - before[metrics.RECORDS_CACHE_HIT] == 1
    assert metrics.total(metrics.RECORDS_EMBEDDED) - before[metrics.RECORDS_EMBEDDED] == 2


def test_a_unit_whose_shared_pass_failed_is_tokenised_and_embedded_by_its_own_work():
    from tests.support.fakes import Log

    log = Log()
    stage = _stage(log)
    work = _work(["same"])
    [late] = work.units
    late.shares = _work(["same"]).units[0]  # its pass failed: no vector
    stage.embed(work)
    assert log == [("encode", 1)] and late.tokens == 5 and late.vector is not None


def test_a_failed_shared_pass_beside_a_forward_pass_leaves_every_vector_in_place():
    """The unit that embeds its text itself is not part of the collated pass: the pass's vectors
    go to the units it was collated for, all of them."""
    from tests.support.fakes import FakeEmbedder, Log

    class Numbered(FakeEmbedder):
        """Row i of a pass is [i + 1, ...]; an encoded text's vector is all zeros."""

        def forward(self, features):
            super().forward(features)
            return np.arange(1, features["n"] + 1, dtype=np.float32)[:, None].repeat(4, axis=1)

        def encode(self, texts):
            return super().encode(texts) * 0

    log = Log()
    stage = _stage(log, Numbered(log))
    work = _work(["same", "new", "newer"])
    late, new, newer = work.units
    late.shares = _work(["same"]).units[0]
    _prepared(stage, work)
    assert work.claimed == [new, newer]
    stage.embed(work)
    assert log == [("forward", 2), ("encode", 1)]
    assert [u.text for u in work.units] == ["same", "new", "newer"] and work.rejected == []
    assert [u.vector[0] for u in work.units] == [0, 1, 2], "each unit has its own text's vector"


def test_a_text_the_model_cannot_encode_dead_letters_its_records_and_leaves_the_work():
    from ingestor import metrics
    from tests.support.fakes import FakeEmbedder, Log

    class Refusing(FakeEmbedder):
        def forward(self, features):
            raise RuntimeError("batch failed")

        def encode(self, texts):
            if "bad" in texts:
                raise RuntimeError("cannot encode")
            return super().encode(texts)

    log = Log()
    stage = _stage(log, Refusing(log))
    work = _prepared(stage, _work(["good", "bad", "fine"]))
    embedded = metrics.total(metrics.RECORDS_EMBEDDED)
    stage.embed(work)
    assert [u.text for u in work.units] == ["good", "fine"]
    assert [(r.position.offset, r.reason) for r in work.rejected] == [(1, Reason.EMBED_FAILED.value)]
    assert metrics.total(metrics.RECORDS_EMBEDDED) - embedded == 3, "a text that failed was run through the model"


def test_a_work_with_nothing_to_embed_leaves_the_model_alone():
    from tests.support.fakes import Log

    log = Log()
    stage = _stage(log)
    work = _work(["cached"])
    work.units[0].vector, work.units[0].from_cache = np.ones(4, dtype=np.float32), True
    stage.collate(_prepared(stage, work))
    stage.embed(work)
    assert log == [] and work.features is None and len(work.units) == 1
