"""Confidence bounds on a failure share, used to judge windows and to check settings.

Owns: the one-sided Wilson score bounds (95% by default, 99% on request).
Never does: I/O, clocks or state; it is arithmetic on counts.
"""

from __future__ import annotations

import math

Z_95 = 1.645  # one-sided 95%
Z_99 = 2.326  # one-sided 99%
Z_CHECK = Z_99  # each check judged alone (judge.tracker says why)


def _wilson(failures: int, samples: int, z: float) -> tuple[float, float]:
    p = failures / samples
    z2 = z * z
    centre = p + z2 / (2 * samples)
    spread = z * math.sqrt(p * (1 - p) / samples + z2 / (4 * samples * samples))
    scale = 1 + z2 / samples
    return max(0.0, (centre - spread) / scale), min(1.0, (centre + spread) / scale)


def failure_lower_bound(failures: int, samples: int, z: float = Z_95) -> float:
    """The share of failures we are sure of (Wilson score lower bound, 95% by default)."""
    if samples <= 0:
        return 0.0
    return _wilson(failures, samples, z)[0]


def failure_upper_bound(failures: int, samples: int, z: float = Z_95) -> float:
    """The share of failures we are sure is not exceeded (Wilson upper bound); 1 with no samples."""
    if samples <= 0:
        return 1.0
    return _wilson(failures, samples, z)[1]
