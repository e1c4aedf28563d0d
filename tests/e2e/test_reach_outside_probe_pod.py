"""The probe-pod reach from outside the cluster: corednsprobe in a network namespace
that reaches the API server but not the pod IPs (tests/helpers/outside.py), acting as
the corednsprobe ServiceAccount with deploy/ and deploy/extras/probe-pod-rbac.yaml
applied; the agent pod runs in the sandbox as a real `corednsprobe agent` process
beside the real unbound pods. What is asserted is what an operator sees: auto's pick,
the evictions, /status and the log."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from corednsprobe.sandbox.registry import PODS
from tests.e2e.conftest import FAST
from tests.e2e.test_reach_outside import (
    EVICT,
    PORT_FORWARD_ROLE,
    Place,
    health,
    strategies,
)
from tests.e2e.test_reach_outside import place as place
from tests.helpers.outside import REPO, ServiceInside, run_inside

pytestmark = pytest.mark.root

RUN = {**FAST, **EVICT, "COREDNSPROBE_PROBER_NAMESPACE": "kube-system"}


@pytest.fixture
def probe_pod_role(tmp_path: Path) -> Path:
    """deploy/extras/probe-pod-rbac.yaml bound to the corednsprobe ServiceAccount."""
    docs = [d for d in yaml.safe_load_all((REPO / "deploy/extras/probe-pod-rbac.yaml")
                                          .read_text()) if d]
    for doc in docs:
        if doc["kind"] == "RoleBinding":
            doc["subjects"] = [{"kind": "ServiceAccount", "name": "corednsprobe",
                                "namespace": "kube-system"}]
    path = tmp_path / "probe-pod-rbac.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    return path


def agents(place: Place) -> list[dict[str, Any]]:
    return [p for p in place.sandbox.store.items(PODS, "kube-system")
            if (p["metadata"].get("labels") or {}).get("app.kubernetes.io/component")
            == "probe-agent"]


async def test_auto_picks_probe_pod_from_outside_and_evicts_a_udp_dropping_pod_once(
        place: Place, probe_pod_role: Path) -> None:
    kubeconfig = await place.account(probe_pod_role)
    code, out, err = await run_inside(place.out, "reach", "--json", "--kubeconfig",
                                      str(kubeconfig))
    assert code == 0, err
    doc = json.loads(out)
    assert doc["auto"] == "probe-pod", doc
    print(f"\noutside: auto=probe-pod decided in {doc['decision_seconds']} s")
    assert strategies(doc)["direct"]["usable"] is False  # the pod IPs are out of reach
    async with ServiceInside(place.out, "--kubeconfig", str(kubeconfig), env=RUN) as service:
        await service.started()
        chosen = service.event("reach_chosen")
        assert chosen is not None and chosen["strategy"] == "probe-pod"
        first = place.pods()
        doc = await service.until(lambda d: all(health(d, p) == "healthy" for p in first)
                                  and health(d, "service") == "healthy", within=60)
        assert {r["reach"] for t in doc["targets"] for r in t["last"]} == {"probe-pod"}
        ready = service.event("probe_pod_ready")
        assert ready is not None and ready["startup_seconds"] > 0
        sick = first[0]
        await place.sandbox.set_pod_fault(sick, "udp-drop")
        t0 = time.monotonic()
        doc = await service.until(lambda d: sick not in [t["name"] for t in d["targets"]]
                                  and len(d["targets"]) == 4
                                  and all(t["health"] == "healthy" for t in d["targets"]),
                                  within=90)
        evicted_after = time.monotonic() - t0
        assert [(a["action"], a["pod"]) for a in doc["remediation"]["budget"]["last_actions"]] \
            == [("evict", sick)]
        assert doc["reach"]["strategy"] == "probe-pod"
        assert doc["reach"]["pods_created"] >= 2  # the agent followed the replacement
        assert sick not in place.pods()
        print(f"\nprobe-pod from outside: UDP-dropping pod evicted and replaced within "
              f"{evicted_after:.1f} s; agent start-up {doc['reach']['startup_seconds']} s")
    assert await service.exit_code() == 0
    assert agents(place) == []  # the clean stop left no agent pod


async def test_auto_moves_on_when_the_probe_image_cannot_be_pulled(
        place: Place, probe_pod_role: Path) -> None:
    kubeconfig = await place.account(probe_pod_role, PORT_FORWARD_ROLE)
    image = "registry.example.org/elsewhere/dnsprobe:9"  # (a name with "coredns" in it
    # would be a CoreDNS pod to the sandbox)
    env = {**RUN, "COREDNSPROBE_PROBE_IMAGE": image, "COREDNSPROBE_INTERVAL": "1",
           "COREDNSPROBE_TIMEOUT": "0.5", "COREDNSPROBE_WINDOW": "10"}
    async with ServiceInside(place.out, "--kubeconfig", str(kubeconfig), env=env) as service:
        await service.started()
        doc = await service.until(lambda d: d["reach"]["strategy"] == "port-forward",
                                  within=60)
        lost = doc["reach"]["lost"]
        assert [entry["strategy"] for entry in lost] == ["probe-pod"]
        assert f"the probe image {image!r} cannot be pulled" in lost[0]["reason"]
        assert "ErrImagePull" in lost[0]["reason"] or "ImagePullBackOff" in lost[0]["reason"]
        logged = service.event("reach_lost")
        assert logged is not None and image in logged["reason"]
        assert agents(place) == []  # the pod that could not start was deleted
