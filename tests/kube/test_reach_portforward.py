"""The port-forward strategy against the sandbox's API server, through the real
kubernetes_asyncio client's session: DNS over TCP to each pod through
pods/portforward, the ClusterIP left out, and a tunnel that cannot be opened (RBAC
403, the kubelet's error, the API server's 500) told apart from a pod's failure; a
revoked permission loses the strategy, and auto then chooses another."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client

from corednsprobe.config import Settings
from corednsprobe.metrics import Metrics
from corednsprobe.model import Check, Outcome, TargetSet
from corednsprobe.reach import Strategy
from corednsprobe.reach.base import ReachLost
from corednsprobe.reach.choose import Chosen, first_targets
from corednsprobe.reach.portforward import LOST_AFTER, PortForwardReach
from corednsprobe.sandbox.cluster import Sandbox, SandboxConfig
from corednsprobe.sandbox.controllers import Timings
from corednsprobe.sandbox.inprocess import InProcessBackend
from corednsprobe.service.app import ReachInUse
from tests.kube.conftest import api_client_for

CHECK = Check("kubernetes", "kubernetes.default.svc.cluster.local.", "A")
SETTINGS = Settings.from_env({})


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    config = SandboxConfig(replicas=3, termination_grace_seconds=1,
                           timings=Timings(readiness_period=0.05, resync_period=0.5))
    async with Sandbox(InProcessBackend(), config) as running:
        await running.wait_ready(within=10)
        yield running


@pytest.fixture
async def api(sandbox: Sandbox, tmp_path: Path) -> AsyncIterator[client.ApiClient]:
    async with await api_client_for(sandbox, tmp_path / "kubeconfig") as api_client:
        yield api_client


async def targets(api: client.ApiClient) -> TargetSet:
    ts = await first_targets(api, SETTINGS)
    assert len(ts.pods) == 3 and ts.services
    return ts


async def test_every_pod_answers_over_tcp_through_the_api_server(
        sandbox: Sandbox, api: client.ApiClient) -> None:
    reach = PortForwardReach(api, "kube-system", 1.0)
    ts = await targets(api)
    assert reach.plan(ts).services == () and reach.plan(ts).pods == ts.pods
    assert reach.plan(ts).generation == ts.generation
    udp_dropped, servfail = ts.pods[0], ts.pods[1]
    assert udp_dropped.pod is not None and servfail.pod is not None
    await sandbox.set_pod_fault(udp_dropped.pod.name, "udp-drop")
    await sandbox.set_pod_fault(servfail.pod.name, "servfail")
    results = await asyncio.gather(*(reach.probe(t, CHECK) for t in ts.pods))
    assert [r.outcome for r in results] == [Outcome.OK, Outcome.SERVFAIL, Outcome.OK]
    assert {r.reach for r in results} == {"port-forward"}
    assert results[0].answers == tuple(sorted(ts.expected))  # blind to the UDP drop
    assert reach.status()["tunnels_opened"] == 3 and reach.status()["tunnels_failed"] == 0
    assert reach.status()["tunnel_setup_seconds_median"] > 0


async def test_the_clusterip_is_never_asked(api: client.ApiClient) -> None:
    ts = await targets(api)
    result = await PortForwardReach(api, "kube-system", 1.0).probe(ts.services[0], CHECK)
    assert result.outcome is Outcome.ERROR and "pods only" in result.detail


@pytest.mark.parametrize(("refusal", "said"), [
    ("kubelet", "the kubelet reported: unable to do port forwarding"),
    ("500", "refused the port-forward to pod"),
])
async def test_a_tunnel_the_kubelet_or_api_server_fails_is_a_tunnel_outcome(
        sandbox: Sandbox, api: client.ApiClient, refusal: str, said: str) -> None:
    reach = PortForwardReach(api, "kube-system", 1.0)
    ts = await targets(api)
    sandbox.api.portforward_refusal = refusal
    result = await reach.probe(ts.pods[0], CHECK)
    assert result.outcome is Outcome.TUNNEL and said in result.detail
    assert reach.status()["tunnels_failed"] == 1
    sandbox.api.portforward_refusal = ""
    assert (await reach.probe(ts.pods[0], CHECK)).outcome is Outcome.OK


async def test_a_revoked_permission_is_a_tunnel_outcome_then_the_strategy_is_lost(
        sandbox: Sandbox, api: client.ApiClient) -> None:
    reach = PortForwardReach(api, "kube-system", 1.0)
    ts = await targets(api)
    lost = asyncio.create_task(reach.run())
    assert (await reach.probe(ts.pods[0], CHECK)).ok
    sandbox.deny(sandbox.admin_token, "get", "pods/portforward")
    for n in range(LOST_AFTER):
        assert not lost.done()
        result = await reach.probe(ts.pods[n % 3], CHECK)
        assert result.outcome is Outcome.TUNNEL and "403" in result.detail
    with pytest.raises(ReachLost, match=r"refused 3 port-forward tunnels in a row: .*403"):
        await asyncio.wait_for(lost, 5)
    await reach.aclose()


class Service:
    """The part of the prober service a re-choice talks to."""

    def __init__(self) -> None:
        self.used: list[Any] = []

    def use(self, engine: Any) -> None:
        self.used.append(engine)


async def test_under_auto_a_lost_strategy_is_chosen_again_without_it(
        sandbox: Sandbox, api: client.ApiClient) -> None:
    reach = PortForwardReach(api, "kube-system", 1.0)
    ts = await targets(api)
    metrics = Metrics(1.0)
    held = ReachInUse(Chosen(reach, "auto: allowed"), metrics)
    service = Service()
    keeping = asyncio.create_task(held.keep(SETTINGS, api, False, service))  # type: ignore[arg-type]
    sandbox.deny(sandbox.admin_token, "get", "pods/portforward")
    for n in range(LOST_AFTER):
        await reach.probe(ts.pods[n % 3], CHECK)
    for _ in range(200):
        if service.used:
            break
        await asyncio.sleep(0.05)
    keeping.cancel()
    await asyncio.gather(keeping, return_exceptions=True)
    assert [e.strategy for e in service.used] == [Strategy.DIRECT]  # the pods answer UDP here
    assert held.status()["strategy"] == "direct"
    assert held.status()["lost"][0]["strategy"] == "port-forward"
    assert "403" in held.status()["lost"][0]["reason"]
    text = metrics.render().decode()
    assert 'corednsprobe_reach_info{strategy="direct"} 1.0' in text
    assert 'corednsprobe_reach_info{strategy="port-forward"} 0.0' in text
