"""`serve` wires remediation in: against the sandbox with in-process DNS servers on
loopback, the service elects itself, restarts the one pod that answers SERVFAIL,
shows it in /status and /metrics, and hands its Lease back on shutdown."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from corednsprobe.config import Settings
from corednsprobe.kube.lease import LeaseTiming
from corednsprobe.sandbox.cluster import Sandbox, SandboxConfig
from corednsprobe.sandbox.controllers import Timings
from corednsprobe.sandbox.inprocess import InProcessBackend
from corednsprobe.sandbox.registry import R
from tests.kube.conftest import api_client_for, serving

LEASES = R.require("coordination.k8s.io", "leases")


def metric(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v
                                           for k, v in labels.items()):
                return float(sample.value)
    return None


async def test_serve_restarts_the_failing_pod_once_and_releases_the_lease(
        tmp_path: Path) -> None:
    config = SandboxConfig(replicas=2, termination_grace_seconds=1,
                           timings=Timings(readiness_period=0.05, resync_period=1.0))
    settings = Settings(interval=0.2, timeout=0.2, window=3.0, min_samples=4, min_pod_age=0.0,
                        listen=("127.0.0.1", 0), remediation="evict", cooldown=300.0,
                        prober_namespace="kube-system", lease_name="cdpr-serve")
    async with Sandbox(InProcessBackend(), config) as sandbox, \
            await api_client_for(sandbox, tmp_path / "kc") as api, aiohttp.ClientSession() as http:
        await sandbox.wait_ready(within=10)
        victim = sorted(p["metadata"]["name"] for p in sandbox.dns_pods())[0]
        await sandbox.set_pod_fault(victim, "servfail")
        async with serving(settings, api, lease_timing=LeaseTiming(2.0, 1.0, 0.25)) as port:
            base = f"http://127.0.0.1:{port}"

            async def status() -> dict[str, Any]:
                async with http.get(f"{base}/status") as resp:
                    doc: dict[str, Any] = await resp.json()
                    return doc

            async def restarted() -> bool:  # "started" is written ahead of the eviction
                actions = (await status())["remediation"]["budget"]["last_actions"]
                return any(a["result"] == "done" for a in actions)

            for _ in range(150):
                if await restarted():
                    break
                await asyncio.sleep(0.1)
            doc = (await status())["remediation"]
            assert doc["leader"] is True and doc["mode"] == "evict"
            last = doc["budget"]["last_actions"][-1]
            assert (last["pod"], last["result"]) == (victim, "done")
            await sandbox.wait_ready(within=10)
            await asyncio.sleep(1.0)  # more rounds: the replacement is fine, nothing else goes
            doc = (await status())["remediation"]
            assert doc["budget"]["used_last_hour"] == 1
            assert doc["budget"]["cooldown_left_seconds"] > 0
            async with http.get(f"{base}/metrics") as resp:
                text = await resp.text()
            assert metric(text, "corednsprobe_leader") == 1.0
            assert metric(text, "corednsprobe_remediations_total", action="evict",
                          result="done") == 1.0
        spec = sandbox.store.must_get(LEASES, "kube-system", "cdpr-serve")["spec"]
        assert not spec.get("holderIdentity")  # released on shutdown
