"""Confidence bounds on a failure share, used to judge windows and to check settings.

Owns: the one-sided 95% Wilson score bound.
Never does: I/O, clocks or state; it is arithmetic on counts.
"""

from __future__ import annotations

import math

Z_95 = 1.645  # one-sided 95%


def failure_lower_bound(failures: int, samples: int) -> float:
    """The share of failures we are 95% sure of (Wilson score lower bound)."""
    if samples <= 0:
        return 0.0
    p = failures / samples
    z2 = Z_95 * Z_95
    centre = p + z2 / (2 * samples)
    spread = Z_95 * math.sqrt(p * (1 - p) / samples + z2 / (4 * samples * samples))
    return max(0.0, (centre - spread) / (1 + z2 / samples))
