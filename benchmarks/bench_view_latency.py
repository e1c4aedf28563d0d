"""How long a pod change takes to reach ClusterView's TargetSet, wall clock.

Run: ``PYTHONPATH=. python3 benchmarks/bench_view_latency.py [deletions]``.
A sandbox API server (no DNS) and a ClusterView over the real
kubernetes_asyncio client, in one event loop (uvloop) as in the service.
Each round deletes a CoreDNS pod through the API (grace 1 s) and times, from
the delete call, the first TargetSet showing the pod terminating and the
first showing its replacement; then waits for the pod to leave.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import uvloop
from kubernetes_asyncio import client, config

from corednsprobe import logs
from corednsprobe.kube.view import ClusterView
from corednsprobe.model import TargetSet
from corednsprobe.sandbox.cluster import Sandbox, SandboxConfig
from corednsprobe.sandbox.controllers import Timings
from corednsprobe.sandbox.nullbackend import NullBackend

NS = "kube-system"


def summary(label: str, seconds: list[float]) -> str:
    ms = sorted(s * 1000 for s in seconds)
    return (f"{label:<34} n={len(ms):<3} min {ms[0]:6.1f}  median {statistics.median(ms):6.1f}"
            f"  max {ms[-1]:6.1f} ms")


async def until(view: ClusterView, holds: object) -> TargetSet:
    ts = view.current
    async with asyncio.timeout(10):
        while not holds(ts):  # type: ignore[operator]
            ts = await view.changed(ts.generation)
    return ts


def names(ts: TargetSet) -> dict[str, bool]:
    return {t.name: bool(t.pod and t.pod.terminating) for t in ts.pods}


async def measure(rounds: int) -> None:
    settings = SandboxConfig(replicas=2, termination_grace_seconds=1,
                             timings=Timings(readiness_period=0.05, resync_period=1.0))
    async with Sandbox(NullBackend(), settings) as sandbox:
        await sandbox.wait_ready(within=10)
        kubeconfig = Path(tempfile.mkdtemp(prefix="cdpv-bench-")) / "kubeconfig"
        sandbox.write_kubeconfig(kubeconfig)
        configuration = client.Configuration()
        await config.load_kube_config(config_file=str(kubeconfig),
                                      client_configuration=configuration)
        async with client.ApiClient(configuration) as api:
            view = ClusterView(api, namespace=NS, service="kube-dns")
            runner = asyncio.create_task(view.run())
            await until(view, lambda ts: ts.generation > 0)
            core = client.CoreV1Api(api)
            terminating, replaced = [], []
            for _ in range(rounds):
                victim = sorted(names(view.current))[0]
                started = time.perf_counter()
                await core.delete_namespaced_pod(victim, NS, grace_period_seconds=1)
                await until(view, lambda ts, v=victim: names(ts).get(v) is True)
                terminating.append(time.perf_counter() - started)
                await until(view, lambda ts: len(ts.pods) == 3)
                replaced.append(time.perf_counter() - started)
                await until(view, lambda ts, v=victim: v not in names(ts) and len(ts.pods) == 2)
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
        kubeconfig.unlink()
        kubeconfig.parent.rmdir()
    print(summary("delete -> terminating in TargetSet", terminating))
    print(summary("delete -> replacement in TargetSet", replaced))


def main() -> None:
    logs.configure("warning", "console")
    uvloop.run(measure(int(sys.argv[1]) if len(sys.argv) > 1 else 20))


if __name__ == "__main__":
    main()
