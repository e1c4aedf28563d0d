"""Rounds: the fixed-rate schedule on which every (target, check) is probed.

Owns: ticks at start + k·interval on the loop clock (no drift), asking each
target of the current TargetSet the checks the catalogue gives it, spreading
the probes of a round evenly across the interval (a burst of 1,000 probes
measures the prober's own queueing, not DNS), a cap on probes in flight, and
never letting two rounds overlap: a round that outlasts its interval is
counted as an overrun and the schedule resumes at the next tick still ahead.
A target that leaves the TargetSet during a round is not probed any more.
Never does: interpret results (each round's are handed, in one RoundReport,
to one consumer).

The probes of a round are spread over ``max(interval - 2·timeout,
interval / 2)`` so that a probe that times out and is re-asked over TCP still
ends before the next tick whenever the interval leaves room for it.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import NoReturn, Protocol

from corednsprobe.model import Check, ProbeResult, RoundReport, Target, TargetKey, TargetSet
from corednsprobe.probe.checks import Checks

Job = tuple[Target, Check]


class Targets(Protocol):
    """Where the targets come from (the ClusterView): the TargetSet in force now."""

    @property
    def current(self) -> TargetSet: ...


class ProbeEngine(Protocol):
    async def probe(self, target: Target, check: Check, qname: str | None = None) -> ProbeResult:
        ...


class Rounds:
    def __init__(
        self,
        targets: Targets,
        checks: Checks,
        engine: ProbeEngine,
        consumer: Callable[[RoundReport], None],
        *,
        interval: float,
        timeout: float,
        max_in_flight: int,
    ) -> None:
        self.interval = interval
        self.spread = max(interval - 2 * timeout, interval / 2)
        self._cap = max_in_flight
        self._targets = targets
        self._checks = checks
        self._engine = engine
        self._consumer = consumer
        self._keys: tuple[int, frozenset[TargetKey]] = (-1, frozenset())
        self.overruns = 0

    async def run(self) -> NoReturn:
        """Run rounds until cancelled."""
        await self.run_rounds(None)
        raise AssertionError("unreachable: endless rounds ended")

    async def run_rounds(self, rounds: int | None) -> None:
        """Run ``rounds`` rounds (None: until cancelled), handing each report on."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        k = 0
        done = 0
        while rounds is None or done < rounds:
            tick = start + k * self.interval
            await _sleep_until(loop, tick)
            report = await self.run_round(k, tick)
            done += 1
            self._consumer(report)
            # the next tick still ahead of us; ticks passed during an overrun are skipped
            k = max(k + 1, math.ceil((loop.time() - start) / self.interval))

    def jobs(self) -> list[Job]:
        """Every (target, check) of the TargetSet in force now."""
        ts = self._targets.current
        return [(t, c) for t in ts.targets for c in self._checks.for_target(t, ts.expected)]

    def is_current(self, target: Target) -> bool:
        """Whether ``target`` is still in the TargetSet in force now."""
        ts = self._targets.current
        if self._keys[0] != ts.generation:
            self._keys = (ts.generation, frozenset(t.key for t in ts.targets))
        return target.key in self._keys[1]

    async def run_round(self, number: int, tick: float) -> RoundReport:
        loop = asyncio.get_running_loop()
        jobs = self.jobs()
        gate = asyncio.Semaphore(self._cap)
        step = self.spread / len(jobs) if jobs else 0.0
        results: list[ProbeResult] = []
        sent = skipped = 0
        async with asyncio.TaskGroup() as tasks:
            for i, (target, check) in enumerate(jobs):
                await _sleep_until(loop, tick + i * step)
                if not self.is_current(target):
                    skipped += 1
                    continue
                await gate.acquire()
                tasks.create_task(self._one(target, check, gate, results))
                sent += 1
        end = loop.time()
        overrun = end - tick > self.interval
        if overrun:
            self.overruns += 1
        return RoundReport(number, tick, end - tick, sent, skipped, overrun, tuple(results))

    async def _one(self, target: Target, check: Check, gate: asyncio.Semaphore,
                   results: list[ProbeResult]) -> None:
        try:
            result = await self._engine.probe(target, check, self._checks.qname(check))
        finally:
            gate.release()
        results.append(result)


async def _sleep_until(loop: asyncio.AbstractEventLoop, when: float) -> None:
    delay = when - loop.time()
    if delay > 0:
        await asyncio.sleep(delay)
