"""Cost of the port-forward reach strategy against the sandbox's API server.

Run by hand (no root):

    PYTHONPATH=. python3 benchmarks/bench_portforward.py [--probes 500] [--concurrency 16]

The sandbox (``corednsprobe sandbox --dns inprocess``) runs in its own process, pinned
to CPU 1 when there are two; this client is pinned to CPU 0. It measures:

* tunnel set-up: opening ``pods/portforward`` (TLS connection, WebSocket upgrade,
  the kubelet's two port frames) -- median and 95th percentile;
* a tunnel per probe (what the strategy does): probes per second one at a time and
  with ``--concurrency`` in flight, and CPU microseconds of this process per probe;
* one tunnel for many queries (the alternative: a long-lived TCP connection to the
  pod, which hides a pod that stops accepting connections): the same numbers;
* auto's decision time here (in the network: direct answers at once).

CPU is user+system time of this process (all threads). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from corednsprobe.config import Settings
from corednsprobe.kube.access import connect
from corednsprobe.kube.portforward import open_tunnel
from corednsprobe.model import Check
from corednsprobe.probe import wire
from corednsprobe.reach.choose import facts, first_targets
from corednsprobe.reach.portforward import PortForwardReach

CHECK = Check("kubernetes", "kubernetes.default.svc.cluster.local.", "A")


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def start_sandbox(directory: Path) -> tuple[subprocess.Popen[bytes], Path]:
    kubeconfig = directory / "kubeconfig"
    argv = [sys.executable, "-m", "corednsprobe", "sandbox", "--dns", "inprocess", "--pods",
            "3", "--kubeconfig-out", str(kubeconfig)]
    if (os.cpu_count() or 1) > 1:
        argv = ["taskset", "-c", "1", *argv]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        if kubeconfig.exists() and kubeconfig.stat().st_size:
            time.sleep(1.0)  # the pods become ready
            return proc, kubeconfig
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the sandbox did not write its kubeconfig")


async def rate(label: str, n: int, concurrency: int, one: Any) -> None:
    semaphore = asyncio.Semaphore(concurrency)

    async def bounded() -> bool:
        async with semaphore:
            ok: bool = await one()
            return ok

    c0, t0 = cpu(), time.perf_counter()
    oks = await asyncio.gather(*(bounded() for _ in range(n)))
    wall, used = time.perf_counter() - t0, cpu() - c0
    print(f"{label:<44} {n / wall:8.1f} probes/s  {used / n * 1e6:8.0f} us CPU/probe  "
          f"ok {sum(oks)}/{n}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    if (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {0})
    with tempfile.TemporaryDirectory() as tmp:
        proc, kubeconfig = start_sandbox(Path(tmp))
        try:
            access = await connect(str(kubeconfig))
            settings = Settings.from_env({})
            t0 = time.perf_counter()
            found = await facts(access.api, settings, in_cluster=False, stop_at_first=True)
            print(f"auto's decision here: {found.pick} in {time.perf_counter() - t0:.3f} s")
            ts = await first_targets(access.api, settings)
            pod = ts.pods[0]
            assert pod.pod is not None
            setups = []
            for _ in range(100):
                tunnel = await open_tunnel(access.api, "kube-system", pod.pod.name)
                setups.append(tunnel.setup_seconds)
                await tunnel.close()
            setups.sort()
            print(f"tunnel set-up over {len(setups)}: median "
                  f"{statistics.median(setups) * 1000:.2f} ms, p95 "
                  f"{setups[int(len(setups) * 0.95)] * 1000:.2f} ms")
            reach = PortForwardReach(access.api, "kube-system", 2.0)

            async def fresh() -> bool:
                return (await reach.probe(pod, CHECK)).ok

            await rate("a tunnel per probe, one at a time", args.probes, 1, fresh)
            await rate(f"a tunnel per probe, {args.concurrency} in flight", args.probes,
                       args.concurrency, fresh)
            tunnel = await open_tunnel(access.api, "kube-system", pod.pod.name)
            template = wire.question_bytes(CHECK.qname, "A", False)
            lock = asyncio.Lock()

            async def reused() -> bool:
                query = wire.with_id(template, secrets.randbits(16))
                async with lock:  # one TCP stream: one exchange at a time
                    await tunnel.write(len(query).to_bytes(2, "big") + query)
                    size = int.from_bytes(await tunnel.readexactly(2), "big")
                    return isinstance(wire.parse(await tunnel.readexactly(size)), wire.Reply)

            await rate("one tunnel for every probe (not used)", args.probes, 1, reused)
            await tunnel.close()
            await access.close()
        finally:
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    asyncio.run(main())
