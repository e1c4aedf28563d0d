"""The one backoff rule: capped doubling, equal jitter, and a jittered retry period."""

from __future__ import annotations

from corednsprobe.backoff import Backoff, jittered


def test_ceilings_double_up_to_the_cap_and_delays_stay_in_the_upper_half() -> None:
    b = Backoff(0.5, 30.0)
    assert b.schedule(9) == (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0)
    assert b.ceiling(10_000) == 30.0
    assert b.delay(3, lambda low, high: low) == 1.0
    assert b.delay(3, lambda low, high: high) == 2.0


def test_a_retry_period_is_stretched_never_shortened() -> None:
    assert jittered(2.0, draw=lambda low, high: low) == 2.0
    assert jittered(2.0, draw=lambda low, high: high) == 2.4
