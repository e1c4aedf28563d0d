"""The sandbox's fault hooks, through the control HTTP API and the Python API:
DNS faults reach the backend (and a slot's fault follows its replacement
pod), stalled and reset watches, and the ``corednsprobe sandbox`` command."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from corednsprobe.sandbox.backend import Fault, FaultKind
from corednsprobe.sandbox.backends import BACKENDS, BackendUnavailable, make_backend
from corednsprobe.sandbox.cluster import Sandbox
from corednsprobe.sandbox.nullbackend import NullBackend
from corednsprobe.sandbox.registry import PODS, SERVICES
from corednsprobe.sandbox.resources import require
from tests.kube.conftest import Http, eventually

NS = "kube-system"
SLICES = "/apis/discovery.k8s.io/v1/namespaces/kube-system/endpointslices"
ENDPOINTSLICES = require("discovery.k8s.io", "endpointslices")
REPO = str(Path(__file__).resolve().parents[2])


async def control(http: Http, path: str, body: Any = None) -> Any:
    async with http.session.post(f"{http.sandbox.url}/sandbox/v1{path}", json=body or {},
                                 ssl=http.ssl) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


def backend(sandbox: Sandbox) -> NullBackend:
    assert isinstance(sandbox.backend, NullBackend)
    return sandbox.backend


async def test_slot_fault_follows_the_slot_across_replacements(sandbox: Sandbox,
                                                               http: Http) -> None:
    state = await control(http, "/slots/0/fault", {"fault": "delay:300"})
    by_slot = {p["slot"]: p for p in state["pods"]}
    old = by_slot[0]["name"]
    assert backend(sandbox).pod_faults[old] == Fault(FaultKind.DELAY, 300)
    assert backend(sandbox).pod_faults[by_slot[1]["name"]] == Fault()
    sandbox.registry.delete(PODS, NS, old, {}, 0)
    await sandbox.wait_ready(within=10)
    replacement = sandbox.pod_for_slot(0)
    assert replacement is not None and replacement["metadata"]["name"] != old
    assert backend(sandbox).pod_faults[replacement["metadata"]["name"]] == \
        Fault(FaultKind.DELAY, 300)
    await control(http, "/pods/fault", {"fault": "servfail"})
    assert set(backend(sandbox).pod_faults.values()) == {Fault(FaultKind.SERVFAIL)}
    await control(http, "/service/fault", {"broken": True})
    assert backend(sandbox).service_broken is True
    async with http.session.post(f"{sandbox.url}/sandbox/v1/pods/fault",
                                 json={"fault": "bogus"}, ssl=http.ssl) as resp:
        assert resp.status == 400


async def test_recreated_service_gets_a_new_cluster_ip_in_the_zone(sandbox: Sandbox,
                                                                   http: Http) -> None:
    old = sandbox.service(NS, "kube-dns")
    old_ip = old["spec"]["clusterIP"]
    code, _, _ = await http.call("DELETE", "/api/v1/namespaces/kube-system/services/kube-dns")
    assert code == 200
    body = {"metadata": {"name": "kube-dns", "labels": old["metadata"]["labels"]},
            "spec": {"selector": old["spec"]["selector"], "ports": old["spec"]["ports"]}}
    code, _, created = await http.call("POST", "/api/v1/namespaces/kube-system/services", body)
    assert code == 201
    new_ip = created["spec"]["clusterIP"]
    assert new_ip != old_ip
    await sandbox.wait_ready(within=10)
    await eventually(lambda: backend(sandbox).zone.records.get(
        "kube-dns.kube-system.svc.cluster.local") == (new_ip,)
        and len(backend(sandbox).services.get(new_ip, ())) == 2)
    assert backend(sandbox).services[old_ip] == ()
    assert sandbox.store.get(SERVICES, NS, "kube-dns") is not None


async def test_hand_made_slice_lives_beside_the_managed_one(sandbox: Sandbox,
                                                            http: Http) -> None:
    extra = {"metadata": {"name": "kube-dns-v6", "labels": {
                 "kubernetes.io/service-name": "kube-dns"}},
             "addressType": "IPv6",
             "endpoints": [{"addresses": ["fd00::53"], "conditions": {"ready": True}}],
             "ports": [{"name": "dns", "protocol": "UDP", "port": 53}]}
    code, _, _ = await http.call("POST", SLICES, extra)
    assert code == 201
    code, _, listing = await http.call(
        "GET", f"{SLICES}?labelSelector=kubernetes.io%2Fservice-name%3Dkube-dns")
    assert sorted(i["addressType"] for i in listing["items"]) == ["IPv4", "IPv6"]
    # a controller pass must leave the hand-made slice alone: make one happen (a pod goes,
    # the managed slice drops its address) before looking
    victim = sandbox.dns_pods()[0]
    ip = victim["status"]["podIP"]
    code, _, _ = await http.call(
        "DELETE", f"/api/v1/namespaces/{NS}/pods/{victim['metadata']['name']}"
        "?gracePeriodSeconds=0")
    assert code == 200
    await eventually(lambda: ip not in managed_ipv4_addresses(sandbox), within=10)
    code, _, _ = await http.call("DELETE", f"{SLICES}/kube-dns-v6")
    assert code == 200


def managed_ipv4_addresses(sandbox: Sandbox) -> set[str]:
    return {address for s in sandbox.store.items(ENDPOINTSLICES, NS)
            if s.get("addressType") == "IPv4"
            for e in s.get("endpoints") or () for address in e.get("addresses") or ()}


async def test_stalled_watch_sends_nothing_until_released(sandbox: Sandbox,
                                                          http: Http) -> None:
    sandbox.stall_watches()
    with pytest.raises(TimeoutError):
        await http.watch(f"{SLICES}?watch=1", within=0.5)
    sandbox.stall_watches(False)
    code, events = await http.watch(f"{SLICES}?watch=1", stop_after=1)
    assert code == 200
    assert [e["type"] for e in events] == ["ADDED"]


async def test_reset_aborts_open_watches_without_a_final_chunk(sandbox: Sandbox,
                                                               http: Http) -> None:
    task = asyncio.create_task(http.watch(f"{SLICES}?watch=1&resourceVersion="
                                          f"{sandbox.store.rv}"))
    await eventually(lambda: bool(sandbox.api._open_watches))
    assert sandbox.reset_connections() == 1
    with pytest.raises(aiohttp.ClientPayloadError):
        await task


async def test_sandbox_command_serves_until_sigterm(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": REPO}
    kubeconfig = tmp_path / "kc"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "corednsprobe", "sandbox", "--dns", "none", "--pods", "3",
        "--kubeconfig-out", str(kubeconfig), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL, env=env)
    try:
        assert process.stdout is not None
        lines: list[str] = []
        async with asyncio.timeout(30):
            while not lines or not lines[-1].startswith("Ctrl-C"):
                lines.append((await process.stdout.readline()).decode().strip())
        url = re.search(r"https://127\.0\.0\.1:\d+", lines[0])
        assert url is not None
        assert len([line for line in lines if line.startswith("pod ")]) == 3
        assert "token:" in kubeconfig.read_text()
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(15):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def test_a_missing_backend_module_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(BACKENDS, "inprocess", ("corednsprobe.sandbox.no_such_module",
                                                "InProcessBackend", ""))
    with pytest.raises(BackendUnavailable, match="DNS backend 'inprocess' is not available"):
        make_backend("inprocess")
    with pytest.raises(BackendUnavailable, match="unknown DNS backend 'nosuch'"):
        make_backend("nosuch")
    assert make_backend("none").name == "none"
