"""/healthz and /readyz semantics of the prober service, on fast-forwarded time.

The cluster view and the probe engine here are stand-ins with the same
interface: these tests are about the service's own bookkeeping.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from corednsprobe.config import Settings
from corednsprobe.model import Check, Outcome, ProbeResult, Target, TargetSet
from corednsprobe.service.prober import ProberService
from corednsprobe.service.status import StatusPage
from tests.unit.helpers import pod, targetset

pytestmark = pytest.mark.looptime


class View:
    def __init__(self, first: TargetSet | None) -> None:
        self.current = TargetSet()
        self._first = first
        self._changed = asyncio.Event()
        self.last_event_at: float | None = None

    async def run(self) -> None:
        if self._first is not None:
            self.current = self._first
            self._changed.set()
            self._changed = asyncio.Event()
        await asyncio.Event().wait()

    async def changed(self, after: int) -> TargetSet:
        while self.current.generation <= after:
            await self._changed.wait()
        return self.current


class Engine:
    def __init__(self, delay: float) -> None:
        self.delay = delay

    async def probe(self, target: Target, check: Check, qname: str | None = None) -> ProbeResult:
        await asyncio.sleep(self.delay)
        return ProbeResult(target, check, Outcome.OK, rtt_seconds=0.001)


async def run_for(service: ProberService, seconds: float) -> None:
    task = asyncio.create_task(service.run())
    await asyncio.sleep(seconds)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


SETTINGS = Settings.from_env({"COREDNSPROBE_INTERVAL": "1", "COREDNSPROBE_TIMEOUT": "0.5"})


async def test_waiting_for_the_api_is_live_but_not_ready() -> None:
    service = ProberService(SETTINGS, View(None), Engine(0.001))
    page = StatusPage(service)
    await run_for(service, 600)
    assert page.live()
    assert not page.ready()


async def test_rounds_completing_is_live_and_ready() -> None:
    service = ProberService(SETTINGS, View(targetset(pod(1), pod(2))), Engine(0.001))
    page = StatusPage(service)
    await run_for(service, 30)
    assert page.ready() and page.live()
    assert service.state.rounds >= 29


async def test_a_stuck_schedule_is_not_live() -> None:
    # a probe that never ends keeps its round from ever completing
    service = ProberService(SETTINGS, View(targetset(pod(1))), Engine(1e9))
    page = StatusPage(service)
    task = asyncio.create_task(service.run())
    await asyncio.sleep(5)
    assert page.live()  # within the grace of 3 intervals + 2 timeouts + 5 s
    await asyncio.sleep(60)
    assert not page.live()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_a_result_for_a_target_that_left_is_dropped() -> None:
    p1, p2 = pod(1), pod(2)
    view = View(targetset(p1))
    view.current = targetset(p1)
    service = ProberService(SETTINGS, view, Engine(0.001))
    check = Check("kubernetes", "kubernetes.default.svc.cluster.local.", "A")
    service.record(ProbeResult(p2, check, Outcome.TIMEOUT, at=1.0))
    service.record(ProbeResult(p1, check, Outcome.OK, rcode="NOERROR", at=1.0))
    text = service.metrics.render().decode()
    assert 'pod="coredns-1"' in text and 'pod="coredns-2"' not in text
    assert set(service.state.last) == {p1.key}
