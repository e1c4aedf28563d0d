"""What asking EDNS NSID costs the probe engine: probes/s and CPU per probe with and
without it, against the same unbound (which names itself when asked).

Run by hand (unbound must be installed; taskset optional):

    PYTHONPATH=. python3 benchmarks/bench_nsid.py [--seconds 5] [--in-flight 64] [--rounds 3]

One unbound on 127.0.0.1 (``nsid: "ascii_coredns-bench"``), pinned to CPU 1 when
taskset exists; the client, in this process (pinned to CPU 0), keeps ``--in-flight``
probes of ``kubernetes.default.svc.cluster.local`` A outstanding through
``Prober.start`` for ``--seconds``, first without NSID (the direct strategy's
probes), then with it (the exposed strategy's), alternating ``--rounds`` times.
CPU is user+system time of this process per probe. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from corednsprobe.model import Check, ProbeResult, Target, TargetKind  # noqa: E402
from corednsprobe.probe.engine import Prober  # noqa: E402
from tests.helpers import dnsservers  # noqa: E402

CHECK = Check("kubernetes", "kubernetes.default.svc.cluster.local.", "A",
              frozenset({"10.96.0.1"}))


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def drive(prober: Prober, target: Target, seconds: float, in_flight: int
                ) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    counts = {"probes": 0, "ok": 0, "named": 0}
    stop_at = loop.time() + seconds

    def finished(result: ProbeResult) -> None:
        counts["probes"] += 1
        counts["ok"] += result.ok
        counts["named"] += bool(result.nsid)
        if loop.time() < stop_at:
            prober.start(target, CHECK, None, finished)
        elif counts["probes"] >= started[0]:
            done.set()

    started = [in_flight]
    cpu, wall = _cpu(), time.perf_counter()
    for _ in range(in_flight):
        prober.start(target, CHECK, None, finished)
    await asyncio.sleep(max(0.0, stop_at - loop.time()))
    started[0] = counts["probes"] + in_flight
    await asyncio.wait_for(done.wait(), 5)
    cpu, wall = _cpu() - cpu, time.perf_counter() - wall
    n = counts["probes"]
    return {"probes": n, "per_second": n / wall, "cpu_us_per_probe": cpu / n * 1e6,
            "ok": counts["ok"] / n, "named": counts["named"] / n}


def pin(pid: int) -> None:
    """The server on CPU 1, this process on CPU 0 (when taskset exists)."""
    if shutil.which("taskset"):
        subprocess.run(["taskset", "-a", "-p", "-c", "1", str(pid)], check=False,
                       capture_output=True)
        os.sched_setaffinity(0, {0})


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp, dnsservers.unbound(
            Path(tmp), nsid="coredns-bench") as server:
        pin(server.process.pid)
        target = Target(TargetKind.SERVICE, server.address, server.port)
        plain, asked = Prober(1.0, tcp_reask=False), Prober(1.0, tcp_reask=False, nsid=True)
        await drive(plain, target, 1.0, args.in_flight)  # warm-up
        for r in range(args.rounds):
            for label, prober in (("without NSID", plain), ("with NSID", asked)):
                out = await drive(prober, target, args.seconds, args.in_flight)
                print(f"round {r + 1} {label:>13}: {out['per_second']:8.0f} probes/s, "
                      f"{out['cpu_us_per_probe']:6.1f} µs CPU/probe, ok {out['ok']:.3f}, "
                      f"named {out['named']:.3f} ({out['probes']:.0f} probes)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    asyncio.run(main(parser.parse_args()))
