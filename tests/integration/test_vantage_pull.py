"""The leader's pull of the replicas' /vantage over real HTTP on loopback: only the
listed addresses are asked, a view claiming another replica's identity is refused,
a slow replica costs at most the deadline, and a frozen view ages out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import aiohttp.web
import pytest

from corednsprobe.config import Settings
from corednsprobe.judge.diagnose import Policy
from corednsprobe.kube.replicas import Replica, ReplicaView
from corednsprobe.metrics import Metrics
from corednsprobe.model import DiagnosisState, Health, HealthState
from corednsprobe.service.vantages import Vantages
from tests.unit.helpers import SERVICE, pod, targetset

PODS = [pod(1), pod(2), pod(3)]
Serve = Callable[[str, Callable[[], Awaitable[dict[str, Any]]]], Awaitable[int]]


def view_doc(name: str, node: str, sick: set[int]) -> dict[str, Any]:
    return {"version": 1, "pod": name, "node": node, "at": 0, "age": 0.1, "targets": [
        {"pod": p.name, "uid": p.pod.uid if p.pod else "",
         "state": "unhealthy" if i + 1 in sick else "healthy", "samples": 20,
         "failures": 20 if i + 1 in sick else 0, "udp_only": 0, "outcomes": {},
         "since": 0, "checks": {"cluster_ip": [10, 10 if i + 1 in sick else 0]}}
        for i, p in enumerate(PODS)]}


@pytest.fixture
async def serve() -> AsyncIterator[tuple[Serve, dict[str, int]]]:
    runners: list[aiohttp.web.AppRunner] = []
    asked: dict[str, int] = {}

    async def start(host: str, answer: Callable[[], Awaitable[dict[str, Any]]]) -> int:
        async def handler(_request: aiohttp.web.Request) -> aiohttp.web.Response:
            asked[host] = asked.get(host, 0) + 1
            return aiohttp.web.json_response(await answer())

        app = aiohttp.web.Application()
        app.router.add_get("/vantage", handler)
        runner = aiohttp.web.AppRunner(app)
        await runner.setup()
        runners.append(runner)
        site = aiohttp.web.TCPSite(runner, host, 0)
        await site.start()
        return int(runner.addresses[-1][1])

    yield start, asked
    for runner in runners:
        await runner.cleanup()


def make(replicas: tuple[Replica, ...]) -> tuple[Vantages, Metrics]:
    settings = Settings.from_env({"COREDNSPROBE_INTERVAL": "0.5", "COREDNSPROBE_WINDOW": "5"})
    view = ReplicaView(None, namespace="kube-system", service="corednsprobe", default_port=9180)
    view.current = replicas
    metrics = Metrics(1.0)
    return Vantages(settings, view, pod="probe-a", node="node-a", leading=lambda: True,
                    metrics=metrics), metrics


def healths(sick: set[int]) -> dict[Any, Health]:
    out = {p.key: Health(p, HealthState.UNHEALTHY if i + 1 in sick else HealthState.HEALTHY,
                         samples=20, failures=20 if i + 1 in sick else 0)
           for i, p in enumerate(PODS)}
    out[SERVICE.key] = Health(SERVICE, HealthState.HEALTHY, samples=20)
    return out


def pulled(metrics: Metrics, result: str) -> float:
    value = metrics.registry.get_sample_value("corednsprobe_vantage_pulls_total",
                                              {"result": result})
    return value or 0.0


async def test_only_listed_replicas_are_asked_and_an_impersonator_is_refused(
        serve: tuple[Serve, dict[str, int]]) -> None:
    start, asked = serve

    async def honest() -> dict[str, Any]:
        return view_doc("probe-b", "node-b", {1})

    async def impersonator() -> dict[str, Any]:  # listed as probe-c, claims to be probe-b
        return view_doc("probe-b", "node-b", {1})

    async def unlisted() -> dict[str, Any]:
        return view_doc("probe-x", "node-x", {1})

    b = await start("127.0.0.21", honest)
    c = await start("127.0.0.22", impersonator)
    await start("127.0.0.23", unlisted)
    vantages, metrics = make((Replica("probe-a", "127.0.0.20", 1, "node-a"),
                              Replica("probe-b", "127.0.0.21", b, "node-b"),
                              Replica("probe-c", "127.0.0.22", c, "node-c")))
    async with aiohttp.ClientSession() as session:
        await vantages.pull(session)
    assert set(vantages.views) == {"probe-b"}
    assert "claims pod probe-b" in vantages.status()["refused"]["probe-c"]
    assert asked == {"127.0.0.21": 1, "127.0.0.22": 1}  # never itself, never 127.0.0.23
    assert (pulled(metrics, "ok"), pulled(metrics, "wrong_identity")) == (1, 1)
    # probe-a (itself) and probe-b see coredns-1 sick on two nodes: a candidate
    d, _ = vantages.merge(targetset(*PODS), healths({1}), Policy())
    assert d.state is DiagnosisState.POD
    assert "vantages=2 (node-a,node-b)" in d.evidence_of("coredns-1")


async def test_a_slow_replica_costs_the_deadline_and_its_old_view_ages_out(
        serve: tuple[Serve, dict[str, int]]) -> None:
    start, _asked = serve
    slow = asyncio.Event()

    async def answer() -> dict[str, Any]:
        if slow.is_set():
            await asyncio.sleep(5)
        return view_doc("probe-b", "node-b", set())

    port = await start("127.0.0.24", answer)
    vantages, metrics = make((Replica("probe-b", "127.0.0.24", port, "node-b"),))
    async with aiohttp.ClientSession() as session:
        await vantages.pull(session)
        d, _ = vantages.merge(targetset(*PODS), healths({1}), Policy())
        assert d.state is DiagnosisState.PATH  # node-b sees coredns-1 healthy
        slow.set()
        loop = asyncio.get_running_loop()
        began = loop.time()
        await vantages.pull(session)
        assert loop.time() - began < vantages.deadline + 0.5  # not the 5 s it would take
        assert pulled(metrics, "failed") == 1
        await asyncio.sleep(vantages.oldest)
        d, _ = vantages.merge(targetset(*PODS), healths({1}), Policy())
    assert d.state is DiagnosisState.POD and "vantages=1" in d.reason
    assert vantages.status()["views"][-1]["state"] == "stale"
