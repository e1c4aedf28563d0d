"""Backoff: how long to wait before trying again, in one place.

Owns: the capped exponential ceiling (``base`` doubling per failure up to
``cap``), the "equal jitter" delay drawn below that ceiling, and the small
jitter a fixed retry period gets so that replicas do not march in step.
Never does: sleep, read a clock, or decide whether to retry (pure; the
random draw is a parameter).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

Draw = Callable[[float, float], float]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential backoff: ``base``, ``2 x base``, ... never above ``cap``."""

    base: float
    cap: float

    def ceiling(self, failures: int) -> float:
        """The longest wait after ``failures`` consecutive failures (1 or more)."""
        return min(self.cap, self.base * 2.0 ** min(max(failures, 1) - 1, 16))

    def delay(self, failures: int, draw: Draw = random.uniform) -> float:
        """A wait between half the ceiling and the ceiling ("equal jitter")."""
        top = self.ceiling(failures)
        return draw(top / 2, top)

    def schedule(self, attempts: int) -> tuple[float, ...]:
        """The ceilings for the first ``attempts`` failures, without jitter."""
        return tuple(self.ceiling(n) for n in range(1, attempts + 1))


def jittered(period: float, spread: float = 0.2, draw: Draw = random.uniform) -> float:
    """``period`` stretched by up to ``spread`` (0.2: up to 20 % longer), never shorter."""
    return period * draw(1.0, 1.0 + spread)
