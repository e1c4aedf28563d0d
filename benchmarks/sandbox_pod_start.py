"""How long a sandbox pod takes to answer DNS after add_pod, per backend.

Run: ``PYTHONPATH=. python3 benchmarks/sandbox_pod_start.py [pods]`` (the netns
backend needs root). Prints per-pod start seconds, one at a time and all at once.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from typing import Any

from corednsprobe.sandbox.backend import ZoneData
from corednsprobe.sandbox.inprocess import InProcessBackend

ZONE = ZoneData("cluster.local", {"kubernetes.default.svc.cluster.local": ("10.96.0.1",)})


async def timed_add(backend: Any, pod: str) -> float:
    started = time.perf_counter()
    await backend.add_pod(pod, backend.allocate_pod_ip(), ZONE)
    return time.perf_counter() - started


def summary(label: str, seconds: list[float]) -> str:
    ms = sorted(s * 1000 for s in seconds)
    return (f"{label:<28} n={len(ms):<3} min {ms[0]:7.1f}  median {statistics.median(ms):7.1f}"
            f"  max {ms[-1]:7.1f} ms")


async def measure(backend: Any, pods: int) -> None:
    await backend.start()
    try:
        one_by_one = [await timed_add(backend, f"seq-{i}") for i in range(pods)]
        started = time.perf_counter()
        together = await asyncio.gather(*(timed_add(backend, f"par-{i}") for i in range(pods)))
        wall = time.perf_counter() - started
    finally:
        await backend.close()
    print(summary(f"{backend.name} one at a time", one_by_one))
    print(summary(f"{backend.name} {pods} at once", list(together)), f"(wall {wall * 1000:.1f} ms)")


async def main(pods: int) -> None:
    await measure(InProcessBackend(), pods)
    if os.geteuid() == 0:
        from corednsprobe.sandbox.netns import NetnsBackend

        await measure(NetnsBackend(), pods)


if __name__ == "__main__":
    from corednsprobe import logs

    logs.configure(level="warning")
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 5))
