"""Vantages end to end: three real DNS pods on three nodes, and the project's own
Deployment (deploy/, three replicas) run by the sandbox as three prober processes,
one in each node's network namespace, whose addresses are their pod IPs. The
leader pulls the others' views from the pod IPs of the corednsprobe Service's
EndpointSlice. Faults are nft rules: node A's vantage → pod P dropped (a path),
P's UDP dropped for everyone (a pod), A's vantage reaching no pod (isolated).
What is checked is what the cluster and the replicas show: evictions, Events,
each replica's /status."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import aiohttp.web
import pytest
import yaml
from kubernetes_asyncio import client

from corednsprobe.sandbox.cluster import Sandbox, SandboxConfig
from corednsprobe.sandbox.controllers import PODS, Timings
from tests.e2e.conftest import make_backend
from tests.kube.conftest import api_client_for, communicate_within

pytestmark = [pytest.mark.root, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
KINDS = ("ServiceAccount", "Role", "RoleBinding", "Service", "Deployment")
ENV = {
    "COREDNSPROBE_INTERVAL": "0.5",
    "COREDNSPROBE_TIMEOUT": "0.2",
    "COREDNSPROBE_WINDOW": "5",
    "COREDNSPROBE_MIN_POD_AGE": "0",
    "COREDNSPROBE_CONFIRM": "2",
    "COREDNSPROBE_COOLDOWN": "1",
    "COREDNSPROBE_MAX_RESTARTS_PER_HOUR": "10",
    "COREDNSPROBE_LISTEN": "0.0.0.0:9180",
    "COREDNSPROBE_PROBER_NAMESPACE": "kube-system",
    "COREDNSPROBE_LOG_LEVEL": "info",
}


def manifests(env: dict[str, str]) -> str:
    """deploy/ as kubectl renders it, the prober's env made fast; only the kinds the
    sandbox serves (no PDB or NetworkPolicy)."""
    text = subprocess.run(["kubectl", "kustomize", str(ROOT / "deploy")], capture_output=True,
                          text=True, timeout=120, check=True).stdout
    docs = [d for d in yaml.safe_load_all(text) if d and d["kind"] in KINDS]
    for d in docs:
        if d["kind"] == "Deployment":
            container = d["spec"]["template"]["spec"]["containers"][0]
            given = {e["name"] for e in container["env"]}
            container["env"] = [e for e in container["env"] if e["name"] not in env] + [
                {"name": k, "value": v} for k, v in env.items()]
            assert "COREDNSPROBE_NODE_NAME" in given
    return yaml.safe_dump_all(docs)


@dataclass
class Cluster:
    sandbox: Sandbox
    api: client.ApiClient
    http: aiohttp.ClientSession
    nodes: list[str]

    @property
    def backend(self) -> Any:
        return self.sandbox.backend

    def pods(self) -> list[dict[str, Any]]:
        return list(self.sandbox.store.items(PODS))

    def probers(self) -> dict[str, dict[str, Any]]:
        """Running prober pods by name."""
        return {p["metadata"]["name"]: p for p in self.pods()
                if (p["metadata"].get("labels") or {}).get("app.kubernetes.io/name")
                == "corednsprobe" and p["status"].get("phase") == "Running"
                and not p["metadata"].get("deletionTimestamp")}

    def dns_pods(self) -> list[str]:
        return sorted(p["metadata"]["name"] for p in self.sandbox.dns_pods()
                      if not p["metadata"].get("deletionTimestamp"))

    def node_of(self, pod: str) -> str:
        return next(p["spec"]["nodeName"] for p in self.sandbox.dns_pods()
                    if p["metadata"]["name"] == pod)

    async def status(self, prober: dict[str, Any]) -> dict[str, Any] | None:
        url = f"http://{prober['status']['podIP']}:9180/status"
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, json.JSONDecodeError):
            async with self.http.get(url, timeout=aiohttp.ClientTimeout(total=1)) as resp:
                return dict(await resp.json()) if resp.status == 200 else None
        return None

    async def leader(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(pod, /status) of the replica that leads."""
        for pod in self.probers().values():
            doc = await self.status(pod)
            if doc is not None and (doc.get("remediation") or {}).get("leader"):
                return pod, doc
        raise LookupError("no leader")

    async def until(self, check: Any, within: float, what: str) -> Any:
        """Poll the leader's /status until ``check(doc)`` is truthy; its value."""
        loop = asyncio.get_running_loop()
        end = loop.time() + within
        last: Any = None
        while loop.time() < end:
            with contextlib.suppress(LookupError):
                _pod, doc = await self.leader()
                last = doc
                if found := check(doc):
                    return found
            await asyncio.sleep(0.25)
        raise AssertionError(f"{what}: not seen within {within} s; last /status "
                             f"diagnosis {json.dumps((last or {}).get('diagnosis'))}, "
                             f"vantages {json.dumps((last or {}).get('vantages'))}")

    async def events(self, reason: str) -> list[Any]:
        found = await client.CoreV1Api(self.api).list_namespaced_event("kube-system")
        return [e for e in found.items if e.reason == reason
                and e.source and e.source.component == "corednsprobe"]

    def pid_of(self, prober: str) -> int:
        uid = next(p["metadata"]["uid"] for p in self.pods()
                   if p["metadata"]["name"] == prober)
        return int(self.sandbox.processes.running[uid].process.pid)


def state(doc: dict[str, Any]) -> str:
    return str(doc["diagnosis"]["state"])


def counted(doc: dict[str, Any]) -> int:
    return int(doc["vantages"]["vantages"])


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with Sandbox(make_backend("netns"), SandboxConfig(
            replicas=3, nodes=3, termination_grace_seconds=1, run_probers=True,
            timings=Timings(readiness_period=0.1, resync_period=1.0))) as sandbox:
        await sandbox.wait_ready(within=30)
        kubeconfig = sandbox.write_kubeconfig(tmp_path / "kubeconfig")
        (tmp_path / "deploy.yaml").write_text(manifests(ENV))
        process = await asyncio.create_subprocess_exec(
            "kubectl", "--kubeconfig", str(kubeconfig), "create", "--validate=false", "-f",
            str(tmp_path / "deploy.yaml"), stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        code, out, err = await communicate_within(process, 60)
        assert code == 0, out + err
        async with await api_client_for(sandbox, tmp_path / "client") as api, \
                aiohttp.ClientSession() as http:
            c = Cluster(sandbox, api, http, sorted(n["metadata"]["name"]
                                                   for n in sandbox.nodes()))
            try:
                await c.until(lambda d: counted(d) == 3 and state(d) == "healthy"
                              and int(d["diagnosis"]["evidence"].get("pods_judged", 0)) == 3,
                              within=60, what="three vantages judging three healthy pods")
                yield c
            finally:
                for pid in list(_stopped):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGCONT)
                _stopped.clear()


_stopped: set[int] = set()


def freeze(pid: int) -> None:
    os.killpg(pid, signal.SIGSTOP)
    _stopped.add(pid)


def health(doc: dict[str, Any], pod: str) -> str:
    return str(next(t["health"] for t in doc["targets"] if t["name"] == pod))


def node_of_prober(prober: dict[str, Any]) -> str:
    return str(prober["spec"]["nodeName"])


async def hold(c: Cluster, seconds: float, *, dns: list[str], state_is: str) -> None:
    """For ``seconds``: no DNS pod removed, and the leader keeps saying ``state_is`` —
    or ``healthy``, for a round where a loaded leader went without the answer of the
    replica that sees the fault for longer than the bound (never anything else)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        assert c.dns_pods() == dns
        with contextlib.suppress(LookupError):
            _pod, doc = await c.leader()
            assert state(doc) in (state_is, "healthy"), doc["diagnosis"]
        await asyncio.sleep(0.25)


async def test_a_broken_path_restarts_nothing_and_names_both_nodes(cluster: Cluster) -> None:
    c = cluster
    dns = c.dns_pods()
    victim = dns[0]
    pod_node = c.node_of(victim)
    node_a = next(n for n in c.nodes if n != pod_node)
    await c.backend.set_path_fault(node_a, victim, True)
    path = await c.until(lambda d: state(d) == "path" and d["vantages"]["paths"],
                         within=20, what="a path verdict")
    assert path == [{"pod": victim, "pod_node": pod_node, "from_nodes": [node_a],
                     "healthy_from": sorted(n for n in c.nodes if n != node_a)}]
    leader, doc = await c.leader()
    assert f"from {node_a} to {pod_node}" in doc["diagnosis"]["evidence"][f"path/{victim}"]
    assert [health(doc, p) for p in dns if p != victim] == ["healthy", "healthy"]
    async with c.http.get(f"http://{leader['status']['podIP']}:9180/metrics") as resp:
        metrics = await resp.text()
    assert f'corednsprobe_path_unhealthy{{from_node="{node_a}",pod="{victim}"}} 1.0' in metrics
    await hold(c, 6.0, dns=dns, state_is="path")  # past the 2 s confirmation, several times
    events = await c.events("CoreDNSPathUnreachable")  # once per path (again if it flapped)
    assert events and all(e.involved_object.name == victim and e.type == "Warning"
                          and f"from {node_a} to {pod_node}" in e.message for e in events)
    assert await c.events("CoreDNSPodRestarted") == []


async def test_a_sick_pod_is_evicted_once_naming_the_agreeing_vantages(cluster: Cluster) -> None:
    c = cluster
    dns = c.dns_pods()
    victim = dns[1]
    await c.sandbox.set_pod_fault(victim, "drop")
    await c.until(lambda _d: victim not in c.dns_pods(), within=40, what="the eviction")
    await c.until(lambda d: state(d) == "healthy" and len(c.dns_pods()) == 3
                  and int(d["diagnosis"]["evidence"].get("pods_judged", 0)) == 3,
                  within=40, what="health with the replacement")
    await hold(c, 3.0, dns=c.dns_pods(), state_is="healthy")
    assert set(dns) - set(c.dns_pods()) == {victim}
    _leader, doc = await c.leader()
    assert [(a["action"], a["pod"]) for a in doc["remediation"]["budget"]["last_actions"]] \
        == [("evict", victim)]
    [failed] = await c.events("CoreDNSProbeFailed")
    assert failed.involved_object.name == victim
    # the vantages that agreed when it became a candidate: at least the quorum (2) of
    # the three nodes (the third may judge it a round later)
    agreed = re.search(r"vantages=(\d) \(([^)]*)\)", failed.message)
    assert agreed is not None, failed.message
    nodes = agreed.group(2).split(",")
    assert int(agreed.group(1)) == len(nodes) >= 2 and set(nodes) <= set(c.nodes)
    assert f"unhealthy from {agreed.group(2)}" in failed.message  # and the reason says so


async def test_an_isolated_vantage_is_set_aside_and_restarts_nothing(cluster: Cluster) -> None:
    c = cluster
    dns = c.dns_pods()
    isolated = c.nodes[0]
    await c.backend.set_vantage_isolated(isolated, True)
    await c.until(lambda d: state(d) == "vantage_isolated", within=20,
                  what="a vantage_isolated verdict")
    _leader, doc = await c.leader()
    assert doc["diagnosis"]["evidence"]["vantages_isolated"] == isolated
    assert [v["node"] for v in doc["vantages"]["views"] if v["state"] == "isolated"] \
        == [isolated]
    assert counted(doc) == 2
    await hold(c, 5.0, dns=dns, state_is="vantage_isolated")
    assert await c.events("CoreDNSProbeFailed") == []


async def test_a_frozen_replica_expires_and_the_quorum_counts_the_rest(cluster: Cluster) -> None:
    c = cluster
    leader, doc = await c.leader()
    bound = float(doc["vantages"]["max_age_seconds"])
    follower = next(p for name, p in sorted(c.probers().items())
                    if name != leader["metadata"]["name"])
    loop = asyncio.get_running_loop()
    frozen_at = loop.time()
    freeze(c.pid_of(follower["metadata"]["name"]))
    await c.until(lambda d: counted(d) == 2, within=10, what="the frozen view dropped")
    expired_after = loop.time() - frozen_at
    # its last view was judged at most a pull's interval before it froze, the leader
    # sees it stale at its next round after the bound, and polling adds a little
    interval = float(doc["settings"]["interval"])
    assert expired_after <= bound + 2 * interval + 0.75, expired_after
    rest = sorted(n for n in c.nodes if n != node_of_prober(follower))
    victim = c.dns_pods()[2]
    await c.sandbox.set_pod_fault(victim, "drop")
    await c.until(lambda _d: victim not in c.dns_pods(), within=40, what="the eviction")
    [failed] = await c.events("CoreDNSProbeFailed")
    assert f"vantages=2 ({','.join(rest)})" in failed.message
    print(f"\nfrozen view dropped after {expired_after:.2f} s (bound {bound:g} s)")


async def test_leader_failover_in_a_broken_path_keeps_the_rule(cluster: Cluster) -> None:
    c = cluster
    dns = c.dns_pods()
    leader, _doc = await c.leader()
    victim = next(p for p in dns if c.node_of(p) != node_of_prober(leader))
    # the path starts at a follower's node that is not the victim's
    node_a = next(n for n in c.nodes
                  if n not in (c.node_of(victim), node_of_prober(leader)))
    await c.backend.set_path_fault(node_a, victim, True)
    await c.until(lambda d: state(d) == "path", within=20, what="a path verdict")
    os.killpg(c.pid_of(leader["metadata"]["name"]), signal.SIGTERM)  # hands the Lease back
    successor = await c.until(
        lambda d: d["remediation"]["identity"] != _doc["remediation"]["identity"]
        and d["vantages"]["pulling"] and d["vantages"]["pod"], within=30,
        what="a new leader")
    assert successor != leader["metadata"]["name"]
    await c.until(lambda d: state(d) == "path" and d["vantages"]["pod"] == successor
                  and d["vantages"]["paths"][0]["from_nodes"] == [node_a],
                  within=10, what="the new leader's own path verdict")
    await hold(c, 5.0, dns=dns, state_is="path")
    assert await c.events("CoreDNSPodRestarted") == []


async def test_a_view_from_an_address_the_service_does_not_list_is_never_asked(
        cluster: Cluster) -> None:
    """A server on an address every prober can reach (the bridge's), answering
    /vantage with every pod sick, as many nodes as it likes: nobody lists it, so
    nobody asks it, and nothing changes."""
    c = cluster
    dns = c.dns_pods()
    asked: list[str] = []

    async def fake(request: aiohttp.web.Request) -> aiohttp.web.Response:
        asked.append(request.remote or "")
        return aiohttp.web.json_response({"version": 1, "pod": "intruder", "node": "node-x",
                                          "at": 0, "age": 0, "targets": []})

    app = aiohttp.web.Application()
    app.router.add_get("/vantage", fake)
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    try:
        await aiohttp.web.TCPSite(runner, c.backend.api_address, 9180).start()
        await hold(c, 4.0, dns=dns, state_is="healthy")
        _leader, doc = await c.leader()
        assert counted(doc) == 3 and "intruder" not in json.dumps(doc["vantages"])
        assert asked == []
    finally:
        await runner.cleanup()
