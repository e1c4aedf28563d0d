"""Malformed API objects are skipped, never fatal: EndpointSlices the API server stored
(one endpoint with ``addresses: []``, one slice with a port that is not a number) beside
the managed slice, seen by `corednsprobe targets --json` as a subprocess and by the
running service, which goes on serving and counts the skipped object once."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import aiohttp
import structlog

from corednsprobe.config import Settings
from corednsprobe.sandbox.cluster import Sandbox
from corednsprobe.sandbox.registry import PODS
from corednsprobe.service.app import ProberService, serve
from tests.kube.conftest import Command, Http, api_client_for, eventually
from tests.kube.test_clusterview import live_pods
from tests.kube.test_serve_remediation import metric

NS = "kube-system"
SLICES = "/apis/discovery.k8s.io/v1/namespaces/kube-system/endpointslices"
LABELS = {"kubernetes.io/service-name": "kube-dns"}
UDP = [{"name": "dns", "protocol": "UDP", "port": 53}]
EMPTY = {"metadata": {"name": "kube-dns-empty", "labels": LABELS}, "addressType": "IPv4",
         "endpoints": [{"addresses": [], "conditions": {"ready": True}}], "ports": UDP}
GARBLED = {"metadata": {"name": "kube-dns-garbled", "labels": LABELS}, "addressType": "IPv4",
           "endpoints": [{"addresses": ["10.99.0.1"], "conditions": {"ready": True}}],
           "ports": [{"name": "dns", "protocol": "UDP", "port": "fifty-three"}]}


async def add_malformed_slices(http: Http) -> None:
    for body in (EMPTY, GARBLED):
        code, _, created = await http.call("POST", SLICES, body)
        assert code == 201, created


async def test_targets_json_lists_the_good_pods_beside_malformed_slices(
        sandbox: Sandbox, http: Http, tmp_path: Path, corednsprobe: Command) -> None:
    await add_malformed_slices(http)
    kubeconfig = sandbox.write_kubeconfig(tmp_path / "kc")
    code, out, err = await corednsprobe.run("targets", "--json", "--kubeconfig",
                                            str(kubeconfig))
    assert code == 0, err
    doc = json.loads(out)
    assert doc["state"] == "ok"
    assert {t["pod"]: t["address"] for t in doc["pods"]} == live_pods(sandbox)
    assert "api_object_skipped" in err and "kube-dns-garbled" in err


async def test_the_service_keeps_running_and_counts_a_malformed_slice_once(
        sandbox: Sandbox, http: Http, tmp_path: Path) -> None:
    settings = Settings(interval=0.2, timeout=0.2, window=3.0, listen=("127.0.0.1", 0),
                        remediation="off")
    port: list[int] = []
    services: list[ProberService] = []

    def listening(service: ProberService, bound: int) -> None:
        services.append(service)
        port.append(bound)

    async with await api_client_for(sandbox, tmp_path / "kc") as api, \
            aiohttp.ClientSession() as session:
        stop = asyncio.Event()
        with structlog.testing.capture_logs() as logs:
            task = asyncio.create_task(serve(settings, api, stop=stop, on_listening=listening))
            try:
                await eventually(lambda: bool(port), within=10)
                await eventually(lambda: len(services[0].view.current.pods) == 2, within=10)
                await add_malformed_slices(http)

                async def scraped() -> str:
                    async with session.get(f"http://127.0.0.1:{port[0]}/metrics") as resp:
                        return await resp.text()

                for _ in range(100):
                    if metric(await scraped(), "corednsprobe_api_objects_skipped_total",
                              kind="EndpointSlice"):
                        break
                    await asyncio.sleep(0.05)
                # more changes rebuild the TargetSet; the same version is not counted again
                victim = sorted(live_pods(sandbox))[0]
                sandbox.registry.delete(PODS, NS, victim, {}, 0)
                await eventually(lambda: victim not in live_pods(sandbox)
                                 and len(live_pods(sandbox)) == 2
                                 and {t.name for t in services[0].view.current.pods}
                                 == set(live_pods(sandbox)), within=10)
                assert not task.done()
                text = await scraped()
                assert metric(text, "corednsprobe_api_objects_skipped_total",
                              kind="EndpointSlice") == 1.0
                assert sorted(t.address for t in services[0].view.current.pods) == \
                    sorted(live_pods(sandbox).values())
            finally:
                stop.set()
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait_for(task, 15)
    skipped = [e for e in logs if e["event"] == "api_object_skipped"]
    assert [(e["kind"], e["object"].split("@")[0]) for e in skipped] == [
        ("EndpointSlice", "kube-system/kube-dns-garbled")]
