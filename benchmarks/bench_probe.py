"""Cost of the probe engine as targets grow, beside a bare-socket floor and dnsperf.

Run by hand (root not needed; knotd, dnsperf and taskset must be installed):

    PYTHONPATH=. python3 benchmarks/bench_probe.py [--targets 100,1000,5000] [--seconds 10]

knotd serves cluster.local on N loopback addresses 127.10.x.y:5353 (one knotd
takes at most ~4,300 addresses in its ``listen`` list, so 2,500 per instance),
pinned to CPU 1. Each client runs in its own process pinned to CPU 0 and asks
every target once a second, spread evenly over the second:

* engine: :class:`corednsprobe.probe.engine.Prober` (fresh socket and ID per probe,
  deadline, matching, classification);
* floor: a bare DatagramProtocol on one long-lived connected socket per target
  that patches the ID into pre-built bytes and checks only the reply's ID;
* fresh: the floor with the engine's one kernel-side property, a new socket
  (so a new source port and conntrack entry) per probe, and nothing else;
* dnsperf: ``dnsperf -Q N`` against one address at the same rate.

CPU is user+system time of the client process (all threads) per wall second of
one core. Nothing here is asserted; it prints numbers.
"""

from __future__ import annotations

import _socket
import argparse
import asyncio
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from corednsprobe.model import Check, Outcome, Target, TargetKind  # noqa: E402
from corednsprobe.probe import wire  # noqa: E402
from corednsprobe.probe.engine import Prober  # noqa: E402
from tests.helpers import dnsservers  # noqa: E402

NAME = "kubernetes.default.svc.cluster.local"
PORT = 5353
PER_KNOT = 2500
WARMUP = 1


def addresses(count: int) -> list[str]:
    return [f"127.10.{i // 250}.{i % 250 + 1}" for i in range(count)]


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _sys() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_stime


Launch = Callable[[int], Coroutine[Any, Any, float | None]]  # target index → RTT or None


async def drive(count: int, seconds: int, launch: Launch) -> dict[str, Any]:
    """One probe per target per second, target i at tick + i/count; measure after warm-up."""
    loop = asyncio.get_running_loop()
    rtts: list[float] = []
    failures = Counter[str]()
    pending: set[asyncio.Task[None]] = set()
    measuring = False
    peak_threads = _threads()

    async def one(index: int) -> None:
        rtt = await launch(index)
        if measuring:
            if rtt is None:
                failures["no_answer"] += 1
            else:
                rtts.append(rtt)

    def spawn(index: int) -> None:
        task = loop.create_task(one(index))
        pending.add(task)
        task.add_done_callback(pending.discard)

    start = loop.time() + 0.05
    cpu0 = wall0 = sys0 = 0.0
    for second in range(WARMUP + seconds):
        tick = start + second
        for index in range(count):
            loop.call_at(tick + index / count, spawn, index)
        await asyncio.sleep(max(0.0, tick - loop.time()))
        if second == WARMUP:
            await asyncio.sleep(0)
            measuring, cpu0, wall0, sys0 = True, _cpu(), time.perf_counter(), _sys()
        peak_threads = max(peak_threads, _threads())
    await asyncio.sleep(max(0.0, start + WARMUP + seconds - loop.time()))
    while pending:
        await asyncio.gather(*list(pending))
    cpu, wall, kernel = _cpu() - cpu0, time.perf_counter() - wall0, _sys() - sys0
    probes = len(rtts) + sum(failures.values())
    return {
        "cpu_pct": 100 * cpu / wall, "us_per_probe": 1e6 * cpu / max(1, probes),
        "sys_us": 1e6 * kernel / max(1, probes),
        "p50_ms": 1000 * percentile(rtts, 0.5), "p99_ms": 1000 * percentile(rtts, 0.99),
        "rss_mib": _rss_mib(), "threads": peak_threads, "probes": probes,
        "failed": sum(failures.values()),
    }


async def engine(count: int, seconds: int) -> dict[str, Any]:
    prober = Prober(1.0)
    check = Check("svc", NAME, expect_addresses=frozenset({dnsservers.SERVICE_IP}))
    targets = [Target(TargetKind.POD, a, PORT) for a in addresses(count)]

    async def launch(index: int) -> float | None:
        result = await prober.probe(targets[index], check)
        return result.rtt_seconds if result.outcome is Outcome.OK else None

    return await drive(count, seconds, launch)


class _Bare(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.expected = -1
        self.sent = 0.0
        self.waiter: asyncio.Future[float] | None = None

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.waiter and not self.waiter.done() and data[:2] == self.expected.to_bytes(2, "big"):
            self.waiter.set_result(time.perf_counter() - self.sent)


async def floor(count: int, seconds: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    template = wire.question_bytes(NAME, "A")
    endpoints = [await loop.create_datagram_endpoint(_Bare, remote_addr=(a, PORT))
                 for a in addresses(count)]
    next_id = 0

    async def launch(index: int) -> float | None:
        nonlocal next_id
        transport, protocol = endpoints[index]
        next_id = (next_id + 1) & 0xFFFF
        protocol.expected, protocol.waiter = next_id, loop.create_future()
        protocol.sent = time.perf_counter()
        transport.sendto(wire.with_id(template, next_id))
        try:
            return await asyncio.wait_for(protocol.waiter, 1.0)
        except TimeoutError:
            return None

    try:
        return await drive(count, seconds, launch)
    finally:
        for transport, _ in endpoints:
            transport.close()


async def fresh(count: int, seconds: int) -> dict[str, Any]:
    """The floor with the engine's one kernel-side property: a new socket (source port,
    conntrack entry) per probe, read with add_reader, nothing else."""
    loop = asyncio.get_running_loop()
    template = wire.question_bytes(NAME, "A")
    targets = [(a, PORT) for a in addresses(count)]
    next_id = 0

    async def launch(index: int) -> float | None:
        nonlocal next_id
        next_id = (next_id + 1) & 0xFFFF
        expected = next_id.to_bytes(2, "big")
        sock = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM | _socket.SOCK_NONBLOCK)
        sock.connect(targets[index])
        waiter: asyncio.Future[float] = loop.create_future()
        sent = 0.0

        def readable() -> None:
            try:
                data = sock.recv(65535)
            except BlockingIOError:
                return
            if data[:2] == expected and not waiter.done():
                waiter.set_result(time.perf_counter() - sent)

        fd = sock.fileno()
        loop.add_reader(fd, readable)
        sent = time.perf_counter()
        sock.send(wire.with_id(template, next_id))
        try:
            return await asyncio.wait_for(waiter, 1.0)
        except TimeoutError:
            return None
        finally:
            loop.remove_reader(fd)
            sock.close()

    return await drive(count, seconds, launch)


def dnsperf(count: int, seconds: int, workdir: Path) -> dict[str, Any]:
    queries = workdir / "queries.txt"
    queries.write_text(f"{NAME} A\n")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    out = subprocess.run(
        ["taskset", "-c", "0", "dnsperf", "-s", "127.10.0.1", "-p", str(PORT), "-d",
         str(queries), "-Q", str(count), "-l", str(seconds), "-c", "1", "-T", "1", "-v"],
        capture_output=True, text=True, timeout=seconds + 30, check=True).stdout
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    rtts = [float(line.split()[-1]) for line in out.splitlines() if line.startswith("> NOERROR")]
    kernel = after.ru_stime - before.ru_stime
    return {"cpu_pct": 100 * cpu / wall, "us_per_probe": 1e6 * cpu / max(1, len(rtts)),
            "sys_us": 1e6 * kernel / max(1, len(rtts)),
            "p50_ms": 1000 * percentile(rtts, 0.5), "p99_ms": 1000 * percentile(rtts, 0.99),
            "rss_mib": float("nan"), "threads": 1, "probes": len(rtts),
            "failed": sum(1 for line in out.splitlines() if line.startswith("> ")) - len(rtts)}


def worker(kind: str, count: int, seconds: int) -> None:
    import uvloop

    os.sched_setaffinity(0, {0})
    run = {"engine": engine, "floor": floor, "fresh": fresh}[kind]
    print(json.dumps(uvloop.run(run(count, seconds))))


def measure(kind: str, count: int, seconds: int) -> dict[str, Any]:
    done = subprocess.run([sys.executable, __file__, "--worker", kind, "--targets", str(count),
                           "--seconds", str(seconds)], capture_output=True, text=True,
                          timeout=seconds + 120, check=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def report(rows: list[tuple[int, str, dict[str, Any]]]) -> None:
    header = (f"{'targets':>7} {'client':<7} {'CPU%':>6} {'µs/probe':>9} {'of it sys':>9} "
              f"{'p50 ms':>7} "
              f"{'p99 ms':>7} {'RSS MiB':>8} {'threads':>7} {'probes':>7} {'failed':>6}")
    print(header)
    for count, kind, r in rows:
        print(f"{count:>7} {kind:<7} {r['cpu_pct']:>6.1f} {r['us_per_probe']:>9.1f} "
              f"{r.get('sys_us', float('nan')):>9.1f} "
              f"{r['p50_ms']:>7.3f} {r['p99_ms']:>7.3f} {r['rss_mib']:>8.1f} "
              f"{r['threads']:>7} {r['probes']:>7} {r['failed']:>6}")
    print()
    print(f"{'targets':>7} {'CPU engine/floor':>17} {'µs/probe engine/floor':>22} "
          f"{'engine/fresh':>13} {'p50 engine-dnsperf':>19} {'p99 engine-dnsperf':>19}")
    by = {(c, k): r for c, k, r in rows}
    for count in sorted({c for c, _, _ in rows}):
        e, f, d = by[count, "engine"], by[count, "floor"], by[count, "dnsperf"]
        fr = by.get((count, "fresh"), {"us_per_probe": float("nan")})
        print(f"{count:>7} {e['cpu_pct'] / f['cpu_pct']:>17.2f} "
              f"{e['us_per_probe'] / f['us_per_probe']:>22.2f} "
              f"{e['us_per_probe'] / fr['us_per_probe']:>13.2f} "
              f"{e['p50_ms'] - d['p50_ms']:>+16.3f} ms {e['p99_ms'] - d['p99_ms']:>+16.3f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default="100,1000,5000")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--worker", choices=["engine", "floor", "fresh"])
    args = parser.parse_args()
    counts = [int(c) for c in args.targets.split(",")]
    if args.worker:
        worker(args.worker, counts[0], args.seconds)
        return
    rows: list[tuple[int, str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        everything = addresses(max(counts))
        for first in range(0, len(everything), PER_KNOT):
            server = stack.enter_context(dnsservers.knot(
                Path(tmp), everything[first:first + PER_KNOT], PORT))
            subprocess.run(["taskset", "-a", "-p", "-c", "1", str(server.process.pid)],
                           check=True, capture_output=True)
        for count in counts:
            for kind in ("engine", "fresh", "floor"):
                rows.append((count, kind, measure(kind, count, args.seconds)))
                print(f"# {count} targets, {kind}: done", file=sys.stderr)
            rows.append((count, "dnsperf", dnsperf(count, args.seconds, Path(tmp))))
    report(rows)


if __name__ == "__main__":
    main()
