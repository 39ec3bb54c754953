"""Exponential backoff with full jitter and a cap. Pure: randomness is injected."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    initial_ms: int = 200
    max_ms: int = 30_000
    multiplier: float = 2.0
    jitter: float = 0.2

    def delay_s(self, attempt: int, rng: random.Random | None = None) -> float:
        """Delay before retry number `attempt` (0-based): grows geometrically up to the cap, with
        ±`jitter` spread so that many workers do not retry in lockstep."""
        # The exponent stops growing at the cap: an outage of hours must not overflow a float.
        exponent = min(max(attempt, 0), 64)
        base = min(float(self.max_ms), self.initial_ms * self.multiplier ** exponent)
        spread = (rng or random).uniform(-self.jitter, self.jitter)
        return max(0.0, base * (1.0 + spread)) / 1000.0
