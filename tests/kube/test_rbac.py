"""RBAC for real: ``kubectl apply -k deploy/`` creates the project's own
ServiceAccount, Roles and RoleBindings in the sandbox, and a token of that
ServiceAccount is authorized by exactly those rules: ``corednsprobe run``
works with it, and loses what a removed rule granted (the documented
downgrade to dry-run, or exit 3 naming the rule)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from corednsprobe.sandbox.cluster import Sandbox, SandboxConfig
from corednsprobe.sandbox.controllers import Timings
from corednsprobe.sandbox.inprocess import InProcessBackend
from corednsprobe.sandbox.rbac import ROLES
from tests.kube.conftest import REPO, Command, Http, Kubectl

Obj = dict[str, Any]
ACCOUNT = "system:serviceaccount:kube-system:corednsprobe"
PODS = "/api/v1/namespaces/kube-system/pods"


@pytest.fixture
async def applied(tmp_path: Path) -> AsyncIterator[tuple[Sandbox, Kubectl]]:
    """An in-process sandbox (pods on loopback) with ``kubectl apply -k deploy/`` done."""
    config = SandboxConfig(replicas=2, termination_grace_seconds=1,
                           timings=Timings(readiness_period=0.05, resync_period=1.0))
    async with Sandbox(InProcessBackend(), config) as sandbox:
        await sandbox.wait_ready(within=10)
        kubectl = Kubectl(sandbox.write_kubeconfig(tmp_path / "admin"), tmp_path / "cache")
        code, out, err = await kubectl.run("apply", "-k", str(REPO / "deploy"),
                                           "--validate=false")
        assert code == 0 and "serviceaccount/corednsprobe created" in out, err
        yield sandbox, kubectl


async def test_apply_k_creates_every_object(applied: tuple[Sandbox, Kubectl]) -> None:
    _, kubectl = applied
    made = {(i["kind"], i["metadata"]["namespace"], i["metadata"]["name"])
            for i in (await kubectl.json("get", "sa,role,rolebinding,deploy,svc", "-A"))["items"]
            if i["metadata"]["name"].startswith("corednsprobe")}
    assert made == {
        ("ServiceAccount", "kube-system", "corednsprobe"),
        ("Role", "kube-system", "corednsprobe"), ("Role", "default", "corednsprobe-truth"),
        ("RoleBinding", "kube-system", "corednsprobe"),
        ("RoleBinding", "default", "corednsprobe-truth"),
        ("Role", "kube-system", "corednsprobe-evict"),
        ("RoleBinding", "kube-system", "corednsprobe-evict"),
        ("Deployment", "kube-system", "corednsprobe"), ("Service", "kube-system", "corednsprobe")}
    role = (await kubectl.json("get", "role", "corednsprobe-evict", "-n", "kube-system"))
    assert {"apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"]} \
        in role["rules"]


async def test_the_account_may_do_exactly_what_its_roles_say(
        applied: tuple[Sandbox, Kubectl], tmp_path: Path) -> None:
    sandbox, _ = applied
    kubeconfig = sandbox.write_service_account_kubeconfig(tmp_path / "sa", "kube-system",
                                                          "corednsprobe")
    account = Kubectl(kubeconfig, tmp_path / "sa-cache")

    async def can(*args: str) -> bool:
        code, out, err = await account.run("auth", "can-i", *args)
        assert (code, out.strip()) in ((0, "yes"), (1, "no")), err
        return out.strip() == "yes"

    assert await can("watch", "endpointslices.discovery.k8s.io", "-n", "kube-system")
    assert await can("create", "pods", "--subresource=eviction", "-n", "kube-system")
    # the Lease: create any, get and update only the one named (resourceNames)
    assert await can("create", "leases.coordination.k8s.io", "-n", "kube-system")
    assert await can("update", "leases.coordination.k8s.io/corednsprobe", "-n", "kube-system")
    assert not await can("update", "leases.coordination.k8s.io/other", "-n", "kube-system")
    assert await can("list", "services", "-n", "default")  # the truth Role
    assert not await can("list", "pods", "-n", "default")  # a Role holds in its namespace
    assert not await can("get", "pods", "--subresource=log", "-n", "kube-system")
    assert not await can("create", "pods", "-n", "kube-system")
    assert not await can("list", "nodes")
    code, _, err = await account.run("get", "nodes")
    assert code == 1
    assert ('nodes is forbidden: User "system:serviceaccount:kube-system:corednsprobe" cannot '
            'list resource "nodes" in API group "" at the cluster scope') in err
    code, out, err = await account.run("get", "pods", "-n", "kube-system", "-o", "name")
    assert code == 0 and len(out.split()) >= 2, err


async def test_kubectl_create_token_is_a_working_token(applied: tuple[Sandbox, Kubectl],
                                                       tmp_path: Path) -> None:
    sandbox, kubectl = applied
    code, token, err = await kubectl.run("create", "token", "corednsprobe", "-n", "kube-system")
    assert code == 0, err
    async with aiohttp.ClientSession() as session:
        http = Http(sandbox, session)
        code, _, body = await http.call("GET", PODS, token=token.strip())
        assert code == 200 and body["kind"] == "PodList"
        code, _, body = await http.call("GET", "/api/v1/nodes", token=token.strip())
        assert code == 403
        code, _, review = await http.call(
            "POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            {"spec": {"resourceAttributes": {"verb": "create", "resource": "pods",
                                             "subresource": "eviction",
                                             "namespace": "kube-system"}}},
            token=token.strip())
        assert code == 201 and review["status"]["allowed"] is True
        code, _, review = await http.call(  # delete pods: only the delete variant grants it
            "POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            {"spec": {"resourceAttributes": {"verb": "delete", "resource": "pods",
                                             "namespace": "kube-system"}}},
            token=token.strip())
        assert code == 201 and review["status"]["allowed"] is False
    code, _, _ = await kubectl.run("delete", "sa", "corednsprobe", "-n", "kube-system")
    assert code == 0
    async with aiohttp.ClientSession() as session:
        code, _, _ = await Http(sandbox, session).call("GET", PODS, token=token.strip())
        assert code == 401  # the account is gone, and its tokens with it


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def run_and_read_status(corednsprobe: Command, kubeconfig: Path,
                              within: float = 30.0) -> tuple[Obj | None, str]:
    """Start ``corednsprobe run``; its /status once remediation has decided, or
    (None, stderr) when it exited first."""
    port = free_port()
    env = {**corednsprobe.env, "COREDNSPROBE_LISTEN": f"127.0.0.1:{port}",
           "COREDNSPROBE_INTERVAL": "0.5", "COREDNSPROBE_LEASE_NAME": "corednsprobe"}
    process = await asyncio.create_subprocess_exec(
        *corednsprobe.argv("run", "--kubeconfig", str(kubeconfig)), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        async with asyncio.timeout(within), aiohttp.ClientSession() as http:
            while process.returncode is None:
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"http://127.0.0.1:{port}/status") as resp:
                        doc: Obj = await resp.json()
                        if (doc.get("remediation") or {}).get("leader"):
                            return doc, ""
                await asyncio.sleep(0.2)
        _, err = await process.communicate()
        return None, f"exit {process.returncode}: {err.decode()}"
    finally:
        if process.returncode is None:
            process.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), 10)
            if process.returncode is None:
                process.kill()
                await process.wait()


def drop_rule(sandbox: Sandbox, namespace: str, role: str, resource: str, verb: str) -> None:
    """Take one verb on one resource out of a stored Role (as kubectl edit would)."""
    current = sandbox.store.must_get(ROLES, namespace, role)
    rules = []
    for rule in json.loads(json.dumps(current["rules"])):
        if resource in rule.get("resources", ()) and verb in rule.get("verbs", ()):
            others = [r for r in rule["resources"] if r != resource]
            if others:
                rules.append({**rule, "resources": others})
            if len(rule["verbs"]) > 1:
                rules.append({**rule, "resources": [resource],
                              "verbs": [v for v in rule["verbs"] if v != verb]})
            continue
        rules.append(rule)
    sandbox.registry.update(ROLES, namespace, role, {**current, "rules": rules})


async def test_run_works_with_the_account_and_exactly_its_rules(
        applied: tuple[Sandbox, Kubectl], tmp_path: Path, corednsprobe: Command) -> None:
    sandbox, _ = applied
    kubeconfig = sandbox.write_service_account_kubeconfig(tmp_path / "sa", "kube-system",
                                                          "corednsprobe")
    status, err = await run_and_read_status(corednsprobe, kubeconfig)
    assert status is not None, err
    remediation = status["remediation"]
    assert (remediation["mode"], remediation["downgraded"]) == ("evict", None)

    drop_rule(sandbox, "kube-system", "corednsprobe-evict", "pods/eviction", "create")
    status, err = await run_and_read_status(corednsprobe, kubeconfig)
    assert status is not None, err
    remediation = status["remediation"]
    assert remediation["configured_mode"] == "evict" and remediation["mode"] == "dry-run"
    assert "pods/eviction" in remediation["downgraded"]


async def test_run_without_the_watch_rule_exits_3_naming_it(
        applied: tuple[Sandbox, Kubectl], tmp_path: Path, corednsprobe: Command) -> None:
    sandbox, _ = applied
    drop_rule(sandbox, "kube-system", "corednsprobe", "endpointslices", "watch")
    kubeconfig = sandbox.write_service_account_kubeconfig(tmp_path / "sa", "kube-system",
                                                          "corednsprobe")
    status, err = await run_and_read_status(corednsprobe, kubeconfig)
    assert status is None
    assert err.startswith("exit 3"), err
    assert ("watch endpointslices (discovery.k8s.io) in namespace kube-system" in err
            and 'verbs: ["watch"]' in err), err
