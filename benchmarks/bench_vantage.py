"""The leader's cost of vantages: CPU and memory per round, and API writes per minute,
with 1 (itself alone), 3, 50 and 500 vantages, at 5 targets x 3 checks.

Run: ``PYTHONPATH=. python3 benchmarks/bench_vantage.py [--vantages 1,3,50,500]
[--rounds 20] [--interval 1]``.

The peers are simulated: one child process serves ``GET /vantage`` on
127.0.1.1, 127.0.1.2, ... port 9180 (one address per replica, each answering a
view of 5 pods x 3 checks in its own name and node), so the leader's numbers
hold only the leader's work. The leader is the product's code over the real
client: a sandbox API server (no DNS) holds an EndpointSlice of the
corednsprobe Service listing those addresses, ``kube.replicas.ReplicaView``
watches it, ``service.vantages.Vantages`` pulls every listed replica once a
round and combines the views (``merge``: judge/vantage.py and the diagnosis),
and a ``LeaderElector`` holds the Lease with the default timing, as the leader
does. Per round: CPU (process time) of the pull and of the merge, the pull's
wall time; the leader's RSS growth over its state before the first pull; and
the API writes (create/update/patch/delete) the sandbox saw from the leader
during the rounds, per minute. Ratios are against 1 vantage in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import aiohttp.web
import uvloop
from kubernetes_asyncio import client, config

from corednsprobe import logs
from corednsprobe.config import Settings
from corednsprobe.judge.diagnose import Policy
from corednsprobe.kube.lease import LeaderElector
from corednsprobe.kube.replicas import ReplicaView
from corednsprobe.metrics import Metrics
from corednsprobe.model import (
    CheckWindow,
    ClusterState,
    Health,
    HealthState,
    PodRef,
    Target,
    TargetKind,
    TargetSet,
)
from corednsprobe.sandbox.cluster import Sandbox, SandboxConfig
from corednsprobe.sandbox.nullbackend import NullBackend
from corednsprobe.service.vantages import Vantages

NS = "kube-system"
PORT = 9180
CHECKS = ("cluster_ip", "nxdomain", "external")
PODS = [Target(TargetKind.POD, f"10.244.0.{i}", 53,
               PodRef(f"coredns-{i}", uid=f"uid-{i}", node=f"node-{i}")) for i in range(1, 6)]
WRITES = frozenset({"create", "update", "patch", "delete", "deletecollection"})


def address(i: int) -> str:
    return f"127.0.{1 + i // 250}.{1 + i % 250}"


def view(i: int) -> dict[str, Any]:
    return {"version": 1, "pod": f"probe-{i}", "node": f"node-v{i}", "at": 0.0, "age": 0.2,
            "targets": [{"pod": p.name, "uid": p.pod.uid if p.pod else "", "state": "healthy",
                         "samples": 36, "failures": 0, "udp_only": 0, "outcomes": {"ok": 36},
                         "since": 0.0, "checks": {c: [12, 0] for c in CHECKS}}
                        for p in PODS]}


async def serve_peers(count: int) -> None:
    """The child: ``count`` replicas answering /vantage, until stdin closes."""
    runner = None
    answers = {address(i): json.dumps(view(i)).encode() for i in range(count)}

    async def handler(request: aiohttp.web.Request) -> aiohttp.web.Response:
        host = request.transport.get_extra_info("sockname")[0] if request.transport else ""
        return aiohttp.web.Response(body=answers[host], content_type="application/json")

    app = aiohttp.web.Application()
    app.router.add_get("/vantage", handler)
    runner = aiohttp.web.AppRunner(app, access_log=None)
    await runner.setup()
    for i in range(count):
        await aiohttp.web.TCPSite(runner, address(i), PORT, backlog=512).start()
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await runner.cleanup()


def own_healths() -> dict[Any, Health]:
    return {p.key: Health(p, HealthState.HEALTHY, samples=36, outcomes=(("ok", 36),),
                          checks=tuple(CheckWindow(c, 12, 0) for c in CHECKS)) for p in PODS}


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def endpoint_slice(count: int) -> dict[str, Any]:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": "corednsprobe-bench", "namespace": NS,
                         "labels": {"kubernetes.io/service-name": "corednsprobe"}},
            "ports": [{"name": "http", "port": PORT, "protocol": "TCP"}],
            "endpoints": [{"addresses": [address(i)], "conditions": {"ready": True},
                           "nodeName": f"node-v{i}",
                           "targetRef": {"kind": "Pod", "namespace": NS, "name": f"probe-{i}"}}
                          for i in range(count)]}


async def measure(vantages: int, rounds: int, interval: float) -> dict[str, float]:
    peers = vantages - 1  # the leader is one of them
    child = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--serve", str(peers), stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE)
    assert child.stdout is not None and child.stdin is not None
    assert (await child.stdout.readline()).strip() == b"ready"
    try:
        async with Sandbox(NullBackend(), SandboxConfig(replicas=1)) as sandbox:
            kubeconfig = Path(tempfile.mkdtemp(prefix="cdpv-bench-")) / "kubeconfig"
            sandbox.write_kubeconfig(kubeconfig)
            configuration = client.Configuration()
            await config.load_kube_config(config_file=str(kubeconfig),
                                          client_configuration=configuration)
            async with client.ApiClient(configuration) as api:
                if peers:
                    await client.DiscoveryV1Api(api).create_namespaced_endpoint_slice(
                        NS, endpoint_slice(peers))
                return await _lead(sandbox, api, peers, rounds, interval)
    finally:
        child.stdin.close()
        await child.wait()


async def _lead(sandbox: Sandbox, api: Any, peers: int, rounds: int,
                interval: float) -> dict[str, float]:
    settings = Settings.from_env({"COREDNSPROBE_INTERVAL": f"{interval:g}",
                                  "COREDNSPROBE_TIMEOUT": "0.5"})
    elector = LeaderElector(api, NS, "corednsprobe", identity="probe-leader")
    replicas = ReplicaView(api, namespace=NS, service="corednsprobe", default_port=PORT)
    vantages = Vantages(settings, replicas, pod="probe-leader", node="node-leader",
                        leading=elector.is_leader, metrics=Metrics(1.0))
    targets = TargetSet(tuple(PODS), (), frozenset(), ClusterState.OK, 1)
    healths, policy = own_healths(), Policy()
    tasks = [asyncio.create_task(elector.run()), asyncio.create_task(replicas.run())]
    try:
        for _ in range(600):  # the Lease taken and the replicas listed: at most 30 s
            if elector.is_leader() and len(replicas.current) == peers:
                break
            await asyncio.sleep(0.05)
        else:
            raise TimeoutError("no Lease or no replicas after 30 s")
        timeout = aiohttp.ClientTimeout(total=vantages.deadline)
        connector = aiohttp.TCPConnector(limit=64, keepalive_timeout=3 * interval + 1)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            await vantages.pull(session)  # warm: the session, the first views
            vantages.merge(targets, healths, policy)
            before = rss_mib()
            seen = len(sandbox.authorizer.requests)
            loop = asyncio.get_running_loop()
            started = loop.time()
            pull_cpu = merge_cpu = pull_wall = 0.0
            tick = loop.time()
            for _ in range(rounds):
                c0, w0 = time.process_time(), loop.time()
                await vantages.pull(session)
                c1, w1 = time.process_time(), loop.time()
                verdict, _ = vantages.merge(targets, healths, policy)
                c2 = time.process_time()
                pull_cpu, merge_cpu, pull_wall = (pull_cpu + c1 - c0, merge_cpu + c2 - c1,
                                                  pull_wall + w1 - w0)
                tick += interval
                await asyncio.sleep(max(0.0, tick - loop.time()))
            elapsed = loop.time() - started
            counted = len(vantages.last.vantages) if vantages.last else 0
            assert counted == peers + 1, (counted, vantages.status()["refused"])
            writes = [r for r in list(sandbox.authorizer.requests)[seen:]
                      if r.attrs.verb in WRITES]
            return {"cpu_ms": 1000 * (pull_cpu + merge_cpu) / rounds,
                    "pull_cpu_ms": 1000 * pull_cpu / rounds,
                    "merge_cpu_ms": 1000 * merge_cpu / rounds,
                    "pull_wall_ms": 1000 * pull_wall / rounds,
                    "rss_growth_mib": rss_mib() - before, "rss_mib": rss_mib(),
                    "writes_per_minute": 60 * len(writes) / elapsed,
                    "verdict_vantages": float(counted), "state": float(verdict.state == "healthy")}
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def main(counts: list[int], rounds: int, interval: float) -> None:
    logs.configure("warning", "console")
    results = {}
    for n in counts:
        results[n] = await measure(n, rounds, interval)
    base = results[min(counts)]
    print(f"\nleader per round, 5 targets x 3 checks, {rounds} rounds every {interval:g} s "
          f"(peers simulated on 127.0.x.y; ratios against {min(counts)} vantage)")
    print(f"{'vantages':>8} {'cpu ms':>8} {'pull cpu':>9} {'merge cpu':>10} {'pull wall':>10} "
          f"{'rss MiB':>8} {'rss +MiB':>9} {'writes/min':>11} {'cpu x':>7}")
    for n, r in results.items():
        ratio = r["cpu_ms"] / base["cpu_ms"] if base["cpu_ms"] else float("nan")
        print(f"{n:>8} {r['cpu_ms']:>8.2f} {r['pull_cpu_ms']:>9.2f} {r['merge_cpu_ms']:>10.3f} "
              f"{r['pull_wall_ms']:>10.1f} {r['rss_mib']:>8.1f} {r['rss_growth_mib']:>9.2f} "
              f"{r['writes_per_minute']:>11.1f} {ratio:>7.1f}")
    print("writes/min: the leader's Lease renewals (every 2 s); pulling views writes nothing")


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--vantages", default="1,3,50,500")
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--interval", type=float, default=1.0)
    p.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    return p.parse_args()


if __name__ == "__main__":
    args = _parse()
    if args.serve is not None:
        uvloop.run(serve_peers(args.serve))
    else:
        uvloop.run(main([int(n) for n in args.vantages.split(",")], args.rounds,
                        args.interval))
