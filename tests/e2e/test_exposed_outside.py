"""The exposed strategy from outside the cluster: corednsprobe as a subprocess in a
network namespace that reaches the API server and the node addresses but not the pod
IPs or the ClusterIPs (tests/helpers/outside.py), with the in-cluster Roles of
``kubectl apply -k deploy/`` and deploy/extras/exposed-rbac.yaml, and the NodePort of
deploy/extras/dns-nodeport.yaml."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import FAST, netns_available
from tests.e2e.test_reach_outside import EVICT, Place, health
from tests.helpers.outside import REPO, ServiceInside, run_inside, sandbox_outside

pytestmark = pytest.mark.root

NODEPORT = REPO / "deploy" / "extras" / "dns-nodeport.yaml"
EXPOSED_RBAC = REPO / "deploy" / "extras" / "exposed-rbac.yaml"
RUN = {**FAST, **EVICT, "COREDNSPROBE_WINDOW": "10"}


@pytest.fixture
async def nsid_place(tmp_path: Path) -> AsyncIterator[Place]:
    """The outside set-up with the NodePort, its front doors open to the namespace,
    and DNS pods that answer NSID."""
    if reason := netns_available():
        pytest.skip(f"outside set-up: {reason}")
    if shutil.which("kubectl") is None or shutil.which("dig") is None:
        pytest.skip("kubectl or dig is not installed")
    async with sandbox_outside(tmp_path, replicas=2, nsid=True) as (out, sandbox, admin):
        out.allow_frontends(sandbox.backend)
        yield Place(out, sandbox, admin, tmp_path)


async def front_doors_answer(place: Place) -> None:
    addresses = place.sandbox.node_addresses()
    nodes = {p["spec"]["nodeName"] for p in place.sandbox.dns_pods()}
    async with asyncio.timeout(20):
        for node in nodes:  # each dig waits up to a second for its answer
            while not await asyncio.to_thread(place.out.reaches_udp, addresses[node], 30053):
                pass


async def test_auto_picks_exposed_and_a_pod_dropping_udp_is_evicted_once(
        nsid_place: Place) -> None:
    place = nsid_place
    kubeconfig = await place.account(NODEPORT, EXPOSED_RBAC)
    await front_doors_answer(place)
    pod_ip = place.sandbox.dns_pods()[0]["status"]["podIP"]
    assert not place.out.reaches_udp(pod_ip)  # truly outside: no pod network

    code, out, err = await run_inside(place.out, "reach", "--json", "--kubeconfig",
                                      str(kubeconfig))
    assert code == 0, err
    doc = json.loads(out)
    assert doc["auto"] == "exposed", doc
    print(f"\noutside: auto=exposed decided in {doc['decision_seconds']} s")
    found = {s["strategy"]: s for s in doc["strategies"]}
    assert found["direct"]["usable"] is False
    assert "kube-dns-probe" in found["exposed"]["reason"]
    assert "NSID coredns" in found["exposed"]["reason"]

    async with ServiceInside(place.out, "--kubeconfig", str(kubeconfig), env=RUN) as service:
        await service.started()
        chosen = service.event("reach_chosen")
        assert chosen is not None and chosen["strategy"] == "exposed"
        first = place.pods()
        await service.until(lambda d: all(health(d, p) == "healthy" for p in first), within=40)
        sick = first[0]
        t0 = time.monotonic()
        await place.sandbox.set_pod_fault(sick, "drop")
        named: list[float] = []

        def evicted(d: dict[str, Any]) -> bool:
            if not named and sick in d["diagnosis"]["candidates"]:
                named.append(time.monotonic() - t0)
            return sick not in place.pods() and len(place.pods()) == 2 and all(
                health(d, p) == "healthy" for p in place.pods())

        doc = await service.until(evicted, within=60)
        start_rounds = doc["rounds"]["completed"]
        doc = await service.until(lambda d: d["rounds"]["completed"] >= start_rounds + 10,
                                  within=30)
        actions = doc["remediation"]["budget"]["last_actions"]
        assert [(a["action"], a["pod"]) for a in actions] == [("evict", sick)]
        assert doc["reach"]["strategy"] == "exposed"
        probed = [t for t in doc["targets"] if t["last"]]
        assert probed and {t["name"] for t in probed} <= {
            f"exposed:{n}" for n in place.sandbox.node_addresses()}
        assert {r["reach"] for t in probed for r in t["last"]} == {"exposed"}
        print(f"\noutside, 2 pods: fault→named {named[0] if named else float('nan'):.1f} s, "
              f"→evicted and replaced {time.monotonic() - t0:.1f} s")
