"""deploy/'s RBAC against what the service really asks: the service runs against the
sandbox with a token that has exactly the rendered Roles of one variant, restarts
(or, in dry-run, decides to restart) a pod that answers SERVFAIL, and the sandbox's
record of its requests shows no request refused, no mode downgraded, and every
rule used (tests/unit/test_manifests.py checks the same Roles against the
permission table of the self-check)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from corednsprobe.config import Settings
from corednsprobe.kube.lease import LeaseTiming
from corednsprobe.sandbox.auth import Attributes, Rule
from corednsprobe.sandbox.cluster import Sandbox, SandboxConfig
from corednsprobe.sandbox.controllers import Timings
from corednsprobe.sandbox.inprocess import InProcessBackend
from tests.kube.conftest import api_client_for, serving

ROOT = Path(__file__).resolve().parents[2]
PROBER = "system:serviceaccount:kube-system:corednsprobe"
# Every authenticated user may ask about itself (ClusterRole system:basic-user).
BASIC_USER = Rule.of(["create"], ["selfsubjectaccessreviews"], ["authorization.k8s.io"])
Grant = tuple[str, str, str, str, str]  # namespace, group, resource[/sub], verb, name or ""
# v1 Endpoints are read only where EndpointSlices are not served (not in this sandbox).
LEGACY = {("kube-system", "", "endpoints", v, "") for v in ("get", "list", "watch")}

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl absent")


def _roles(variant: str) -> list[dict[str, Any]]:
    text = subprocess.run(["kubectl", "kustomize", str(ROOT / variant)], capture_output=True,
                          text=True, timeout=120, check=True).stdout
    return [d for d in yaml.safe_load_all(text) if d and d["kind"] == "Role"]


def _sandbox_rules(roles: list[dict[str, Any]]) -> list[Rule]:
    return [Rule.of(r["verbs"], r["resources"], r["apiGroups"], r.get("resourceNames", ()),
                    [role["metadata"]["namespace"]])
            for role in roles for r in role["rules"]]


def _grants(roles: list[dict[str, Any]]) -> set[Grant]:
    return {(role["metadata"]["namespace"], g, res, v, n)
            for role in roles for r in role["rules"] for g in r["apiGroups"]
            for res in r["resources"] for v in r["verbs"] for n in r.get("resourceNames", [""])}


def _used(grant: Grant, attrs: Attributes) -> bool:
    ns, group, res, verb, name = grant
    return ((attrs.namespace, attrs.group, attrs.resource_path, attrs.verb) ==
            (ns, group, res, verb) and name in ("", attrs.name))


def _acted(status: dict[str, Any], mode: str) -> bool:
    if mode == "dry-run":
        return bool(status.get("decision", {}).get("action") == "dry-run")
    return any(a["result"] == "done" for a in status.get("budget", {}).get("last_actions", []))


@pytest.mark.parametrize(("variant", "mode"), [("deploy", "evict"),
                                               ("deploy/overlays/delete", "delete"),
                                               ("deploy/overlays/dry-run", "dry-run")])
async def test_the_service_needs_every_rule_and_no_more(
        tmp_path: Path, variant: str, mode: str) -> None:
    roles = _roles(variant)
    config = SandboxConfig(replicas=2, termination_grace_seconds=1,
                           timings=Timings(readiness_period=0.05, resync_period=1.0))
    settings = Settings(interval=0.2, timeout=0.2, window=3.0, min_samples=4, min_pod_age=0.0,
                        listen=("127.0.0.1", 0), remediation=mode, cooldown=300.0,
                        prober_namespace="kube-system")
    async with Sandbox(InProcessBackend(), config) as sandbox:
        sandbox.add_token("prober", PROBER, [*_sandbox_rules(roles), BASIC_USER])
        async with await api_client_for(sandbox, tmp_path / "kc", token="prober") as api, \
                aiohttp.ClientSession() as http:
            await sandbox.wait_ready(within=10)
            victim = sorted(p["metadata"]["name"] for p in sandbox.dns_pods())[0]
            await sandbox.set_pod_fault(victim, "servfail")
            async with serving(settings, api, lease_timing=LeaseTiming(2.0, 1.0, 0.25)) as port:

                async def remediation() -> dict[str, Any]:
                    async with http.get(f"http://127.0.0.1:{port}/status") as resp:
                        doc: dict[str, Any] = (await resp.json())["remediation"]
                        return doc

                for _ in range(200):
                    if _acted(await remediation(), mode):
                        break
                    await asyncio.sleep(0.1)
                doc = await remediation()
                assert _acted(doc, mode), doc
                assert (doc["mode"], doc["downgraded"]) == (mode, None), doc
                await asyncio.sleep(1.0)  # a few more rounds: Lease renewals, Events
        asked = [r for r in sandbox.authorizer.requests
                 if r.user == PROBER and r.attrs.resource != "selfsubjectaccessreviews"]
    refused = [r.attrs for r in asked if not r.allowed]
    assert refused == []
    grants = _grants(roles)
    unused = {g for g in grants if not any(_used(g, r.attrs) for r in asked)}
    assert sorted(unused - LEGACY) == [], "rules the service never used"
    assert grants >= LEGACY  # kept for clusters without discovery.k8s.io/v1
