"""Rounds: the fixed-rate schedule on which every (target, check) is probed.

Owns: ticks at start + k·interval on the loop clock (no drift), spreading the
probes of a round evenly across the interval (a burst of 1,000 probes measures
the prober's own queueing, not DNS), a cap on probes in flight, and never
letting two rounds overlap: a round that outlasts its interval is counted as an
overrun and the schedule resumes at the next tick still ahead.
Never does: interpret results (it hands each one on as it arrives).

The probes of a round are spread over ``max(interval - 2·timeout,
interval / 2)`` so that a probe that times out and is re-asked over TCP still
ends before the next tick whenever the interval leaves room for it.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Sequence

from corednsprobe.model import Check, ProbeResult, RoundReport, Target

Job = tuple[Target, Check]


class Rounds:
    def __init__(
        self,
        *,
        interval: float,
        timeout: float,
        max_in_flight: int,
        jobs: Callable[[int], Sequence[Job]],
        probe: Callable[[Target, Check], Awaitable[ProbeResult]],
        on_result: Callable[[ProbeResult], None],
        on_round: Callable[[RoundReport], None],
        is_current: Callable[[Target], bool] = lambda _t: True,
    ) -> None:
        self.interval = interval
        self.spread = max(interval - 2 * timeout, interval / 2)
        self._cap = max_in_flight
        self._jobs = jobs
        self._probe = probe
        self._on_result = on_result
        self._on_round = on_round
        self._is_current = is_current
        self.overruns = 0
        self.last_round_end: float | None = None

    async def run(self, rounds: int | None = None) -> None:
        """Run rounds until cancelled (or ``rounds`` of them, for tests)."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        k = 0
        done = 0
        while rounds is None or done < rounds:
            tick = start + k * self.interval
            await _sleep_until(loop, tick)
            report = await self.run_round(k, tick)
            done += 1
            self._on_round(report)
            # the next tick still ahead of us; ticks passed during an overrun are skipped
            k = max(k + 1, math.ceil((loop.time() - start) / self.interval))

    async def run_round(self, number: int, tick: float) -> RoundReport:
        loop = asyncio.get_running_loop()
        jobs = list(self._jobs(number))
        gate = asyncio.Semaphore(self._cap)
        step = self.spread / len(jobs) if jobs else 0.0
        sent = skipped = 0
        async with asyncio.TaskGroup() as tasks:
            for i, (target, check) in enumerate(jobs):
                await _sleep_until(loop, tick + i * step)
                if not self._is_current(target):
                    skipped += 1
                    continue
                await gate.acquire()
                tasks.create_task(self._one(target, check, gate))
                sent += 1
        end = loop.time()
        self.last_round_end = end
        overrun = end - tick > self.interval
        if overrun:
            self.overruns += 1
        return RoundReport(number, tick, end - tick, sent, skipped, overrun)

    async def _one(self, target: Target, check: Check, gate: asyncio.Semaphore) -> None:
        try:
            result = await self._probe(target, check)
        finally:
            gate.release()
        self._on_result(result)


async def _sleep_until(loop: asyncio.AbstractEventLoop, when: float) -> None:
    delay = when - loop.time()
    if delay > 0:
        await asyncio.sleep(delay)
