"""The sandbox's controllers wait on the event loop's clock, so a test can
fast-forward a real 30 s grace period with looptime."""

from __future__ import annotations

import asyncio
import time

import pytest

from corednsprobe.sandbox.cluster import Sandbox, SandboxConfig
from corednsprobe.sandbox.controllers import Timings
from corednsprobe.sandbox.nullbackend import NullBackend
from corednsprobe.sandbox.registry import PODS
from tests.kube.conftest import eventually


@pytest.mark.looptime
async def test_a_30_second_grace_period_passes_in_loop_time() -> None:
    config = SandboxConfig(replicas=2, termination_grace_seconds=30, tls=False,
                           timings=Timings(readiness_period=1.0))
    backend = NullBackend()
    async with Sandbox(backend, config) as sandbox:
        await sandbox.wait_ready(within=60)
        victim = sandbox.dns_pods()[0]["metadata"]["name"]
        loop = asyncio.get_running_loop()
        started, wall = loop.time(), time.monotonic()
        sandbox.registry.delete(PODS, "kube-system", victim, {}, None)
        # the kubelet stops the pod's server when the grace period ends
        await eventually(lambda: victim not in backend.pods, within=120, step=0.5)
        assert 29.0 <= loop.time() - started <= 32.0
        assert time.monotonic() - wall < 10.0
        assert victim not in [p["metadata"]["name"] for p in sandbox.dns_pods()]
        await sandbox.wait_ready(within=60)
