"""The exposed strategy end to end: the service outside the pod network's view probes
CoreDNS only through a NodePort or LoadBalancer Service of the sandbox (real unbound
pods in network namespaces, nft DNAT at every node address as kube-proxy does it),
asks EDNS NSID, and judges the pods from what the answers say.

The prober in these tests could reach the pod IPs; ``COREDNSPROBE_REACH=exposed``
makes it probe only the front doors, which the results show (reach=exposed, every
probed address a node or LoadBalancer address).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from corednsprobe.model import Check, DiagnosisState, HealthState, Outcome, Target, TargetKind
from corednsprobe.probe.engine import Prober
from corednsprobe.reach.exposed import assess
from corednsprobe.sandbox.cluster import Sandbox
from corednsprobe.sandbox.registry import SERVICES
from corednsprobe.service.prober import ProberService
from tests.e2e.conftest import Running, Start, pods_judged
from tests.e2e.test_remediation import EVICT, PodLog, rounds
from tests.kube.conftest import eventually

ROOT = Path(__file__).resolve().parents[2]
NODEPORT_YAML = ROOT / "deploy" / "extras" / "dns-nodeport.yaml"
EXPOSED = {"COREDNSPROBE_REACH": "exposed", "COREDNSPROBE_WINDOW": "10"}


def dns_service(name: str, kind: str, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {
        "type": kind, "selector": {"k8s-app": "kube-dns"},
        "ports": [{"name": "dns", "protocol": "UDP", "port": 53, "targetPort": 53},
                  {"name": "dns-tcp", "protocol": "TCP", "port": 53, "targetPort": 53}],
        **spec}}


async def answering(address: str, port: int) -> None:
    """Until ``address:port`` answers a UDP question (the sandbox's kube-proxy has
    routed it): the strategy is assessed once, as the service starts."""
    prober = Prober(0.3, tcp_reask=False)
    check = Check("kubernetes", "kubernetes.default.svc.cluster.local.", "A")
    async with asyncio.timeout(15):
        for _ in itertools.count():
            result = await prober.probe(Target(TargetKind.SERVICE, address, port), check)
            if result.outcome not in (Outcome.TIMEOUT, Outcome.UNREACHABLE, Outcome.ERROR):
                return
            await asyncio.sleep(0.1)


def nodeport(**spec: Any) -> Callable[[Sandbox], Awaitable[None]]:
    """Create deploy/extras/dns-nodeport.yaml (with ``spec`` on top) before the start,
    and wait until every node that holds a DNS pod answers at the nodePort."""

    async def make(sandbox: Sandbox) -> None:
        manifest = yaml.safe_load(NODEPORT_YAML.read_text())
        manifest["spec"].update(spec)
        sandbox.registry.create(SERVICES, "kube-system", manifest)
        addresses = sandbox.node_addresses()
        for node in {p["spec"]["nodeName"] for p in sandbox.dns_pods()}:
            await answering(addresses[node], 30053)

    return make


async def load_balancer(sandbox: Sandbox) -> None:
    sandbox.registry.create(SERVICES, "kube-system", dns_service("dns-outside", "LoadBalancer"))
    await eventually(lambda: bool(sandbox.service("kube-system", "dns-outside")["status"][
        "loadBalancer"].get("ingress")))
    (ingress,) = sandbox.service("kube-system", "dns-outside")["status"]["loadBalancer"][
        "ingress"]
    await answering(ingress["ip"], 53)


def pod_health(s: ProberService, name: str) -> HealthState | None:
    return next((h.state for h in s.state.healths.values()
                 if h.target.kind is TargetKind.POD and h.target.name == name), None)


def all_pods(c: Running, state: HealthState) -> Callable[[ProberService], bool]:
    return lambda s: all(pod_health(s, p) is state for p in c.pod_names())


def probed(c: Running) -> list[Any]:
    return [r for ring in c.service.state.last.values() for r in ring]


async def healthy_through_the_front_doors(c: Running, doors: set[str]) -> None:
    await c.until(lambda s: all_pods(c, HealthState.HEALTHY)(s)
                  and s.state.diagnosis.state is DiagnosisState.HEALTHY
                  and pods_judged(s) == len(c.pod_names()), within=30)
    results = probed(c)
    assert results and {r.reach for r in results} == {"exposed"}
    assert {r.target.address for r in results} <= doors
    assert {r.target.kind for r in results} == {TargetKind.SERVICE}
    named = {r.nsid for r in results if r.nsid}
    assert named and named <= set(c.pod_names())
    assert all(h.state is HealthState.HEALTHY for h in c.service.state.healths.values())


async def test_a_nodeport_judges_every_pod_and_the_path_healthy(start: Start) -> None:
    c = await start(replicas=2, nsid=True, before=nodeport(), **EXPOSED)
    await healthy_through_the_front_doors(c, set(c.sandbox.node_addresses().values()))
    labels = {t.name for t in c.service.state.targets.services}
    assert labels == {f"exposed:{n}" for n in c.sandbox.node_addresses()}
    found = await assess(c.access.api, c.service.settings)
    assert found.usable and "kube-dns-probe" in found.reason and "NSID coredns" in found.reason
    async with aiohttp.ClientSession() as session, session.get(f"{c.url}/status") as resp:
        status = await resp.json()
    exposed = status["reach"]["exposed"]
    assert status["reach"]["strategy"] == "exposed"
    assert {f["name"] for f in exposed["frontends"]} == labels
    assert set(exposed["nsid_answers"]) == set(c.pod_names())
    assert exposed["answers_without_nsid"] == 0
    assert exposed["attribution_by_absence"] == "on: a pod absent from 20 answers of 2 pods " \
                                                "(P <= 1e-06)"
    shown = {t["name"]: t for t in status["targets"]}
    assert set(shown) == labels | set(c.pod_names())
    for pod in c.pod_names():
        assert shown[pod]["health"] == "healthy" and shown[pod]["attribution"].startswith(
            "named in ")
    names = {r["nsid"] for t in labels for r in shown[t]["last"] if r["nsid"]}
    assert names and names <= set(c.pod_names())


async def test_a_load_balancer_is_probed_at_its_address(start: Start) -> None:
    c = await start(replicas=2, nsid=True, before=load_balancer, **EXPOSED)
    (ingress,) = c.sandbox.service("kube-system", "dns-outside")["status"]["loadBalancer"][
        "ingress"]
    await healthy_through_the_front_doors(c, {ingress["ip"]})
    assert [t.address for t in c.service.state.targets.services] == [ingress["ip"]]


@pytest.mark.parametrize("replicas", [2, 3])
async def test_with_nsid_a_pod_dropping_udp_is_named_and_evicted_once(start: Start,
                                                                      replicas: int) -> None:
    c = await start(replicas=replicas, nsid=True, before=nodeport(), **EXPOSED, **EVICT)
    await c.until(all_pods(c, HealthState.HEALTHY), within=30)
    pods = PodLog(c)
    sick = c.pod_names()[0]
    t_fault = time.monotonic()
    await c.sandbox.set_pod_fault(sick, "drop")
    await c.until(lambda s: [t.name for t in s.state.diagnosis.candidates] == [sick],
                  within=30)
    t_named = time.monotonic()
    evidence = c.service.state.diagnosis.evidence_of(sick)
    assert "named in 0 of " in evidence and f"answers from {replicas} pods" in evidence
    await c.until(lambda _s: sick in pods.removed(), within=40)
    t_evicted = time.monotonic()
    await c.until(lambda s: all_pods(c, HealthState.HEALTHY)(s)
                  and len(c.pod_names()) == replicas
                  and s.state.diagnosis.state is DiagnosisState.HEALTHY, within=40)
    await rounds(c, 10)
    assert pods.removed() == {sick}
    actions = c.remediation["budget"]["last_actions"]
    assert [(a["action"], a["pod"]) for a in actions] == [("evict", sick)]
    print(f"\n{replicas} pods: fault→named {t_named - t_fault:.1f} s, fault→evicted "
          f"{t_evicted - t_fault:.1f} s (window {c.service.settings.window:g} s, interval "
          f"{c.service.settings.interval:g} s, 3 node addresses)")


async def test_without_nsid_the_verdict_is_service_level_and_nothing_restarts(
        start: Start) -> None:
    c = await start(replicas=2, nsid=False, before=nodeport(), **EXPOSED, **EVICT)
    verdicts: list[tuple[DiagnosisState, tuple[str, ...]]] = []
    c.round_hooks.append(lambda s: verdicts.append(
        (s.state.diagnosis.state, tuple(t.name for t in s.state.diagnosis.candidates))))
    pods = PodLog(c)
    await c.sandbox.set_pod_fault(c.pod_names()[0], "drop")

    def timeouts(s: ProberService) -> int:
        return sum(dict(h.outcomes).get("timeout", 0) for h in s.state.healths.values()
                   if h.target.kind is TargetKind.SERVICE)

    await c.until(lambda s: timeouts(s) >= 20, within=30)  # the path fails at one pod's share
    assert all(pod_health(c.service, p) is HealthState.UNKNOWN for p in c.pod_names())
    await c.sandbox.set_all_pods_fault("drop")
    await c.until(lambda s: s.state.diagnosis.state is DiagnosisState.SERVICE_PATH, within=30)
    assert "no pod is judged on its own" in c.service.state.diagnosis.reason
    await rounds(c, 10)
    assert c.service.state.diagnosis.state is DiagnosisState.SERVICE_PATH
    assert all(candidates == () for _, candidates in verdicts)
    assert DiagnosisState.POD not in {state for state, _ in verdicts}
    assert pods.removed() == set()
    assert c.remediation["budget"]["last_actions"] == []


async def test_local_traffic_policy_attributes_by_node_without_nsid(start: Start) -> None:
    c = await start(replicas=2, nsid=False, before=nodeport(externalTrafficPolicy="Local"),
                    **EXPOSED)
    await c.until(all_pods(c, HealthState.HEALTHY), within=30)
    by_node = {p["spec"]["nodeName"]: p["metadata"]["name"] for p in c.sandbox.dns_pods()}
    assert {t.name for t in c.service.state.targets.services} == {
        f"exposed:{n}" for n in by_node}  # the node without a DNS pod is not probed
    sick = c.pod_names()[0]
    await c.sandbox.set_pod_fault(sick, "drop")
    await c.until(lambda s: [t.name for t in s.state.diagnosis.candidates] == [sick],
                  within=30)
    (other,) = [p for p in c.pod_names() if p != sick]
    assert pod_health(c.service, other) is HealthState.HEALTHY
    assert "the only pod behind the address" in c.service.state.diagnosis.evidence_of(sick)
