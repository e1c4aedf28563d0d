"""NodePort and LoadBalancer Services that answer DNS for real: the project's
own manifest created with the real kubectl, then the real dig at every node
address and nodePort, on both DNS backends (netns needs root)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from corednsprobe.sandbox.cluster import Sandbox, SandboxConfig
from corednsprobe.sandbox.controllers import Timings
from corednsprobe.sandbox.inprocess import InProcessBackend
from tests.integration.sandbox_dns_client import Reply, udp_query
from tests.integration.test_sandbox_dns import netns_unavailable
from tests.kube.conftest import communicate_within, eventually

ROOT = Path(__file__).resolve().parents[2]
NODEPORT_YAML = ROOT / "deploy" / "extras" / "dns-nodeport.yaml"
NAME = "kubernetes.default.svc.cluster.local"
BACKENDS = ["inprocess", pytest.param("netns", marks=pytest.mark.root)]
MakeSandbox = Callable[..., Awaitable[Sandbox]]

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None or shutil.which("dig") is None,
                                reason="needs kubectl and dig")


def backend_for(kind: str) -> Any:
    if kind == "inprocess":
        return InProcessBackend()
    reason = netns_unavailable()
    if reason:
        pytest.skip(reason)
    from corednsprobe.sandbox.netns import NetnsBackend

    return NetnsBackend()


@pytest.fixture(params=BACKENDS)
async def make_sandbox(request: pytest.FixtureRequest) -> AsyncIterator[MakeSandbox]:
    async with contextlib.AsyncExitStack() as stack:

        async def make(replicas: int = 2, nodes: int = 3) -> Sandbox:
            sandbox = await stack.enter_async_context(Sandbox(
                backend_for(request.param),
                SandboxConfig(replicas=replicas, nodes=nodes, termination_grace_seconds=1,
                              timings=Timings(readiness_period=0.1, resync_period=1.0))))
            await sandbox.wait_ready(within=30)
            return sandbox

        yield make


async def run(*argv: str, within: float = 30.0) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.PIPE)
    return await communicate_within(process, within)


async def dig(address: str, port: int, *options: str) -> str:
    code, out, err = await run("dig", f"@{address}", "-p", str(port), "+short", "+tries=1",
                               "+time=2", *options, NAME)
    assert code == 0, f"dig @{address} -p {port} {' '.join(options)}: {out}{err}"
    return out.strip()


async def answers_within(address: str, port: int, truth: str, within: float = 10.0) -> None:
    """Routes follow the controllers within a resync; wait until UDP answers."""
    async with asyncio.timeout(within):
        while True:
            reply = await udp_query(address, port, NAME, wait=0.3)
            if isinstance(reply, Reply) and reply.addresses == (truth,):
                return
            await asyncio.sleep(0.05)


async def silent_within(address: str, port: int, within: float = 10.0) -> None:
    """Wait until nothing answers at ``address``:``port`` any more."""
    for _ in range(int(within / 0.3)):
        if not isinstance(await udp_query(address, port, NAME, wait=0.3), Reply):
            return
    raise TimeoutError(f"{address}:{port} still answers")


async def test_the_nodeport_manifest_answers_at_every_node(make_sandbox: MakeSandbox,
                                                           tmp_path: Path) -> None:
    sandbox = await make_sandbox()
    kubeconfig = sandbox.write_kubeconfig(tmp_path / "kc")
    kubectl = ["kubectl", "--kubeconfig", str(kubeconfig), "--cache-dir", str(tmp_path / "c")]
    code, out, err = await run(*kubectl, "create", "-f", str(NODEPORT_YAML), "--validate=false")
    assert code == 0, err
    assert "service/kube-dns-probe created" in out
    truth = sandbox.service("default", "kubernetes")["spec"]["clusterIP"]
    addresses = sorted(sandbox.node_addresses().values())
    assert len(addresses) == 3
    for address in addresses:
        await answers_within(address, 30053, truth)
        assert await dig(address, 30053) == truth
        assert await dig(address, 30053, "+tcp") == truth
    code, _, err = await run(*kubectl, "delete", "-f", str(NODEPORT_YAML))
    assert code == 0, err
    await silent_within(addresses[0], 30053)


async def test_local_policy_and_a_load_balancer(make_sandbox: MakeSandbox,
                                                tmp_path: Path) -> None:
    sandbox = await make_sandbox(replicas=2, nodes=3)  # pods on the first two nodes
    from corednsprobe.sandbox.registry import SERVICES

    created = sandbox.registry.create(SERVICES, "kube-system", {
        "metadata": {"name": "dns-outside"},
        "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local",
                 "selector": {"k8s-app": "kube-dns"},
                 "ports": [{"name": "dns", "protocol": "UDP", "port": 53},
                           {"name": "dns-tcp", "protocol": "TCP", "port": 53}]}})
    node_port = created["spec"]["ports"][0]["nodePort"]
    truth = sandbox.service("default", "kubernetes")["spec"]["clusterIP"]
    with_pods = {p["spec"]["nodeName"] for p in sandbox.dns_pods()}
    addresses = sandbox.node_addresses()
    for node, address in addresses.items():
        if node in with_pods:
            await answers_within(address, node_port, truth)
    (empty,) = [address for node, address in addresses.items() if node not in with_pods]
    assert not isinstance(await udp_query(empty, node_port, NAME, wait=0.5), Reply)

    await eventually(lambda: bool(sandbox.service("kube-system", "dns-outside")["status"][
        "loadBalancer"].get("ingress")))
    ingress = sandbox.service("kube-system", "dns-outside")["status"]["loadBalancer"]["ingress"]
    await answers_within(ingress[0]["ip"], 53, truth)
    assert await dig(ingress[0]["ip"], 53, "+tcp") == truth
