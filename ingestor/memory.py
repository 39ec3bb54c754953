"""The garbage collector's settings for a process that allocates per record: the daemon's, and the
Milvus Lite child's."""

from __future__ import annotations

import gc


def tune_gc(gen0_threshold: int) -> None:
    """Fewer, cheaper garbage collections for a process that allocates per record: everything
    alive now (modules, the model) moves to the permanent generation, never scanned again, and a
    young collection runs every `gen0_threshold` allocations instead of every 700. The pipeline's
    records rarely form cycles; collection only has to find those few. 0 leaves Python's settings."""
    if gen0_threshold <= 0:
        return
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0_threshold, max(gen1, 50), max(gen2, 100))
