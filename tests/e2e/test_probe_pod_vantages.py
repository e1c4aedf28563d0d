"""Several probe pods, several vantages, end to end: real unbound pods on three nodes
(netns backend), the service outside probing through one agent pod pinned to each
node. The sandbox runs a pod pinned to a node in that node's network namespace, so
an nft rule dropping DNS from node A to pod P breaks exactly the agent on A's path
(the same fault the replica vantages are tested with). What is checked is what a
user sees: evictions, the diagnosis, /status."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from corednsprobe.model import DiagnosisState, HealthState
from corednsprobe.sandbox.registry import PODS
from tests.e2e.conftest import Running, Start, health_of, pods_judged
from tests.e2e.test_probe_pod import PROBE_POD, agent_pods
from tests.e2e.test_remediation import EVICT, PodLog, rounds

pytestmark = [pytest.mark.root, pytest.mark.slow]

AGENTS = {**PROBE_POD, **EVICT, "COREDNSPROBE_QUORUM": "2", "COREDNSPROBE_PROBE_PODS": "3",
          "COREDNSPROBE_CONFIRM": "2"}


async def status(c: Running) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(f"{c.url}/status") as resp:
        doc: dict[str, Any] = await resp.json()
    return doc


def pod_node(c: Running, name: str) -> str:
    return next(str(p["spec"]["nodeName"]) for p in c.sandbox.store.items(PODS, "kube-system")
                if p["metadata"]["name"] == name)


async def three_agents(c: Running) -> dict[str, Any]:
    """Until every agent gave results and three vantages count; then /status."""
    loop = asyncio.get_running_loop()
    end = loop.time() + 60
    while True:
        doc = await status(c)
        if doc["vantages"]["vantages"] == 3 and pods_judged(c.service) == 3:
            return doc
        assert loop.time() < end, (doc["vantages"], doc["reach"].get("agents"))
        await asyncio.sleep(0.25)


async def test_one_agent_node_with_a_broken_path_restarts_nothing(start: Start) -> None:
    c = await start(replicas=3, **AGENTS)
    doc = await three_agents(c)
    agents = doc["reach"]["agents"]
    nodes = sorted(n["metadata"]["name"] for n in c.sandbox.nodes())
    assert sorted(a["node"] for a in agents) == nodes  # one agent pinned to each node
    assert [a["primary"] for a in agents] == [True, False, False]
    assert all(a["startup_seconds"] is not None and a["startup_seconds"] > 0 for a in agents)
    live = {p["metadata"]["name"]: p["spec"].get("nodeName") for p in agent_pods(c)}
    assert {a["pod"]: a["node"] for a in agents} == live
    assert doc["vantages"]["agent_pods"] is True
    # the worst case: the broken path is the primary agent's, whose results answer the
    # rounds, so this process's own tracker sees the pod fail
    node_a = agents[0]["node"]
    victim = next(p for p in c.pod_names() if pod_node(c, p) != node_a)
    pods = PodLog(c)
    await c.sandbox.backend.set_path_fault(node_a, victim, True)
    took = await c.until(lambda s: s.state.diagnosis.state is DiagnosisState.PATH, within=30)
    assert health_of(c.service, victim).state is HealthState.UNHEALTHY  # its own view
    await rounds(c, 12)  # past the confirmation, several times
    assert c.service.state.diagnosis.state is DiagnosisState.PATH, c.service.state.diagnosis
    assert pods.removed() == set()
    assert c.remediation["budget"]["last_actions"] == []
    doc = await status(c)
    assert doc["vantages"]["paths"] == [{
        "pod": victim, "pod_node": pod_node(c, victim), "from_nodes": [node_a],
        "healthy_from": [n for n in nodes if n != node_a]}]
    assert doc["diagnosis"]["state"] == "path"
    print(f"\nagents' start-up {[a['startup_seconds'] for a in agents]} s; path verdict "
          f"{took:.1f} s after the fault")


async def test_a_pod_dropping_udp_for_every_agent_is_evicted_once(start: Start) -> None:
    c = await start(replicas=3, **AGENTS)
    await three_agents(c)
    pods = PodLog(c)
    sick = c.pod_names()[1]
    await c.sandbox.set_pod_fault(sick, "drop")
    await c.until(lambda _s: sick in pods.removed(), within=60)
    await c.until(lambda s: len(c.pod_names()) == 3
                  and s.state.diagnosis.state is DiagnosisState.HEALTHY
                  and pods_judged(s) == 3, within=60)
    await rounds(c, 6)
    assert pods.removed() == {sick}
    actions = c.remediation["budget"]["last_actions"]
    assert [(a["action"], a["pod"]) for a in actions] == [("evict", sick)]
    doc = await status(c)
    assert doc["vantages"]["vantages"] == 3
    assert len({a["node"] for a in doc["reach"]["agents"]}) == 3


async def test_an_agent_whose_node_reaches_no_pod_is_set_aside(start: Start) -> None:
    c = await start(replicas=3, **AGENTS)
    doc = await three_agents(c)
    isolated = doc["reach"]["agents"][1]["node"]  # a companion's node
    pods = PodLog(c)
    await c.sandbox.backend.set_vantage_isolated(isolated, True)
    await c.until(lambda s: s.state.diagnosis.state is DiagnosisState.VANTAGE_ISOLATED,
                  within=30)
    await rounds(c, 8)
    assert c.service.state.diagnosis.state is DiagnosisState.VANTAGE_ISOLATED
    assert pods.removed() == set()
    doc = await status(c)
    assert [v["node"] for v in doc["vantages"]["views"] if v["state"] == "isolated"] == \
        [isolated]
    assert doc["vantages"]["vantages"] == 2
