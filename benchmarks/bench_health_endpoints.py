"""CPU per round of the kubelet's view: GET every pod's /health and /ready.

Run by hand (not in CI):

    PYTHONPATH=. python3 benchmarks/bench_health_endpoints.py --pods 3,100 --rounds 50

A child process serves CoreDNS's two endpoints for N pods (``GET /health`` on
127.61.x.y:8080 and ``GET /ready`` on :8181, 200 "OK", as the sandbox's pods do),
so that only the client's side is counted here. This process runs
``probe.health.HealthRounds.run_round`` over a TargetSet of N pods whose
PodRefs carry the two endpoints, as the prober does once per interval, with the
prober's in-flight cap, and reports the CPU time (user + system, this process)
per round, per GET, and the wall time of a round. Prints one table; asserts
nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from corednsprobe.model import (
    ClusterState,
    HealthEndpoint,
    PodRef,
    Target,
    TargetKind,
    TargetSet,
)
from corednsprobe.probe.health import HealthRounds

ROOT = Path(__file__).resolve().parents[1]
ENDPOINTS = (HealthEndpoint("liveness", "/health", 8080, container="coredns"),
             HealthEndpoint("readiness", "/ready", 8181, container="coredns"))

SERVER = r'''
import asyncio, sys
async def handle(reader, writer):
    try:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                     b"Content-Length: 2\r\nConnection: close\r\n\r\nOK")
        await writer.drain()
    except Exception:
        pass
    writer.close()
async def main(n):
    servers = []
    for i in range(n):
        for port in (8080, 8181):
            servers.append(await asyncio.start_server(handle, address(i), port, backlog=512))
    print("ready", flush=True)
    await asyncio.Event().wait()
def address(i):
    return f"127.61.{i // 250}.{i % 250 + 1}"
asyncio.run(main(int(sys.argv[1])))
'''


def address(i: int) -> str:
    return f"127.61.{i // 250}.{i % 250 + 1}"


def targetset(n: int) -> TargetSet:
    pods = tuple(Target(TargetKind.POD, address(i), 53,
                        PodRef(f"coredns-{i}", uid=f"u{i}", health_endpoints=ENDPOINTS))
                 for i in range(n))
    return TargetSet(pods, (), frozenset(), ClusterState.OK, 1)


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def measure(n: int, rounds: int, in_flight: int) -> tuple[float, float, int]:
    """(CPU seconds per round, wall seconds per round, GETs that were not ok)."""
    ts = targetset(n)

    class View:
        current = ts

    health = HealthRounds(View(), lambda _s: None, interval=1.0, timeout=1.0,
                          max_in_flight=in_flight)
    for _ in range(3):  # warm up: imports, the first connections
        await health.run_round()
    bad = 0
    c0, w0 = cpu(), time.perf_counter()
    for _ in range(rounds):
        states = await health.run_round()
        bad += sum(1 for s in states.values() for e in s if not e.ok)
    return (cpu() - c0) / rounds, (time.perf_counter() - w0) / rounds, bad


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", default="3,100", help="comma-separated pod counts")
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--in-flight", type=int, default=256,
                        help="COREDNSPROBE_MAX_IN_FLIGHT (its default is 256)")
    args = parser.parse_args()
    print(f"{'pods':>6} {'GETs/round':>10} {'CPU ms/round':>13} {'CPU us/GET':>11} "
          f"{'wall ms/round':>14} {'not ok':>7}")
    for n in (int(x) for x in args.pods.split(",")):
        server = subprocess.Popen([sys.executable, "-c", SERVER, str(n)], stdout=subprocess.PIPE,
                                  text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        try:
            assert server.stdout is not None and server.stdout.readline().strip() == "ready"
            per_round, wall, bad = asyncio.run(measure(n, args.rounds, args.in_flight))
        finally:
            server.terminate()
            server.wait()
        gets = n * len(ENDPOINTS)
        print(f"{n:>6} {gets:>10} {per_round * 1e3:>13.2f} {per_round / gets * 1e6:>11.0f} "
              f"{wall * 1e3:>14.2f} {bad:>7}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
