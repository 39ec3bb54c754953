"""The model stage: a work's units become vectors. Texts shared with earlier work take its vectors,
the rest go through one forward pass (bisected when it fails: `embedder.encode_all`), and the
records of a text the model cannot encode become the work's dead letters; the stage's metrics
(cache hits, batch sizes, pass time, texts embedded and truncated) are counted here.

`tokenize` and `collate` prepare a window's texts for the pass; the batcher thread calls them, so
the next batch is prepared while the current one runs on the device.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from ingestor import hooks, metrics
from ingestor.embedder import Embedder, encode_all
from ingestor.records import fail
from ingestor.work import Unit, Work


class ModelStage:
    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder

    def tokenize(self, units: list[Unit]) -> None:
        """Token counts (which decide the cut), truncation and encodings of `units`; a unit whose
        ids chunking already has is not tokenised again."""
        todo = [u for u in units if u.token_ids is None]
        for unit in units:
            if unit.token_ids is not None:
                unit.tokens, unit.truncated, unit.encoding = (
                    len(unit.token_ids),
                    False,
                    self.embedder.encoding(unit.token_ids),
                )
        for unit, prepared in zip(todo, self.embedder.prepare([u.text for u in todo])):
            unit.tokens, unit.truncated, unit.encoding = prepared.tokens, prepared.truncated, prepared.encoding

    def collate(self, work: Work) -> None:
        """The padded tensors of the units `work` embeds, ready for its pass."""
        if work.claimed:
            encodings = [u.encoding for u in work.claimed if u.encoding is not None]
            assert len(encodings) == len(work.claimed), "every claimed unit was tokenised"
            work.features = self.embedder.collate(encodings)

    def embed(self, work: Work) -> None:
        """Vectors for the work's units, dead letters for the texts the model cannot encode."""
        if any(u.from_cache for u in work.units):
            metrics.RECORDS_CACHE_HIT.inc(sum(len(u.docs) for u in work.units if u.from_cache))
        # The units the pass was collated for: those with no vector of their own before the shared
        # ones take theirs (a unit whose shared pass failed becomes one, but it is not in the pass).
        todo = [u for u in work.units if u.to_embed]
        late = self._take_shared(work)
        if not todo and not late:
            return
        started = time.perf_counter()
        if todo:
            metrics.BATCH_RECORDS.observe(len(todo))
            metrics.BATCH_TOKENS.observe(work.padded_tokens)
            hooks.current.before_batch()
            features = work.features

            def forward() -> np.ndarray:
                assert features is not None
                hooks.current.before_forward([u.text for u in todo])
                return self.embedder.forward(features)

            self._take_vectors(work, todo, forward if features is not None else None)
        self._take_vectors(work, late, None)
        work.features = None
        work.units = [u for u in work.units if u.vector is not None]
        metrics.EMBED_SECONDS.observe(time.perf_counter() - started)
        metrics.RECORDS_EMBEDDED.inc(len(todo) + len(late))
        metrics.RECORDS_TRUNCATED.inc(sum(len(u.docs) for u in todo + late if u.truncated))
        hooks.current.point("after_embed")

    def _take_shared(self, work: Work) -> list[Unit]:
        """Units sharing an earlier pass take its vector; returns those whose pass failed, to be
        embedded here (tokenised now: the batcher skipped them)."""
        late: list[Unit] = []
        for unit in work.units:
            source = unit.shares
            if source is None or unit.vector is not None:
                continue
            unit.shares = None
            if source.vector is not None:
                unit.vector, unit.truncated = source.vector, source.truncated
            else:
                late.append(unit)
        if late:
            self.tokenize(late)
        return late

    def _take_vectors(self, work: Work, units: list[Unit], forward: Callable[[], np.ndarray] | None) -> None:
        """Vectors for `units` (see `embedder.encode_all`); the records of a text the model cannot
        encode become the work's dead letters."""
        if not units:
            return

        def encode(texts: list[str]) -> np.ndarray:
            hooks.current.before_forward(texts)
            return self.embedder.encode(texts)

        encoded = encode_all([u.text for u in units], encode, forward)
        for unit, vector in zip(units, encoded.vectors):
            unit.vector = vector
        for i, error in encoded.errors.items():
            for doc in units[i].docs:
                work.rejected += fail(doc, error.reason, str(error))
