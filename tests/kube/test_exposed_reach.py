"""The exposed strategy against the sandbox API (real client; the DNS backend answers
nothing here, tests/e2e/test_exposed.py has real pods): a Service that disappears is
``reach_lost``, and ``assess`` names what it found or missed."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

import pytest
import structlog
from kubernetes_asyncio import client

from corednsprobe.config import Settings
from corednsprobe.metrics import Metrics
from corednsprobe.model import TargetSet
from corednsprobe.reach.base import NoReach, ReachLost
from corednsprobe.reach.choose import Chosen
from corednsprobe.reach.exposed import assess, build, open_exposed
from corednsprobe.sandbox.auth import Rule
from corednsprobe.sandbox.cluster import Sandbox
from corednsprobe.sandbox.registry import SERVICES
from corednsprobe.service.app import ReachInUse
from tests.kube.conftest import api_client_for, eventually

SETTINGS = Settings.from_env({"COREDNSPROBE_REACH": "exposed", "COREDNSPROBE_TIMEOUT": "0.2"})


def expose(sandbox: Sandbox, name: str = "kube-dns-probe", **spec: Any) -> None:
    sandbox.registry.create(SERVICES, "kube-system", {"metadata": {"name": name}, "spec": {
        "type": "NodePort", "selector": {"k8s-app": "kube-dns"},
        "ports": [{"name": "dns", "protocol": "UDP", "port": 53, "targetPort": 53}], **spec}})


async def test_a_deleted_service_is_reach_lost_and_a_fixed_strategy_ends(
        sandbox: Sandbox, api: client.ApiClient) -> None:
    expose(sandbox)
    reach = await open_exposed(api, SETTINGS, poll=0.1)
    assert {d for d in reach.nodes} == set(sandbox.node_addresses())
    in_use = ReachInUse(Chosen(reach, "test"), Metrics(1.0))
    with structlog.testing.capture_logs() as logs:
        keeping = asyncio.create_task(in_use.keep(SETTINGS, api, False, cast(Any, None)))
        await asyncio.sleep(0.3)
        assert not keeping.done()  # the Service is there: it keeps following it
        await client.CoreV1Api(api).delete_namespaced_service("kube-dns-probe", "kube-system")
        with pytest.raises(NoReach, match="reach exposed stopped working: the Service "
                                          "kube-system/kube-dns-probe that exposed DNS is gone"):
            await asyncio.wait_for(keeping, 5)
    lost = [e for e in logs if e["event"] == "reach_lost"]
    assert lost == [{"event": "reach_lost", "log_level": "warning", "strategy": "exposed",
                     "reason": "the Service kube-system/kube-dns-probe that exposed DNS is gone"}]
    assert in_use.status()["lost"] == [{"strategy": "exposed", "reason": lost[0]["reason"]}]


async def test_a_changed_node_port_is_planned_afresh(sandbox: Sandbox,
                                                     api: client.ApiClient) -> None:
    expose(sandbox)
    reach = await open_exposed(api, SETTINGS, poll=0.1)
    first = reach.exposure.node_port
    running = asyncio.create_task(reach.run())
    try:
        svc = await client.CoreV1Api(api).read_namespaced_service("kube-dns-probe",
                                                                  "kube-system")
        svc.spec.ports[0].node_port = 31999 if first != 31999 else 31998
        await client.CoreV1Api(api).replace_namespaced_service("kube-dns-probe",
                                                               "kube-system", svc)
        await eventually(lambda: reach.plan_version > 0, within=5)
    finally:
        running.cancel()
    assert reach.exposure.node_port == svc.spec.ports[0].node_port


async def test_assess_says_what_is_missing(sandbox: Sandbox, api: client.ApiClient) -> None:
    found = await assess(api, SETTINGS, budget=0.3)
    assert not found.usable
    assert found.reason == ("no NodePort or LoadBalancer Service selects the DNS pods and "
                            "serves UDP 53")
    assert "ClusterRole allowing list on nodes" in found.needs
    expose(sandbox)
    found = await assess(api, SETTINGS, budget=0.3)
    assert not found.usable  # the null backend answers no DNS
    assert found.reason.startswith("Service kube-system/kube-dns-probe (NodePort, nodePort ")
    assert "answered over UDP within 0.3s" in found.reason
    with pytest.raises(NoReach, match="exposed: COREDNSPROBE_EXPOSED_SERVICE names 'nope'"):
        await open_exposed(api, Settings.from_env({"COREDNSPROBE_EXPOSED_SERVICE": "nope"}))


async def test_without_the_right_to_list_nodes_assess_names_the_cluster_role(
        sandbox: Sandbox, tmp_path: Path) -> None:
    expose(sandbox)
    sandbox.add_token("outside", "outside-user", [
        Rule.of(["get", "list", "watch"], ["services", "endpointslices", "pods"],
                ["", "discovery.k8s.io"]),
        Rule.of(["create"], ["selfsubjectaccessreviews"], ["authorization.k8s.io"])])
    api = await api_client_for(sandbox, tmp_path / "kc", token="outside")
    async with api:
        found = await assess(api, SETTINGS, budget=0.3)
    assert not found.usable
    assert found.reason.endswith("found, but nodes may not be listed (their InternalIPs are "
                                 "its addresses): a ClusterRole with list on nodes")


async def test_built_without_a_service_it_finds_one_as_it_runs_or_says_why_not(
        sandbox: Sandbox, api: client.ApiClient) -> None:
    reach = build(api, SETTINGS)
    assert reach.plan(TargetSet()).services == ()
    with pytest.raises(ReachLost, match="no NodePort or LoadBalancer Service selects"):
        await asyncio.wait_for(reach.run(), 5)
    expose(sandbox, externalTrafficPolicy="Local")
    reach = build(api, SETTINGS)
    running = asyncio.create_task(reach.run())
    try:
        await eventually(lambda: reach.plan_version == 1, within=5)
    finally:
        running.cancel()
    assert reach.exposure is not None and reach.exposure.local
    assert reach.reason.startswith("Service kube-system/kube-dns-probe (NodePort")
    assert set(reach.nodes) == set(sandbox.node_addresses())
