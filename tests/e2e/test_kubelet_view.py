"""The kubelet's view beside ours, end to end: real unbound pods in network namespaces
whose /health and /ready answer as CoreDNS's plugins do, the service reading the
endpoints from the pods' specs through the real client, and what /status, /metrics
and the Events say when a pod's UDP dies with its health port up, or down too."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client
from prometheus_client.parser import text_string_to_metric_families

from corednsprobe.model import HealthState
from tests.e2e.conftest import Running, Start, health_of, pods_judged

pytestmark = pytest.mark.root

EVICT = {"COREDNSPROBE_REMEDIATION": "evict", "COREDNSPROBE_COOLDOWN": "1",
         "COREDNSPROBE_MAX_RESTARTS_PER_HOUR": "10"}
RFC = "kubelet sees healthy while DNS over UDP fails (coredns#3617)"


async def fetch(c: Running, path: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(c.url + path) as resp:
        assert resp.status == 200
        return await resp.text()


async def status(c: Running) -> dict[str, Any]:
    return dict(json.loads(await fetch(c, "/status")))


def endpoint_ok(metrics: str) -> dict[tuple[str, str], float]:
    return {(s.labels["pod"], s.labels["endpoint"]): s.value
            for fam in text_string_to_metric_families(metrics)
            if fam.name == "corednsprobe_health_endpoint_ok" for s in fam.samples}


def evidence_of(c: Running, pod: str) -> str:
    evidence = c.service.state.diagnosis.evidence
    return evidence.as_dict().get(f"pod/{pod}/health_endpoint", "") if evidence else ""


async def corednsprobe_events(c: Running, pod: str) -> list[Any]:
    events = await client.CoreV1Api(c.access.api).list_namespaced_event("kube-system")
    return [e for e in events.items if e.source and e.source.component == "corednsprobe"
            and e.involved_object.name == pod]


async def all_endpoints_ok(c: Running) -> None:
    """Every pod's two endpoints, taken from its spec, answer OK in the metric."""
    pods = c.pod_names()
    await c.until(lambda s: len(s.state.endpoints) == len(pods)
                  and all(e.ok for states in s.state.endpoints.values() for e in states),
                  within=20)
    seen = endpoint_ok(await fetch(c, "/metrics"))
    assert seen == {(p, e): 1.0 for p in pods for e in (":8080/health", ":8181/ready")}


async def test_udp_dead_with_health_ok_is_named_in_status_metric_and_event(start: Start) -> None:
    c = await start(replicas=3, **EVICT)
    await c.until(lambda s: pods_judged(s) == 3, within=20)
    await all_endpoints_ok(c)
    sick = c.pod_names()[0]
    await c.sandbox.set_pod_fault(sick, "udp-drop")
    await c.until(lambda s: RFC in evidence_of(c, sick), within=30)

    doc = await status(c)
    said = doc["diagnosis"]["evidence"][f"pod/{sick}/health_endpoint"]
    assert said == f"/health ok, /ready ok — {RFC}"
    target = next(t for t in doc["targets"] if t["name"] == sick)
    assert [(e["endpoint"], e["outcome"], e["status"]) for e in target["health_endpoints"]] \
        == [(":8080/health", "ok", 200), (":8181/ready", "ok", 200)]
    metrics = await fetch(c, "/metrics")
    assert endpoint_ok(metrics)[sick, ":8080/health"] == 1.0
    assert health_of(c.service, sick).state is HealthState.UNHEALTHY
    unhealthy = {s.labels["pod"] for fam in text_string_to_metric_families(metrics)
                 if fam.name == "corednsprobe_target_health" for s in fam.samples
                 if s.labels["state"] == "unhealthy" and s.value == 1}
    assert sick in unhealthy  # the DNS verdict beside the kubelet's view

    # evicted: the Event on that pod names the failure the kubelet cannot see
    await c.until(lambda _s: sick not in c.pod_names(), within=40)
    failed = [e for e in await corednsprobe_events(c, sick) if e.reason == "CoreDNSProbeFailed"]
    assert failed and f"Health endpoints: /health ok, /ready ok — {RFC}" in failed[0].message
    # and its series left with it
    await c.until(lambda s: all(t.name != sick for t in s.state.targets.pods), within=20)
    assert all(pod != sick for pod, _ in endpoint_ok(await fetch(c, "/metrics")))
    if shutil.which("promtool"):
        exposition = (await fetch(c, "/metrics")).encode()
        proc = await asyncio.to_thread(subprocess.run, ["promtool", "check", "metrics"],
                                       input=exposition, capture_output=True, timeout=60)
        assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()


async def test_udp_dead_with_health_down_says_the_kubelet_sees_it_too(start: Start) -> None:
    c = await start(replicas=3)
    await c.until(lambda s: pods_judged(s) == 3, within=20)
    await all_endpoints_ok(c)
    sick = c.pod_names()[1]
    await c.sandbox.set_pod_fault(sick, "udp-drop+health-down")
    await c.until(lambda s: "liveness probe fails as well" in evidence_of(c, sick), within=30)

    said = (await status(c))["diagnosis"]["evidence"][f"pod/{sick}/health_endpoint"]
    assert said.startswith("/health timeout, /ready ok — the kubelet's liveness probe fails")
    assert "coredns#3617" not in said
    seen = endpoint_ok(await fetch(c, "/metrics"))
    assert (seen[sick, ":8080/health"], seen[sick, ":8181/ready"]) == (0.0, 1.0)
    others = [p for p in c.pod_names() if p != sick]
    assert all(seen[p, ":8080/health"] == 1.0 for p in others)
