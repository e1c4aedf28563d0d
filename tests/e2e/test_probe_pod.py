"""The probe-pod reach end to end: real unbound pods (netns backend), the service
probing through an agent pod that the sandbox runs as a real `corednsprobe agent`
process, read through pods/log by the real client; the pod as kubectl sees it."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from corednsprobe.model import DiagnosisState, HealthState
from corednsprobe.sandbox.registry import PODS
from corednsprobe.service.prober import ProberService
from tests.e2e.conftest import Running, Start, health_of, pods_judged
from tests.e2e.test_remediation import EVICT, PodLog, rounds
from tests.kube.conftest import Kubectl

pytestmark = pytest.mark.root

# quorum 1: one vantage, so one agent pod, placed by the scheduler
# (several agents, one per node: test_probe_pod_vantages.py)
PROBE_POD = {"COREDNSPROBE_REACH": "probe-pod", "COREDNSPROBE_QUORUM": "1"}
AGENTS = "app.kubernetes.io/name=corednsprobe,app.kubernetes.io/component=probe-agent"


def agent_pods(c: Running) -> list[dict[str, Any]]:
    return [p for p in c.sandbox.store.items(PODS, "kube-system")
            if (p["metadata"].get("labels") or {}).get("app.kubernetes.io/component")
            == "probe-agent"]


def state_of(service: ProberService, name: str) -> HealthState | None:
    return next((h.state for h in service.state.healths.values() if h.target.name == name),
                None)


async def status(c: Running) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(f"{c.url}/status") as resp:
        doc: dict[str, Any] = await resp.json()
    return doc


async def test_probe_pod_evicts_a_udp_dropping_pod_once_and_follows_its_replacement(
        start: Start, tmp_path: Path) -> None:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    c = await start(replicas=3, **PROBE_POD, **EVICT)
    await c.until(lambda s: pods_judged(s) == 3, within=30)
    kubectl = Kubectl(c.sandbox.write_kubeconfig(tmp_path / "kubeconfig"), tmp_path / "cache")
    listed = await kubectl.json("-n", "kube-system", "get", "pods", "-l", AGENTS)
    (pod,) = listed["items"]
    spec = pod["spec"]
    (container,) = spec["containers"]
    assert pod["metadata"]["labels"]["corednsprobe.io/owner"]
    assert spec["restartPolicy"] == "Never" and spec["activeDeadlineSeconds"] == 3600
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 65532
    assert container["image"] == "corednsprobe" and container["args"][0] == "agent"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert pod["status"]["phase"] == "Running"
    first_agent = pod["metadata"]["name"]
    spec_arg = json.loads(container["args"][1])  # the targets as the API tells them
    assert sorted(t["name"] for t in spec_arg["targets"] if t["kind"] == "pod") == \
        c.pod_names()
    results = [r for ring in c.service.state.last.values() for r in ring]
    assert results and {r.reach for r in results} == {"probe-pod"}
    reach = (await status(c))["reach"]
    assert reach["strategy"] == "probe-pod" and reach["pod"] == first_agent
    assert 0 < reach["startup_seconds"] < 20 and reach["malformed_lines"] == 0

    pods = PodLog(c)
    sick, *healthy = c.pod_names()
    await c.sandbox.set_pod_fault(sick, "drop")
    await c.until(lambda _s: sick in pods.removed(), within=60)
    assert all(health_of(c.service, p).state is HealthState.HEALTHY for p in healthy), [
        (p, health_of(c.service, p).state, health_of(c.service, p).grace_reason) for p in healthy]
    assert health_of(c.service, "service").state is HealthState.HEALTHY
    # the replacement pod is a new target: the agent pod is replaced for it
    await c.until(lambda _s: len(c.pod_names()) == 3, within=20)
    replacement = next(p for p in c.pod_names() if p not in healthy)
    await c.until(lambda s: state_of(s, replacement) is HealthState.HEALTHY
                  and s.state.diagnosis.state is DiagnosisState.HEALTHY, within=40)

    def live_agents() -> list[str]:
        return [p["metadata"]["name"] for p in agent_pods(c)
                if not p["metadata"].get("deletionTimestamp")]

    # a replacement overlaps its predecessor until its first result: then one is left
    await c.until(lambda _s: len(live_agents()) == 1, within=20)
    assert live_agents() != [first_agent]
    reach = (await status(c))["reach"]
    assert reach["pods_created"] >= 2 and reach["last_replacement"] == "the targets changed"
    await rounds(c, 6)  # and nothing else is touched
    assert pods.removed() == {sick}
    actions = c.remediation["budget"]["last_actions"]
    assert [(a["action"], a["pod"]) for a in actions] == [("evict", sick)]
    print(f"\nagent start-up {reach['startup_seconds']} s (max {reach['startup_seconds_max']} s)"
          f", {reach['results']} results, {reach['no_result']} not carried, "
          f"at {time.strftime('%H:%M:%S')}")
