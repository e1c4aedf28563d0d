"""EDNS NSID (RFC 5001): with the sandbox's nsid switch on, each DNS pod names
itself to a query that asks (dig +nsid), as CoreDNS's nsid plugin or unbound's
``nsid:`` option do; off by default, as in a stock cluster."""

from __future__ import annotations

import contextlib
import re
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from corednsprobe.sandbox.cluster import Sandbox, SandboxConfig
from corednsprobe.sandbox.controllers import Timings
from tests.integration.test_sandbox_services import BACKENDS, backend_for, run

NAME = "kubernetes.default.svc.cluster.local"
MakeSandbox = Callable[..., Awaitable[Sandbox]]

pytestmark = pytest.mark.skipif(shutil.which("dig") is None, reason="needs dig")


@pytest.fixture(params=BACKENDS)
async def make_sandbox(request: pytest.FixtureRequest) -> AsyncIterator[MakeSandbox]:
    async with contextlib.AsyncExitStack() as stack:

        async def make(nsid: bool) -> Sandbox:
            sandbox = await stack.enter_async_context(Sandbox(
                backend_for(request.param),
                SandboxConfig(replicas=2, nsid=nsid, termination_grace_seconds=1,
                              timings=Timings(readiness_period=0.1, resync_period=1.0))))
            await sandbox.wait_ready(within=30)
            return sandbox

        yield make


async def nsid_of(address: str, port: int, *options: str) -> str | None:
    code, out, err = await run("dig", f"@{address}", "-p", str(port), "+nsid", "+tries=1",
                               "+time=2", *options, NAME)
    assert code == 0, out + err
    assert "status: NOERROR" in out, out
    found = re.search(r'; NSID: [0-9a-f ]+ \("(.*)"\)', out)
    return found.group(1) if found else None


async def test_each_pod_answers_nsid_with_its_name(make_sandbox: MakeSandbox) -> None:
    sandbox = await make_sandbox(nsid=True)
    port = sandbox.backend.port
    for pod in sandbox.dns_pods():
        name, ip = pod["metadata"]["name"], pod["status"]["podIP"]
        assert await nsid_of(ip, port) == name
        assert await nsid_of(ip, port, "+tcp") == name
    cluster_ip = sandbox.service("kube-system", "kube-dns")["spec"]["clusterIP"]
    seen = {await nsid_of(cluster_ip, port) for _ in range(12)}
    assert seen <= {p["metadata"]["name"] for p in sandbox.dns_pods()} and seen


async def test_nsid_is_off_by_default(make_sandbox: MakeSandbox) -> None:
    sandbox = await make_sandbox(nsid=False)
    pod = sandbox.dns_pods()[0]
    assert await nsid_of(pod["status"]["podIP"], sandbox.backend.port) is None
