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


class Started(Protocol):
    def cancel(self) -> object: ...


class Starter(Protocol):
    """An engine that can also start a probe without a task (``Prober.start``)."""

    def start(self, target: Target, check: Check, qname: str | None,
              on_done: Callable[[ProbeResult], None]) -> Started: ...


class _Round:
    """The bookkeeping of one round in flight: results, the in-flight count, and the
    futures the dispatcher waits on (room under the cap, the last probe's end)."""

    __slots__ = ("cap", "in_flight", "loop", "next_key", "results", "room", "running",
                 "settled")

    def __init__(self, loop: asyncio.AbstractEventLoop, cap: int) -> None:
        self.loop = loop
        self.cap = cap
        self.in_flight = 0
        self.results: list[ProbeResult] = []
        self.room: asyncio.Future[None] | None = None
        self.settled: asyncio.Future[None] | None = None
        self.running: dict[int, Started | None] = {}  # None: being started
        self.next_key = 0

    def done(self, result: ProbeResult) -> None:
        self.results.append(result)
        self.in_flight -= 1
        room = self.room
        if room is not None and not room.done():
            room.set_result(None)
        settled = self.settled
        if settled is not None and self.in_flight == 0 and not settled.done():
            settled.set_result(None)


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
        self._starter: Starter | None = engine if hasattr(engine, "start") else None  # type: ignore[assignment]
        self._consumer = consumer
        self._keys: tuple[int, frozenset[TargetKey]] = (-1, frozenset())
        self._jobs: tuple[int, list[Job]] = (-1, [])
        self.overruns = 0

    def use(self, engine: ProbeEngine) -> None:
        """Probe through ``engine`` from the next probe on; the jobs are built afresh
        (the targets' planning may have changed with it)."""
        self._engine = engine
        self._starter = engine if hasattr(engine, "start") else None  # type: ignore[assignment]
        self._keys = (-1, frozenset())
        self._jobs = (-1, [])

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
        """Every (target, check) of the TargetSet in force now (built once per TargetSet)."""
        ts = self._targets.current
        if self._jobs[0] != ts.generation:
            self._jobs = (ts.generation, [(t, c) for t in ts.targets
                                          for c in self._checks.for_target(t, ts.expected)])
        return self._jobs[1]

    def is_current(self, target: Target) -> bool:
        """Whether ``target`` is still in the TargetSet in force now."""
        ts = self._targets.current
        if self._keys[0] != ts.generation:
            self._keys = (ts.generation, frozenset(t.key for t in ts.targets))
        return target.key in self._keys[1]

    async def run_round(self, number: int, tick: float) -> RoundReport:
        """Start each job at its slot (tick + i·step; every job whose slot has come is
        started at each wake-up, so a dense round costs one timer per loop tick, not one
        per probe), at most ``max_in_flight`` at once, and wait for the last to end."""
        loop = asyncio.get_running_loop()
        jobs = self.jobs()
        step = self.spread / len(jobs) if jobs else 0.0
        r = _Round(loop, self._cap)
        sent = skipped = 0
        generation = self._jobs[0]  # every job is of this TargetSet
        i, n = 0, len(jobs)
        try:
            while i < n:
                due = tick + i * step
                if due > loop.time():
                    await _sleep_until(loop, due)
                now = max(loop.time(), due)  # a clock that stops short of ``due`` still starts it
                while i < n and tick + i * step <= now:
                    target, check = jobs[i]
                    i += 1
                    current = self._targets.current.generation
                    if current != generation and not self.is_current(target):
                        skipped += 1
                        continue
                    while r.in_flight >= r.cap:
                        r.room = loop.create_future()
                        await r.room
                        r.room = None
                    self._launch(r, target, check)
                    sent += 1
            if r.in_flight:
                r.settled = loop.create_future()
                await r.settled
        except asyncio.CancelledError:
            for started in list(r.running.values()):
                if started is not None:
                    started.cancel()
            raise
        end = loop.time()
        overrun = end - tick > self.interval
        if overrun:
            self.overruns += 1
        return RoundReport(number, tick, end - tick, sent, skipped, overrun, tuple(r.results))

    def _launch(self, r: _Round, target: Target, check: Check) -> None:
        r.in_flight += 1
        qname = self._checks.qname(check)
        key = r.next_key
        r.next_key = key + 1
        r.running[key] = None
        starter = self._starter
        if starter is not None:
            def finished(result: ProbeResult) -> None:
                del r.running[key]
                r.done(result)

            started = starter.start(target, check, qname, finished)
            if key in r.running:  # not ended already (a socket that could not be made)
                r.running[key] = started
            return
        task = r.loop.create_task(self._engine.probe(target, check, qname))
        r.running[key] = task

        def task_done(t: asyncio.Task[ProbeResult]) -> None:
            del r.running[key]
            if not t.cancelled():
                r.done(t.result())

        task.add_done_callback(task_done)


async def _sleep_until(loop: asyncio.AbstractEventLoop, when: float) -> None:
    delay = when - loop.time()
    if delay > 0:
        await asyncio.sleep(delay)
