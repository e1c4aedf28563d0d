"""The prober service probing through a reach strategy: the strategy's plan decides what
is probed and judged, results carry the strategy, and a lost strategy is replaced or ends
the service with its reason -- never a silent stall.

The cluster view is a stand-in; the strategies are small Reach implementations (the real
ones are tested end to end against the sandbox in tests/kube/).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from typing import Any

import pytest

from corednsprobe.metrics import Metrics
from corednsprobe.model import Check, Outcome, ProbeResult, Target, TargetSet
from corednsprobe.reach import Strategy
from corednsprobe.reach.base import NoReach, ReachLost
from corednsprobe.reach.choose import Chosen
from corednsprobe.service.app import ReachInUse
from corednsprobe.service.prober import ProberService
from corednsprobe.service.status import StatusPage
from tests.unit.helpers import pod, targetset
from tests.unit.test_service_liveness import SETTINGS, View

pytestmark = pytest.mark.looptime


class PodsOnly:
    """A strategy that probes the pods only and says so on every result."""

    strategy = Strategy.PORT_FORWARD
    blind_to = ("UDP", "the ClusterIP path")

    def __init__(self, lose_after: float | None = None) -> None:
        self.lose_after = lose_after
        self.closed = 0
        self.asked: list[Target] = []

    def plan(self, ts: TargetSet) -> TargetSet:
        return dataclasses.replace(ts, services=())

    async def probe(self, target: Target, check: Check, qname: str | None = None) -> ProbeResult:
        self.asked.append(target)
        return ProbeResult(target, check, Outcome.OK, rtt_seconds=0.001,
                           reach=self.strategy.value)

    async def run(self) -> None:
        if self.lose_after is None:
            await asyncio.Future()
        await asyncio.sleep(self.lose_after)
        raise ReachLost("the API refused the tunnel: 403")

    async def aclose(self) -> None:
        self.closed += 1

    def status(self) -> dict[str, Any]:
        return {"tunnels": 0}


async def test_the_plan_decides_what_is_probed_judged_and_shown() -> None:
    reach = PodsOnly()
    service = ProberService(SETTINGS, View(targetset(pod(1), pod(2))), reach)
    task = asyncio.create_task(service.run())
    await asyncio.sleep(30)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert reach.asked and all(t.kind.value == "pod" for t in reach.asked)
    assert {t.kind.value for t in service.state.targets.targets} == {"pod"}
    assert all(h.target.kind.value == "pod" for h in service.state.healths.values())
    doc = StatusPage(service).document()
    assert [t["name"] for t in doc["targets"]] == ["coredns-1", "coredns-2"]
    assert {r["reach"] for t in doc["targets"] for r in t["last"]} == {"port-forward"}


async def test_use_switches_the_engine_and_the_plan() -> None:
    reach = PodsOnly()
    service = ProberService(SETTINGS, View(targetset(pod(1))), reach)
    task = asyncio.create_task(service.run())
    await asyncio.sleep(5)
    assert {t.kind.value for t in service.state.targets.targets} == {"pod"}

    class Everything(PodsOnly):
        strategy = Strategy.DIRECT

        def plan(self, ts: TargetSet) -> TargetSet:
            return ts

    other = Everything()
    service.use(other)
    await asyncio.sleep(5)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert {t.kind.value for t in service.state.targets.targets} == {"pod", "service"}
    assert {t.kind.value for t in other.asked} == {"pod", "service"}


async def test_a_lost_fixed_strategy_ends_the_service_with_its_reason() -> None:
    reach = PodsOnly(lose_after=3)
    metrics = Metrics(1.0)
    held = ReachInUse(Chosen(reach, "COREDNSPROBE_REACH=port-forward"), metrics)
    service = ProberService(SETTINGS, View(targetset(pod(1))), reach, metrics=metrics)
    settings = dataclasses.replace(SETTINGS, reach="port-forward")
    with pytest.raises(NoReach, match="refused the tunnel: 403"):
        await held.keep(settings, None, False, service)
    assert reach.closed == 1
    assert held.status()["lost"] == [{"strategy": "port-forward",
                                      "reason": "the API refused the tunnel: 403"}]
    assert 'corednsprobe_reach_info{strategy="port-forward"} 1.0' in metrics.render().decode()
    assert 'corednsprobe_reach_info{strategy="direct"} 0.0' in metrics.render().decode()


def test_pods_health_endpoints_are_asked_only_through_the_pod_network() -> None:
    """Through an outside strategy a GET of a pod's /health would fail for want of a
    route and read as "the kubelet sees it failing": such GETs are not made at all."""
    view = View(None)
    view.current = targetset(pod(1), pod(2))
    outside = ProberService(SETTINGS, view, PodsOnly())
    assert outside.health_rounds.view.current.pods == ()

    class Direct(PodsOnly):
        strategy = Strategy.DIRECT

    inside = ProberService(SETTINGS, view, Direct())
    assert [t.name for t in inside.health_rounds.view.current.pods] == ["coredns-1", "coredns-2"]
    inside.use(PodsOnly())
    assert inside.health_rounds.view.current.pods == ()
