"""The netns backend cleans up after itself, after a failure, and after a crash.

Every check lists what the kernel and the process table really hold (``ip
netns``, ``ip link``, ``ip route``, ``nft list tables``, /proc), not what the
backend believes.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from corednsprobe.sandbox.backend import Fault, ZoneData
from tests.integration.sandbox_dns_client import Reply, udp_query
from tests.integration.test_sandbox_dns import netns_unavailable

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(netns_unavailable() is not None, reason=str(netns_unavailable())),
]

if netns_unavailable() is None:
    from corednsprobe.sandbox import netns
    from corednsprobe.sandbox.netns import BackendUnavailable, NetnsBackend, cleanup_stale

ZONE = ZoneData("cluster.local", {"kubernetes.default.svc.cluster.local": ("10.96.0.1",)})
ROOT = Path(__file__).resolve().parents[2]


def _lines(*argv: str) -> list[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False).stdout.splitlines()


@dataclass(frozen=True)
class Footprint:
    """What an instance holds in the kernel and the process table."""

    namespaces: tuple[str, ...]
    links: tuple[str, ...]
    tables: tuple[str, ...]
    routes: tuple[str, ...]
    pids: tuple[int, ...]
    state: tuple[str, ...]


def footprint(instance: str, supernet: str, pids: tuple[int, ...] = ()) -> Footprint:
    return Footprint(
        namespaces=tuple(n.split()[0] for n in _lines("ip", "netns", "list")
                         if n.startswith(instance)),
        links=tuple(line for line in _lines("ip", "-o", "link") if instance in line),
        tables=tuple(t for t in _lines("nft", "list", "tables") if instance in t),
        routes=tuple(r for r in _lines("ip", "route", "show", "table", "all")
                     if r.split()[1:2] == [supernet] or supernet.rsplit(".", 2)[0] in r),
        pids=tuple(pid for pid in pids if netns.process_running(pid)),
        state=tuple(p.name for p in Path("/run/corednsprobe-sandbox").glob(f"{instance}*")),
    )


def namespace_pids(instance: str) -> tuple[int, ...]:
    pids: list[int] = []
    for ns in _lines("ip", "netns", "list"):
        if ns.startswith(instance):
            pids += [int(p) for p in _lines("ip", "netns", "pids", ns.split()[0])]
    return tuple(pids)


EMPTY = Footprint((), (), (), (), (), ())


@pytest.fixture
async def backend() -> AsyncIterator[NetnsBackend]:
    instance = NetnsBackend()
    try:
        await instance.start()
        yield instance
    finally:
        await instance.close()


async def test_close_removes_every_process_namespace_link_route_and_table() -> None:
    instance = NetnsBackend()
    await instance.start()
    try:
        ips = [instance.allocate_pod_ip() for _ in range(2)]
        await asyncio.gather(*(instance.add_pod(f"p{i}", ip, ZONE) for i, ip in enumerate(ips)))
        await instance.set_pod_fault("p0", Fault.parse("delay:50"))  # a relay process too
        await instance.set_service(instance.allocate_service_ip(), ips)
        name, supernet = instance.instance, str(instance.layout.supernet)
        pids = namespace_pids(name)
        alive = footprint(name, supernet, pids)
        assert len(alive.namespaces) == 3 and len(alive.pids) == 5  # 2x unbound+health, relay
        assert alive.links and alive.tables and alive.routes and alive.state
    finally:
        await instance.close()
    assert footprint(name, supernet, pids) == EMPTY
    await instance.close()  # idempotent


async def test_a_failed_start_leaves_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, str]] = []

    async def failing_sink(self: NetnsBackend) -> None:
        seen.append((self.instance, str(self.layout.supernet)))
        raise RuntimeError("sink failed")

    monkeypatch.setattr(NetnsBackend, "_create_sink", failing_sink)
    instance = NetnsBackend()
    with pytest.raises(RuntimeError, match="sink failed"):
        await instance.start()
    (name, supernet), = seen
    assert footprint(name, supernet) == EMPTY
    await instance.close()


async def test_a_failed_pod_start_leaves_nothing_of_that_pod(
    backend: NetnsBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError, match="outside"):
        await backend.add_pod("stranger", "192.0.2.200", ZONE)
    monkeypatch.setattr(netns.config, "unbound_config", lambda *args: "server:\n  bogus: yes\n")
    with pytest.raises(netns.CommandFailed, match="exited"):
        await backend.add_pod("broken", backend.allocate_pod_ip(), ZONE)
    left = footprint(backend.instance, str(backend.layout.supernet),
                     namespace_pids(backend.instance))
    assert left.namespaces == (f"{backend.instance}-sink",)
    assert left.pids == ()
    assert not await backend.pod_alive("broken")


async def test_the_instance_range_never_routes_out(backend: NetnsBackend) -> None:
    unused = str(backend.layout.supernet[6 * 256 + 1])  # neither pod nor service range
    route = await asyncio.to_thread(subprocess.run, ["ip", "route", "get", unused],
                                    capture_output=True, text=True, check=False)
    assert route.returncode != 0 or "blackhole" in route.stdout, route.stdout


async def test_start_refuses_clearly_without_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(netns.os, "geteuid", lambda: 1000)
    with pytest.raises(BackendUnavailable, match="root"):
        await NetnsBackend().start()


CRASHING_RUN = textwrap.dedent("""
    import asyncio, os
    from corednsprobe.sandbox.backend import Fault, ZoneData
    from corednsprobe.sandbox.netns import NetnsBackend

    async def main():
        backend = NetnsBackend()
        await backend.start()
        ip = backend.allocate_pod_ip()
        await backend.add_pod("p", ip, ZoneData("cluster.local", {}))
        await backend.set_pod_fault("p", Fault.parse("delay:10"))
        await backend.set_service(backend.allocate_service_ip(), [ip])
        print("CRASHED", backend.instance, backend.layout.supernet, flush=True)
        os._exit(1)  # a crash: nothing is closed

    asyncio.run(main())
""")


async def test_cleanup_stale_removes_a_crashed_run_and_spares_a_live_one(
    backend: NetnsBackend,
) -> None:
    live_ip = backend.allocate_pod_ip()
    await backend.add_pod("live", live_ip, ZONE)
    crashed = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", CRASHING_RUN], capture_output=True, text=True,
        check=False, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60,
    )
    marker = [line for line in crashed.stdout.splitlines() if line.startswith("CRASHED ")]
    assert marker, crashed.stdout + crashed.stderr
    _, name, supernet = marker[0].split()
    pids = namespace_pids(name)
    assert len(pids) == 3, crashed.stderr  # unbound, health, relay outlived their parent
    assert footprint(name, supernet, pids) != EMPTY

    cleaned = await asyncio.to_thread(cleanup_stale, "cdps")

    assert name in cleaned and backend.instance not in cleaned
    assert footprint(name, supernet, pids) == EMPTY
    reply = await udp_query(live_ip, backend.port, "kubernetes.default.svc.cluster.local")
    assert isinstance(reply, Reply) and reply.addresses == ("10.96.0.1",)
    assert await backend.pod_alive("live")
