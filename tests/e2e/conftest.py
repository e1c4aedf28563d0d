"""The whole service against a sandbox cluster whose pods are real DNS servers.

The netns backend gives every CoreDNS pod its own network namespace with a
real unbound, and the ClusterIP is nft DNAT as kube-proxy does it; the
service runs in the test's event loop, talks to the sandbox only through the
real kubernetes_asyncio client and UDP/TCP DNS, and is stopped, with the
sandbox and every namespace it made, at teardown.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from corednsprobe.config import Settings
from corednsprobe.kube.access import Access, connect
from corednsprobe.kube.informer import Timing
from corednsprobe.kube.lease import LeaseTiming
from corednsprobe.sandbox.backend import DnsBackend
from corednsprobe.sandbox.cluster import Sandbox, SandboxConfig
from corednsprobe.sandbox.controllers import Timings
from corednsprobe.service.app import serve
from corednsprobe.service.prober import ProberService

ROOT_TOOLS = ("ip", "nft", "unbound", "unbound-control")

# Fast but otherwise default: failure ratio, minimum samples and recovery
# successes keep their production defaults.
FAST = {
    "COREDNSPROBE_INTERVAL": "0.5",
    "COREDNSPROBE_TIMEOUT": "0.2",
    "COREDNSPROBE_WINDOW": "5",
    "COREDNSPROBE_MIN_POD_AGE": "0",
    "COREDNSPROBE_LISTEN": "127.0.0.1:0",
    "COREDNSPROBE_REMEDIATION": "off",  # the remediation tests turn it on
    "COREDNSPROBE_PROBER_NAMESPACE": "kube-system",
}


def netns_available() -> str:
    """Why the netns backend cannot run here, or "" when it can."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, nft)"
    missing = [t for t in ROOT_TOOLS if shutil.which(t) is None]
    return f"missing {', '.join(missing)}" if missing else ""


@pytest.fixture(scope="session", autouse=True)
def _remove_leftovers_of_crashed_runs() -> None:
    if not netns_available():
        from corednsprobe.sandbox.netns import cleanup_stale

        cleanup_stale("cdps")


@dataclass
class Running:
    """A sandbox cluster with the service probing it."""

    sandbox: Sandbox
    service: ProberService
    access: Access
    port: int
    rounds: list[float] = field(default_factory=list)  # loop time each round ended
    round_hooks: list[Callable[[ProberService], None]] = field(default_factory=list)
    round_ended: asyncio.Event = field(default_factory=asyncio.Event)
    remediation: dict[str, Any] = field(default_factory=dict)  # as of the last round

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def pod_names(self) -> list[str]:
        return sorted(p["metadata"]["name"] for p in self.sandbox.dns_pods()
                      if not p["metadata"].get("deletionTimestamp"))

    async def until(self, predicate: Callable[[ProberService], bool], within: float) -> float:
        """Wait, checking after every round, until ``predicate`` holds; seconds taken."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        async with asyncio.timeout(within):
            while not predicate(self.service):
                await self.round_ended.wait()
        return loop.time() - start


Start = Callable[..., Awaitable[Running]]


def make_backend(kind: str) -> DnsBackend:
    if kind == "netns":
        reason = netns_available()
        if reason:
            pytest.skip(f"netns backend: {reason}")
        from corednsprobe.sandbox.netns import NetnsBackend

        return NetnsBackend(domain="cluster.local")
    from corednsprobe.sandbox.inprocess import InProcessBackend

    return InProcessBackend(domain="cluster.local")


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Start]:
    """Start a sandbox (``replicas`` pods) and the service against it."""
    async with contextlib.AsyncExitStack() as stack:

        async def run(replicas: int = 3, backend: str = "netns", nsid: bool = False,
                      before: Callable[[Sandbox], Awaitable[None]] | None = None,
                      **env: str) -> Running:
            """``nsid``: the DNS pods answer EDNS NSID with their names; ``before``
            prepares the cluster (e.g. a NodePort Service) before the service starts."""
            sandbox = await stack.enter_async_context(Sandbox(
                make_backend(backend),
                SandboxConfig(replicas=replicas, termination_grace_seconds=1, nsid=nsid,
                              timings=Timings(readiness_period=0.1, resync_period=1.0))))
            await sandbox.wait_ready(within=30)
            if before is not None:
                await before(sandbox)
            kubeconfig = sandbox.write_kubeconfig(tmp_path / "kubeconfig")
            access = await connect(str(kubeconfig))
            stack.push_async_callback(access.close)
            settings = Settings.from_env({**FAST, **env})
            stop = asyncio.Event()
            listening: asyncio.Future[tuple[ProberService, int]] = (
                asyncio.get_running_loop().create_future())
            hooks: list[Callable[[ProberService], None]] = []
            rounds: list[float] = []
            ended = asyncio.Event()
            box: list[Running] = []

            def on_round(service: ProberService, remediation: dict[str, Any]) -> None:
                if box:
                    box[0].remediation = remediation
                rounds.append(asyncio.get_running_loop().time())
                for hook in hooks:
                    hook(service)
                ended.set()  # wake every waiter, then re-arm for the next round
                ended.clear()

            task = asyncio.create_task(serve(
                settings, access.api, stop=stop, on_round=on_round,
                on_listening=lambda s, p: listening.set_result((s, p)),
                timing=Timing(inactivity=10.0, request_timeout=5.0),
                lease_timing=LeaseTiming(2.0, 1.0, 0.25)))

            async def halt() -> None:
                stop.set()
                await asyncio.wait_for(task, 10)

            stack.push_async_callback(halt)
            service, port = await asyncio.wait_for(listening, 30)
            running = Running(sandbox, service, access, port, rounds, hooks, ended)
            box.append(running)
            await running.until(lambda s: s.state.targets.generation > 0 and s.state.rounds > 0,
                                within=15)
            return running

        yield run


def health_of(service: ProberService, name: str) -> Any:
    for h in service.state.healths.values():
        if h.target.name == name:
            return h
    raise KeyError(name)


def pods_judged(service: ProberService) -> int:
    """How many pods the last diagnosis judged (0 before the first)."""
    evidence = service.state.diagnosis.evidence
    return evidence.pods_judged if evidence is not None else 0
