"""Costs of the probe-pod reach: the agent's CPU per probe, the outside process's CPU
per result read from the log, and the agent pod's start-up in the sandbox.

Run by hand (root not needed; unbound must be installed):

    PYTHONPATH=. python3 benchmarks/bench_probe_pod.py [--targets 250] [--seconds 10]

* agent: ``corednsprobe agent`` against one unbound on loopback, ``--targets`` pod
  targets (one address and port, distinct uids) with the kubernetes and nxdomain
  checks every 0.5 s, for ``--seconds``; CPU is the child's user+system time minus
  that of a run of one target for one round (the interpreter's start-up), per result
  line it printed.
* outside: the agent's lines read back (Lookup.read, JSON to ProbeResult) and handed
  to waiting ``probe()`` calls, as ProbePodReach does, timed with process_time.
* start-up: ``--pods`` agent pods created one after another through the sandbox API
  (in-process backend), create → first result line, as /status reports it.
Nothing here is asserted; it prints numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from corednsprobe.model import Check, PodRef, Target, TargetKind
from corednsprobe.probe.checks import Checks
from corednsprobe.reach.agentlines import Lookup, spec_text
from tests.helpers import dnsservers

EXPECTED = frozenset({dnsservers.SERVICE_IP})


def _jobs(address: str, port: int, n: int) -> list[tuple[Target, tuple[Check, ...]]]:
    checks = Checks("cluster.local", "kube-system")
    out = []
    for i in range(n):
        t = Target(TargetKind.POD, address, port, PodRef(f"coredns-{i}", uid=f"uid-{i}"))
        out.append((t, checks.for_target(t, EXPECTED)))
    return out


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _agent(jobs: list[tuple[Target, tuple[Check, ...]]], seconds: float) -> tuple[float, bytes]:
    spec = spec_text(jobs, interval=0.5, timeout=0.5, duration=seconds, max_in_flight=4096,
                     domain="cluster.local", namespace="kube-system")
    before = _children_cpu()
    done = subprocess.run([sys.executable, "-m", "corednsprobe", "agent", spec],
                          capture_output=True, check=True)
    return _children_cpu() - before, done.stdout


def bench_agent(targets: int, seconds: float) -> list[bytes]:
    with dnsservers.unbound(Path(tempfile.mkdtemp())) as server:
        base_cpu, _ = _agent(_jobs(server.address, server.port, 1), 0.5)
        jobs = _jobs(server.address, server.port, targets)
        cpu, out = _agent(jobs, seconds)
    lines = out.splitlines()[1:]
    ok = sum(b'"outcome":"ok"' in line for line in lines)
    per = (cpu - base_cpu) / len(lines) * 1e6
    print(f"agent: {targets} targets x 2 checks every 0.5 s for {seconds:g} s: "
          f"{len(lines)} results ({ok} ok), {len(lines) / seconds:.0f} probes/s, "
          f"CPU {cpu:.2f} s ({base_cpu:.2f} s of it start-up), {per:.0f} us per probe, "
          f"{(cpu - base_cpu) / seconds * 100:.0f}% of a core")
    return lines


async def bench_outside(lines: list[bytes], jobs: list[tuple[Target, tuple[Check, ...]]]
                        ) -> None:
    lookup = Lookup(jobs)
    start = time.process_time()
    for line in lines:
        lookup.read(line)
    parse = (time.process_time() - start) / len(lines) * 1e6
    # the whole path: parse, then wake a probe() waiting for that (target, check)
    loop = asyncio.get_running_loop()
    start = time.process_time()
    for line in lines:
        result = lookup.read(line)
        assert result is not None
        waiter: asyncio.Future[object] = loop.create_future()
        waiter.set_result(result)
        await waiter
    whole = (time.process_time() - start) / len(lines) * 1e6
    # ProbePodReach itself: a probe() task per (target, check) as Rounds starts it,
    # waiting, then woken by the log line read for it (_take)
    from corednsprobe.config import Settings
    from corednsprobe.model import ClusterState, TargetSet
    from corednsprobe.reach.probepod import ProbePodReach, _Agent

    reach = ProbePodReach(None, Settings.from_env({"COREDNSPROBE_INTERVAL": "5"}))
    reach.plan(TargetSet(tuple(t for t, _ in jobs), (), EXPECTED, ClusterState.OK, 1))
    agent = _Agent("bench", loop.time(), (), float("inf"))
    batch = len(jobs) * 2
    start = time.process_time()
    for i in range(0, len(lines) - batch + 1, batch):
        chunk = lines[i:i + batch]
        answered: list[object] = []
        for line in chunk:
            r = lookup.read(line)
            assert r is not None
            reach.start(r.target, r.check, None, answered.append)
        for line in chunk:
            reach._take(agent, line)
        assert len(answered) == len(chunk)
    done = (len(lines) // batch) * batch
    # the lookups that only found the (target, check) for the bench are taken out again
    full = (time.process_time() - start) / done * 1e6 - parse
    # as it runs with the agent ahead of the rounds: the line first, then the probe
    targets = [lookup.read(line) for line in lines]
    start = time.process_time()
    for i in range(0, len(lines) - batch + 1, batch):
        answered.clear()
        for line in lines[i:i + batch]:
            reach._take(agent, line)
        for r in targets[i:i + batch]:
            assert r is not None
            reach.start(r.target, r.check, None, answered.append)
        assert len(answered) == batch
    ahead = (time.process_time() - start) / done * 1e6
    print(f"outside: {parse:.1f} us CPU per result line parsed (Lookup.read), "
          f"{whole:.1f} us with the hand-over to a waiting future, {full:.1f} us per probe "
          f"through ProbePodReach (started as Rounds starts it, waiting, its line read and "
          f"handed to it: the parse included), {ahead:.1f} us with the line there first "
          f"(the agent ahead of the rounds)")


async def bench_startup(pods: int) -> None:
    from corednsprobe.config import Settings
    from corednsprobe.kube.access import connect
    from corednsprobe.kube.view import ClusterView
    from corednsprobe.reach.probepod import ProbePodReach
    from corednsprobe.sandbox.cluster import Sandbox, SandboxConfig
    from corednsprobe.sandbox.controllers import Timings
    from corednsprobe.sandbox.inprocess import InProcessBackend

    config = SandboxConfig(replicas=3, timings=Timings(readiness_period=0.05))
    async with Sandbox(InProcessBackend(domain="cluster.local"), config) as sandbox:
        await sandbox.wait_ready(within=20)
        access = await connect(str(sandbox.write_kubeconfig(Path(tempfile.mkdtemp()) / "kc")))
        view = ClusterView(access.api, namespace="kube-system", service="kube-dns")
        watching = asyncio.create_task(view.run())
        ts = await view.changed(0)
        settings = Settings.from_env({"COREDNSPROBE_INTERVAL": "0.5",
                                      "COREDNSPROBE_TIMEOUT": "0.2",
                                      "COREDNSPROBE_PROBER_NAMESPACE": "kube-system"})
        times = []
        for _ in range(pods):
            reach = ProbePodReach(access.api, settings)
            reach.plan(ts)
            task = asyncio.create_task(reach.run())
            while reach.startup_last is None:  # noqa: ASYNC110 (a benchmark's poll)
                await asyncio.sleep(0.01)
            times.append(reach.startup_last)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await reach.aclose()
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)
        await access.close()
    times.sort()
    print(f"start-up (create -> first result), {pods} pods: min {times[0]:.3f} s, "
          f"median {times[len(times) // 2]:.3f} s, max {times[-1]:.3f} s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--targets", type=int, default=250)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--pods", type=int, default=5)
    args = parser.parse_args()
    lines = bench_agent(args.targets, args.seconds)
    asyncio.run(_outside_and_startup(lines, args.targets, args.pods))


async def _outside_and_startup(lines: list[bytes], targets: int, pods: int) -> None:
    import json

    sample = json.loads(lines[0])  # the lines name that run's server address and port
    jobs = _jobs(sample["address"], sample["port"], targets)
    await bench_outside(lines, jobs)
    await bench_startup(pods)


if __name__ == "__main__":
    main()
