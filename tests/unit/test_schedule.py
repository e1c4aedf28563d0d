"""Rounds on fast-forwarded loop time: no drift, spread, overruns, joins and leaves."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from corednsprobe.model import (
    Check,
    ClusterState,
    Outcome,
    ProbeResult,
    RoundReport,
    Target,
    TargetSet,
)
from corednsprobe.probe.rounds import Rounds
from tests.unit.helpers import CHECK, pod

pytestmark = pytest.mark.looptime


class Recorder:
    """A probe that takes ``delay`` seconds of loop time and logs when it started."""

    def __init__(self, delay: float = 0.001) -> None:
        self.delay = delay
        self.starts: list[tuple[float, str]] = []
        self.reports: list[RoundReport] = []
        self.results: list[ProbeResult] = []

    async def probe(self, target: Target, check: Check, qname: str | None = None) -> ProbeResult:
        loop = asyncio.get_running_loop()
        self.starts.append((loop.time(), target.name))
        await asyncio.sleep(self.delay)
        return ProbeResult(target, check, Outcome.OK, rtt_seconds=self.delay)

    def consume(self, report: RoundReport) -> None:
        self.reports.append(report)
        self.results.extend(report.results)


class OneCheck:
    """A catalogue that asks every target one question."""

    def for_target(self, target: Target, expected: frozenset[str]) -> tuple[Check, ...]:
        return (CHECK,)

    def qname(self, check: Check) -> str | None:
        return None


class Targets:
    """A target source whose TargetSet the test replaces."""

    def __init__(self, *pods: Target) -> None:
        self.current = TargetSet()
        self.set(*pods)

    def set(self, *pods: Target) -> None:
        self.current = TargetSet(pods, (), frozenset(), ClusterState.OK,
                                 self.current.generation + 1)


def rounds(rec: Recorder, targets: Targets, interval: float = 5.0, timeout: float = 1.0,
           max_in_flight: int = 64) -> Rounds:
    return Rounds(targets, OneCheck(), rec, rec.consume, interval=interval, timeout=timeout,
                  max_in_flight=max_in_flight)


async def test_no_drift_over_1000_rounds() -> None:
    rec = Recorder(delay=0.0123)
    start = asyncio.get_running_loop().time()
    await rounds(rec, Targets(pod(1)), interval=1.0).run_rounds(1000)
    ticks = [r.tick - start for r in rec.reports]
    assert len(ticks) == 1000
    assert max(abs(t - k * 1.0) for k, t in enumerate(ticks)) < 1e-6
    assert [r.number for r in rec.reports] == list(range(1000))
    assert len(rec.results) == 1000


async def test_probes_are_spread_evenly_within_the_interval() -> None:
    rec = Recorder()
    targets = Targets(*(pod(i) for i in range(1, 11)))
    loop = asyncio.get_running_loop()
    r = rounds(rec, targets, interval=5.0, timeout=1.0)
    tick = loop.time()
    report = await r.run_round(0, tick)
    offsets = [t - tick for t, _ in rec.starts]
    assert r.spread == pytest.approx(3.0)  # interval - 2 * timeout
    assert offsets == pytest.approx([i * 0.3 for i in range(10)], abs=1e-6)
    assert report.probes == 10
    assert report.duration < 5.0
    assert not report.overrun


async def test_overrun_is_counted_and_rounds_never_overlap() -> None:
    rec = Recorder(delay=2.5)  # every probe outlasts the interval
    loop = asyncio.get_running_loop()
    start = loop.time()
    r = rounds(rec, Targets(pod(1)), interval=1.0, timeout=0.2)
    await r.run_rounds(4)
    ticks = [rep.tick - start for rep in rec.reports]
    assert ticks == pytest.approx([0.0, 3.0, 6.0, 9.0])  # resumes on the grid, skipping ticks
    assert all(rep.overrun for rep in rec.reports)
    assert r.overruns == 4
    starts = [t - start for t, _ in rec.starts]
    for a, b in itertools.pairwise(starts):
        assert b - a >= 2.5  # the next round began only after the previous ended


async def test_targets_join_next_round_and_leave_at_once() -> None:
    rec = Recorder()
    p1, p2, p3 = pod(1), pod(2), pod(3)
    targets = Targets(p1, p2)
    r = rounds(rec, targets, interval=2.0, timeout=0.5)
    task = asyncio.create_task(r.run_rounds(2))
    await asyncio.sleep(0.1)  # round 0 has started p1 only; p2 is due at +0.5
    targets.set(p1, p3)  # p2 leaves mid-round: not probed any more; p3 joins next round
    await asyncio.sleep(1.8)
    targets.set(p1, p2, p3)  # p2 is back for round 1 (due at +0.33) ...
    await asyncio.sleep(0.2)  # round 1 began at 2.0 with p1, p2, p3
    targets.set(p1, p3)  # ... and leaves again before its probe
    await task
    names_by_round = [[n for t, n in rec.starts if rep.tick <= t < rep.tick + 2.0]
                      for rep in rec.reports]
    assert names_by_round == [["coredns-1"], ["coredns-1", "coredns-3"]]
    assert [rep.skipped for rep in rec.reports] == [1, 1]


async def test_in_flight_cap_is_respected() -> None:
    rec = Recorder(delay=10.0)
    r = rounds(rec, Targets(*(pod(i) for i in range(1, 9))), interval=1.0, timeout=1.0,
               max_in_flight=3)
    rec.consume(await r.run_round(0, asyncio.get_running_loop().time()))
    starts = sorted(t for t, _ in rec.starts)
    # three at a time: the 4th starts only when the 1st has finished
    assert starts[3] - starts[0] >= 10.0
    assert len(rec.results) == 8
