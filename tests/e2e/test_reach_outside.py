"""The reach strategies from outside the cluster, end to end: a netns sandbox whose
pods are real unbound servers, and corednsprobe run as a subprocess in a network
namespace that reaches the API server but not the pod IPs or the ClusterIPs
(tests/helpers/outside.py), with real RBAC over ServiceAccount tokens from
``kubectl apply -k deploy/`` and the example Roles of deploy/extras/.

What is asserted is what an operator would see: which strategy auto picks and why
(``reach --json``), what ``check --cluster --json`` reports, which pods the service
evicted, what /status and the exit code say.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from corednsprobe.sandbox.cluster import Sandbox
from tests.e2e.conftest import FAST, netns_available
from tests.helpers.outside import (
    REPO,
    Outside,
    ServiceInside,
    corednsprobe_env,
    run_inside,
    sandbox_outside,
)
from tests.kube.conftest import Kubectl, communicate_within

pytestmark = pytest.mark.root

PORT_FORWARD_ROLE = REPO / "deploy" / "extras" / "reach-port-forward.yaml"
EVICT = {"COREDNSPROBE_REMEDIATION": "evict", "COREDNSPROBE_COOLDOWN": "1",
         "COREDNSPROBE_MAX_RESTARTS_PER_HOUR": "10"}
# a tunnel per probe costs a TLS connection: a 1 s interval, and a window that holds
# enough outcomes of each check for the default failure ratio
PORT_FORWARD_RUN = {**FAST, **EVICT, "COREDNSPROBE_INTERVAL": "1",
                    "COREDNSPROBE_TIMEOUT": "0.5", "COREDNSPROBE_WINDOW": "10"}


@dataclass
class Place:
    out: Outside
    sandbox: Sandbox
    admin: Path  # the admin kubeconfig
    tmp: Path

    async def account(self, *extras: Path) -> Path:
        """``kubectl apply -k deploy/`` (the in-cluster Roles) plus ``extras``; a
        kubeconfig acting as the corednsprobe ServiceAccount."""
        kubectl = Kubectl(self.admin, self.tmp / "kubectl-cache")
        code, _out, err = await kubectl.run("apply", "-k", str(REPO / "deploy"),
                                           "--validate=false")
        assert code == 0, err
        for extra in extras:
            code, _out, err = await kubectl.run("apply", "-f", str(extra), "--validate=false")
            assert code == 0, err
        return self.sandbox.write_service_account_kubeconfig(
            self.tmp / "account-kubeconfig", "kube-system", "corednsprobe")

    def pods(self) -> list[str]:
        return sorted(p["metadata"]["name"] for p in self.sandbox.dns_pods()
                      if not p["metadata"].get("deletionTimestamp"))


@pytest.fixture
async def place(tmp_path: Path) -> AsyncIterator[Place]:
    if reason := netns_available():
        pytest.skip(f"outside set-up: {reason}")
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    async with sandbox_outside(tmp_path) as (out, sandbox, admin):
        yield Place(out, sandbox, admin, tmp_path)


def strategies(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["strategy"]: s for s in doc["strategies"]}


# ------------------------------------------------------------------ auto's pick

# Each set-up: where corednsprobe stands, the extra Roles its account gets, and what
# auto must say. The exposed and probe-pod set-ups add rows of their own.
SETUPS = {
    "in-network": ("host", (), "direct"),
    "outside, only portforward": ("outside", (PORT_FORWARD_ROLE,), "port-forward"),
}


@pytest.mark.parametrize("setup", SETUPS)
async def test_reach_json_picks_by_priority(place: Place, setup: str) -> None:
    where, extras, expected = SETUPS[setup]
    kubeconfig = await place.account(*extras)
    args = ("reach", "--json", "--kubeconfig", str(kubeconfig))
    if where == "outside":
        code, out, err = await run_inside(place.out, *args)
    else:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "corednsprobe", *args, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=corednsprobe_env())
        code, out, err = await communicate_within(proc, 60)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["auto"] == expected, doc
    found = strategies(doc)
    assert list(found) == ["direct", "exposed", "probe-pod", "port-forward"]
    assert found[expected]["usable"] is True
    if expected != "direct":
        assert found["direct"]["usable"] is False
        assert "no UDP answer" in found["direct"]["reason"]
        assert found["probe-pod"]["usable"] is False
        assert "not allowed" in found["probe-pod"]["reason"]
    print(f"\n{setup}: auto={doc['auto']} decided in {doc['decision_seconds']} s")


async def test_outside_with_no_strategy_exits_3_naming_what_each_needs(place: Place) -> None:
    kubeconfig = await place.account()  # the in-cluster Roles only: no pods/portforward
    code, out, err = await run_inside(place.out, "reach", "--kubeconfig", str(kubeconfig))
    assert code == 3, err
    assert "auto: none of them can work here" in out
    code, out, err = await run_inside(place.out, "run", "--kubeconfig", str(kubeconfig),
                                      **FAST, COREDNSPROBE_LOG_FORMAT="json")
    assert code == 3, err
    message = err[err.index("corednsprobe: no way to reach"):]
    paragraphs = {p.split(":", 1)[0]: p for p in message.split("\n\n")[1:]}
    assert set(paragraphs) == {"direct", "exposed", "probe-pod", "port-forward"}
    assert "no UDP answer" in paragraphs["direct"]
    assert "NodePort or LoadBalancer" in paragraphs["exposed"]
    assert "create pods" in paragraphs["probe-pod"]
    assert "pods/portforward" in paragraphs["port-forward"]
    assert 'resources: ["pods/portforward"], verbs: ["get", "create"]' \
        in paragraphs["port-forward"]


# ------------------------------------------------------------------ check --cluster

async def test_check_cluster_json_through_port_forward(place: Place) -> None:
    kubeconfig = await place.account(PORT_FORWARD_ROLE)
    code, out, err = await run_inside(place.out, "check", "--cluster", "--json",
                                      "--kubeconfig", str(kubeconfig))
    assert code == 0, err
    doc = json.loads(out)
    assert doc["reach"]["strategy"] == "port-forward"
    assert doc["reach"]["blind_to"] == ["UDP", "the pod network", "the ClusterIP path"]
    pods = {p["status"]["podIP"] for p in place.sandbox.dns_pods()}
    assert {r["server"].rsplit(":", 1)[0] for r in doc["results"]} == pods  # no ClusterIP
    assert all(r["outcome"] == "ok" and r["rcode"] == "NOERROR" for r in doc["results"])
    assert {r["target"] for r in doc["results"]} == set(place.pods())
    assert {(r["kind"], r["reach"]) for r in doc["results"]} == {("pod", "port-forward")}
    assert doc["summary"] == {"probes": 3, "ok": 3, "failed": 0, "outcomes": {"ok": 3}}


# ------------------------------------------------------------------ run --reach port-forward

def health(doc: dict[str, Any], pod: str) -> str:
    """The pod's health on /status, "absent" before the targets are listed."""
    return next((t["health"] for t in doc["targets"] if t["name"] == pod), "absent")


async def test_port_forward_udp_drop_is_not_restarted_tcp_broken_is_evicted_once(
        place: Place) -> None:
    # (A pod whose port 53 refuses TCP as well turns not ready in the sandbox, as CoreDNS's
    # /ready would, and is never judged; SERVFAIL on every query is DNS broken over TCP
    # too while the pod stays ready.)
    kubeconfig = await place.account(PORT_FORWARD_ROLE)
    env = PORT_FORWARD_RUN
    async with ServiceInside(place.out, "--reach", "port-forward", "--kubeconfig",
                             str(kubeconfig), env=env) as service:
        await service.started()
        chosen = service.event("reach_chosen")
        assert chosen is not None and chosen["strategy"] == "port-forward"
        assert chosen["blind_to"] == ["UDP", "the pod network", "the ClusterIP path"]
        first = place.pods()
        await service.until(lambda d: all(health(d, p) == "healthy" for p in first), within=40)
        udp_dropped, dead = first[0], first[1]
        await place.sandbox.set_pod_fault(udp_dropped, "udp-drop")
        await place.sandbox.set_pod_fault(dead, "servfail")
        t0 = time.monotonic()
        await service.until(lambda d: dead not in [t["name"] for t in d["targets"]]
                            and len(d["targets"]) == 3
                            and all(t["health"] == "healthy" for t in d["targets"]), within=60)
        evicted_after = time.monotonic() - t0
        # ten more rounds: the pod that drops UDP still answers over TCP, and stays
        start_rounds = (await service.status())["rounds"]["completed"]
        doc = await service.until(lambda d: d["rounds"]["completed"] >= start_rounds + 10,
                                  within=30)
        assert udp_dropped in place.pods() and dead not in place.pods()
        assert health(doc, udp_dropped) == "healthy"
        actions = doc["remediation"]["budget"]["last_actions"]
        assert [(a["action"], a["pod"]) for a in actions] == [("evict", dead)]
        assert doc["reach"]["strategy"] == "port-forward"
        assert [t["kind"] for t in doc["targets"]] == ["pod"] * 3  # the ClusterIP is not probed
        assert {r["reach"] for t in doc["targets"] for r in t["last"]} == {"port-forward"}
        assert doc["reach"]["tunnels_opened"] > 0
        print(f"\nSERVFAIL pod evicted and replaced within {evicted_after:.1f} s; median "
              f"tunnel set-up {doc['reach']['tunnel_setup_seconds_median'] * 1000:.1f} ms")


@pytest.mark.parametrize("refusal", ["kubelet", "500"])
async def test_a_tunnel_that_cannot_open_restarts_nothing(place: Place, refusal: str) -> None:
    kubeconfig = await place.account(PORT_FORWARD_ROLE)
    env = PORT_FORWARD_RUN
    pods = place.pods()
    async with ServiceInside(place.out, "--reach", "port-forward", "--kubeconfig",
                             str(kubeconfig), env=env) as service:
        await service.started()
        await service.until(lambda d: all(health(d, p) == "healthy" for p in pods), within=40)
        place.sandbox.api.portforward_refusal = refusal
        doc = await service.until(
            lambda d: "the tunnel could not be opened" in d["diagnosis"]["reason"], within=20)
        start_rounds = doc["rounds"]["completed"]
        doc = await service.until(lambda d: d["rounds"]["completed"] >= start_rounds + 10
                                  and all(health(d, p) == "unknown" for p in pods), within=60)
        assert place.pods() == pods
        assert doc["remediation"]["budget"]["last_actions"] == []
        assert sorted(doc["diagnosis"]["evidence"]["tunnel_failed"].split(",")) == pods
        outcomes = {r["outcome"] for t in doc["targets"] for r in t["last"]}
        assert outcomes == {"tunnel"}
        said = "the kubelet reported" if refusal == "kubelet" else "500"
        assert said in doc["reach"]["last_tunnel_failure"]
        place.sandbox.api.portforward_refusal = ""
        await service.until(lambda d: all(health(d, p) == "healthy" for p in pods), within=40)
        assert place.pods() == pods


async def test_port_forward_without_the_role_exits_3_at_start(place: Place) -> None:
    kubeconfig = await place.account()  # no pods/portforward
    pods = place.pods()
    code, _out, err = await run_inside(place.out, "run", "--reach", "port-forward",
                                      "--kubeconfig", str(kubeconfig), **{**FAST, **EVICT})
    assert code == 3, err
    assert "COREDNSPROBE_REACH=port-forward cannot work here" in err
    assert "get pods/portforward" in err and "create pods/portforward" in err
    assert place.pods() == pods
