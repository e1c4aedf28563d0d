"""ClusterView and its informers through the real kubernetes_asyncio client
against the sandbox: the first TargetSet, pod replacement, Service
re-creation, extra slices, the legacy Endpoints fallback, and the watch
faults (410 after compaction, a stalled stream, resets, 5xx) with the
requests counted so that a retry loop that spins fails the test.

Tests marked ``looptime`` run on fast-forwarded loop time (the sandbox's
controllers and the informer's guards all wait on the loop clock), with the
informer's default ``Timing``: a 70 s inactivity guard and a 30 s grace
period take no wall time. The others run in real time, with a 1 s grace.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from kubernetes_asyncio import client

from corednsprobe.kube.informer import DEFAULT_TIMING, Timing
from corednsprobe.kube.view import ClusterView
from corednsprobe.model import ClusterState, Target, TargetSet
from corednsprobe.sandbox.cluster import Sandbox
from corednsprobe.sandbox.registry import PODS
from tests.kube.conftest import MakeSandbox, api_client_for, eventually

NS = "kube-system"
SLICES = "/apis/discovery.k8s.io/v1/namespaces/kube-system/endpointslices"
INFORMERS = {"endpointslices", "service", "kubernetes", "pods"}


@dataclass
class Running:
    """A ClusterView running against a sandbox, and what it reported."""

    view: ClusterView
    api: client.ApiClient
    restarts: list[tuple[str, str, float]] = field(default_factory=list)  # name, reason, when

    async def until(self, predicate: Callable[[TargetSet], bool],
                    within: float = 60.0) -> TargetSet:
        """The current TargetSet, or the first later one, for which ``predicate`` holds."""
        ts = self.view.current
        async with asyncio.timeout(within):
            while not predicate(ts):
                ts = await self.view.changed(ts.generation)
        return ts

    def reasons(self, since: float = 0.0) -> set[str]:
        return {reason for _, reason, at in self.restarts if at >= since}

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)


@contextlib.asynccontextmanager
async def running_view(sandbox: Sandbox, tmp_path: Path, timing: Timing = DEFAULT_TIMING,
                       watching: bool = True) -> AsyncIterator[Running]:
    """Yields once the first TargetSet is out (and, if ``watching``, every watch is open)."""
    loop = asyncio.get_running_loop()
    api = await api_client_for(sandbox, tmp_path / "view-kubeconfig")
    async with api:
        restarts: list[tuple[str, str, float]] = []
        view = ClusterView(api, namespace=NS, service="kube-dns", timing=timing,
                           on_restart=lambda name, reason: restarts.append(
                               (name, reason, loop.time())))
        running = Running(view, api, restarts)
        task = asyncio.create_task(running.view.run())
        try:
            await running.until(lambda ts: ts.generation > 0, within=10)
            if watching:
                await eventually(lambda: len(sandbox.api._open_watches) == len(INFORMERS))
            yield running
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def by_name(ts: TargetSet) -> dict[str, Target]:
    return {t.name: t for t in ts.pods}


def addresses(ts: TargetSet) -> list[str]:
    return [t.address for t in ts.pods]


def live_pods(sandbox: Sandbox) -> dict[str, str]:
    """name → pod IP of the DNS pods not being deleted."""
    return {p["metadata"]["name"]: p["status"]["podIP"] for p in sandbox.dns_pods()
            if not p["metadata"].get("deletionTimestamp")}


def no_duplicates(ts: TargetSet) -> bool:
    return len(set(addresses(ts))) == len(ts.pods) == len({t.name for t in ts.pods})


# initial sync ---------------------------------------------------------------


async def test_first_targetset_has_every_pod_and_the_service(make_sandbox: MakeSandbox,
                                                             tmp_path: Path) -> None:
    sandbox = await make_sandbox(replicas=3, dns_port=5353)
    async with running_view(sandbox, tmp_path) as run:
        ts = run.view.current
        assert ts.generation == 1 and ts.state is ClusterState.OK
        pods = {p["metadata"]["name"]: p for p in sandbox.dns_pods()}
        assert set(by_name(ts)) == set(pods)
        for name, target in by_name(ts).items():
            pod = pods[name]
            assert target.address == pod["status"]["podIP"]
            assert target.port == 5353  # the slice's UDP port named dns
            assert target.pod is not None
            assert target.pod.uid == pod["metadata"]["uid"]
            assert target.pod.node == pod["spec"]["nodeName"]
            assert target.pod.ready and target.pod.serving and not target.pod.terminating
            assert target.pod.created_at is not None
            # the kubelet's endpoints, from the spec's liveness and readiness httpGet
            assert [(e.probe, e.label, e.scheme, e.host) for e in target.pod.health_endpoints] \
                == [("liveness", ":8080/health", "HTTP", ""),
                    ("readiness", ":8181/ready", "HTTP", "")]
        kube_dns = sandbox.service(NS, "kube-dns")["spec"]["clusterIP"]
        assert [(t.address, t.port) for t in ts.services] == [(kube_dns, 5353)]
        truth = sandbox.service("default", "kubernetes")["spec"]["clusterIP"]
        assert ts.expected == frozenset({truth}) and truth != kube_dns
        assert run.restarts == []


# pod replacement ---------------------------------------------------------


@pytest.mark.looptime
async def test_deleted_pod_turns_terminating_then_is_replaced_then_leaves(
        make_sandbox: MakeSandbox, tmp_path: Path) -> None:
    sandbox = await make_sandbox(replicas=2)
    async with running_view(sandbox, tmp_path) as run:
        loop = asyncio.get_running_loop()
        before = run.view.current
        victim = sorted(by_name(before))[0]
        old_ips = set(addresses(before))
        started = loop.time()
        await run.core.delete_namespaced_pod(victim, NS, grace_period_seconds=30)

        def victim_terminating(ts: TargetSet) -> bool:
            t = by_name(ts).get(victim)
            return t is not None and t.pod is not None and t.pod.terminating

        ending = await run.until(victim_terminating, within=5)
        assert ending.generation > before.generation
        gone = by_name(ending)[victim].pod
        assert gone is not None and not gone.ready and gone.serving

        replaced = await run.until(lambda ts: len(ts.pods) == 3, within=5)
        assert replaced.generation > ending.generation
        (newcomer,) = set(by_name(replaced)) - set(by_name(before))
        new_ip = by_name(replaced)[newcomer].address
        assert new_ip not in old_ips and live_pods(sandbox)[newcomer] == new_ip
        assert victim_terminating(replaced)  # still in its grace period

        final = await run.until(lambda ts: victim not in by_name(ts), within=40)
        assert 29.0 <= loop.time() - started <= 32.0  # the pod left when its grace ended
        assert final.generation > replaced.generation
        assert set(by_name(final)) == set(live_pods(sandbox))
        assert all(t.pod is not None and t.pod.ready for t in final.pods)
        assert no_duplicates(final) and final.state is ClusterState.OK
        assert run.restarts == []  # every step came through the open watches


# watch faults ------------------------------------------------------------


@pytest.mark.looptime
@pytest.mark.parametrize("mode", ["expired", "gone", "http"])
async def test_compacted_history_relists_without_losing_or_doubling_a_pod(
        make_sandbox: MakeSandbox, tmp_path: Path, mode: str) -> None:
    sandbox = await make_sandbox(replicas=2)
    sandbox.set_watch_expiry(mode)
    async with running_view(sandbox, tmp_path) as run:
        loop = asyncio.get_running_loop()
        first, second = sorted(by_name(run.view.current))
        sandbox.stall_watches()  # the open watches deliver nothing of what follows
        sandbox.registry.delete(PODS, NS, first, {}, 0)
        await sandbox.wait_ready(within=5)
        sandbox.compact_history()  # every informer's version is now too old
        sandbox.registry.delete(PODS, NS, second, {}, 0)  # a change after compaction
        await sandbox.wait_ready(within=5)
        sandbox.reset_connections()  # the watches reconnect from their old versions
        sandbox.stall_watches(False)
        since = loop.time()
        await eventually(lambda: {name for name, reason, _ in run.restarts
                                  if reason == "expired"} == INFORMERS, within=5)
        ts = await run.until(lambda ts: not {first, second} & set(by_name(ts))
                             and len(ts.pods) == 2, within=5)
        assert set(by_name(ts)) == set(live_pods(sandbox))
        assert sorted(addresses(ts)) == sorted(live_pods(sandbox).values())
        assert no_duplicates(ts) and ts.state is ClusterState.OK
        assert loop.time() - since < 5.0  # a relist after 410 is not delayed


@pytest.mark.looptime
async def test_stalled_watch_is_restarted_by_the_inactivity_guard(
        make_sandbox: MakeSandbox, tmp_path: Path) -> None:
    sandbox = await make_sandbox(replicas=2)
    async with running_view(sandbox, tmp_path) as run:
        loop = asyncio.get_running_loop()
        stalled_at = loop.time()
        sandbox.stall_watches()  # headers sent, then silence: no events, no bookmarks
        await asyncio.sleep(DEFAULT_TIMING.inactivity + 5)
        restarted = {name: at - stalled_at for name, reason, at in run.restarts
                     if reason == "stalled"}
        assert set(restarted) == INFORMERS
        # counted from each watch's last event, a moment before the stall began
        assert all(abs(t - DEFAULT_TIMING.inactivity) < 1 for t in restarted.values())
        sandbox.stall_watches(False)
        victim = sorted(by_name(run.view.current))[0]
        await run.core.delete_namespaced_pod(victim, NS, grace_period_seconds=30)
        ts = await run.until(lambda ts: len(ts.pods) == 3, within=10)
        victim_now = by_name(ts)[victim].pod
        assert victim_now is not None and victim_now.terminating
        assert loop.time() - stalled_at < DEFAULT_TIMING.inactivity + 10


@pytest.mark.looptime
async def test_a_watch_that_stays_stalled_is_followed_by_relists_that_refresh_the_view(
        make_sandbox: MakeSandbox, tmp_path: Path) -> None:
    """Streams open but silent for good while lists still work: every stall ends in a
    relist, so a pod deleted meanwhile leaves the TargetSet within one inactivity period,
    and again after the next stall."""
    sandbox = await make_sandbox(replicas=2)
    async with running_view(sandbox, tmp_path) as run:
        loop = asyncio.get_running_loop()
        sandbox.stall_watches()  # and it never ends: every new watch stalls too
        for _ in range(2):
            since = loop.time()
            victim = sorted(by_name(run.view.current))[0]
            sandbox.registry.delete(PODS, NS, victim, {}, 0)
            await sandbox.wait_ready(within=5)
            ts = await run.until(lambda ts, gone=victim: gone not in by_name(ts)
                                 and len(ts.pods) == 2,
                                 within=DEFAULT_TIMING.inactivity + 10)
            assert set(by_name(ts)) == set(live_pods(sandbox))
            assert loop.time() - since < DEFAULT_TIMING.inactivity + 10
        assert {name for name, reason, _ in run.restarts if reason == "stalled"} == INFORMERS
        assert run.reasons() == {"stalled"}  # no errors, no backoff: a stall, then a list


@pytest.mark.looptime
async def test_quiet_watches_live_on_bookmarks_without_restarts(make_sandbox: MakeSandbox,
                                                                tmp_path: Path) -> None:
    sandbox = await make_sandbox(replicas=2)  # a BOOKMARK every 60 s, as a real server
    async with running_view(sandbox, tmp_path) as run:
        await asyncio.sleep(610)  # two server-side watch timeouts (240-300 s) pass
        assert run.restarts == []
        victim = sorted(by_name(run.view.current))[0]
        await run.core.delete_namespaced_pod(victim, NS, grace_period_seconds=1)
        await run.until(lambda ts: victim not in by_name(ts) and len(ts.pods) == 2, within=10)


OUTAGE = 60.0  # seconds of loop time
# Backoff from 0.5 s doubling to a 30 s cap: at most 9 tries per informer in 60 s.
MOST_REQUESTS = 10 * len(INFORMERS)


@pytest.mark.looptime
async def test_reset_connections_back_off_then_recover(make_sandbox: MakeSandbox,
                                                       tmp_path: Path) -> None:
    sandbox = await make_sandbox(replicas=2)
    async with running_view(sandbox, tmp_path) as run:
        loop = asyncio.get_running_loop()
        budget = 10_000
        assert sandbox.reset_connections(next_watches=budget) == len(INFORMERS)
        victim = sorted(by_name(run.view.current))[0]
        sandbox.registry.delete(PODS, NS, victim, {}, 0)  # a change during the outage
        await asyncio.sleep(OUTAGE)
        tried = budget - sandbox.api_faults.reset_new_watches
        sandbox.reset_connections(next_watches=0)
        ended = loop.time()
        assert len(INFORMERS) <= tried <= MOST_REQUESTS, tried
        assert run.reasons() == {"connection"}
        ts = await run.until(lambda ts: victim not in by_name(ts) and len(ts.pods) == 2,
                             within=DEFAULT_TIMING.backoff_cap + 5)
        assert set(by_name(ts)) == set(live_pods(sandbox)) and no_duplicates(ts)
        recovered = loop.time() - ended
        # After watches that received events, one more reset waits the base backoff only.
        sandbox.reset_connections()
        cut_at = loop.time()
        victim = sorted(by_name(ts))[0]
        sandbox.registry.delete(PODS, NS, victim, {}, 0)
        await run.until(lambda ts: victim not in by_name(ts), within=DEFAULT_TIMING.backoff_cap)
        assert loop.time() - cut_at <= DEFAULT_TIMING.backoff_base + 0.1
        print(f"\nreset: {tried} watch requests in {OUTAGE:.0f} s of outage, "
              f"recovered {recovered:.1f} s after it ended")


@pytest.mark.looptime
async def test_server_errors_back_off_then_recover(make_sandbox: MakeSandbox,
                                                   tmp_path: Path) -> None:
    sandbox = await make_sandbox(replicas=2)
    async with running_view(sandbox, tmp_path) as run:
        loop = asyncio.get_running_loop()
        budget = 10_000
        sandbox.fail_requests(budget, 500)
        sandbox.reset_connections()
        await asyncio.sleep(OUTAGE)
        tried = budget - sandbox.api_faults.fail_remaining
        sandbox.fail_requests(0)
        ended = loop.time()
        assert len(INFORMERS) <= tried <= MOST_REQUESTS, tried
        assert "http_500" in run.reasons()
        await asyncio.sleep(DEFAULT_TIMING.backoff_cap + 1)  # every informer is back
        victim = sorted(by_name(run.view.current))[0]
        await run.core.delete_namespaced_pod(victim, NS, grace_period_seconds=1)
        ts = await run.until(lambda ts: victim not in by_name(ts) and len(ts.pods) == 2,
                             within=10)
        assert set(by_name(ts)) == set(live_pods(sandbox)) and no_duplicates(ts)
        print(f"\n500s: {tried} requests in {OUTAGE:.0f} s of outage; change seen "
              f"{loop.time() - ended:.1f} s after it ended")


@pytest.mark.looptime
@pytest.mark.parametrize("code", [410, 200])
async def test_watch_failing_at_once_after_every_list_never_spins(
        make_sandbox: MakeSandbox, tmp_path: Path, code: int) -> None:
    """410 right after each list (a lagging watch cache), or 200 with no stream
    (a proxy that closes at once): both must back off, not loop."""
    sandbox = await make_sandbox(replicas=2)
    async with running_view(sandbox, tmp_path) as run:
        budget = 10_000
        sandbox.fail_requests(budget, code, path_contains="watch=true")
        sandbox.reset_connections()
        await asyncio.sleep(OUTAGE)
        tried = budget - sandbox.api_faults.fail_remaining
        sandbox.fail_requests(0)
        assert len(INFORMERS) <= tried <= MOST_REQUESTS, tried
        await asyncio.sleep(DEFAULT_TIMING.backoff_cap + 1)
        victim = sorted(by_name(run.view.current))[0]
        await run.core.delete_namespaced_pod(victim, NS, grace_period_seconds=1)
        await run.until(lambda ts: victim not in by_name(ts) and len(ts.pods) == 2,
                        within=10)


@pytest.mark.looptime
async def test_watches_cut_at_once_by_a_proxy_back_off(make_sandbox: MakeSandbox,
                                                       tmp_path: Path) -> None:
    """Every watch ends cleanly at once, empty: reconnecting must not spin."""
    sandbox = await make_sandbox(replicas=2, watch_cutoff=0.0)
    async with running_view(sandbox, tmp_path, watching=False) as run:
        await asyncio.sleep(OUTAGE)
        cut = [name for name, reason, _ in run.restarts if reason == "closed_early"]
        assert set(cut) == INFORMERS
        assert len(cut) <= MOST_REQUESTS, len(cut)
        sandbox.config.watch.max_timeout = None  # the proxy goes away
        victim = sorted(by_name(run.view.current))[0]
        await run.core.delete_namespaced_pod(victim, NS, grace_period_seconds=1)
        await run.until(lambda ts: victim not in by_name(ts) and len(ts.pods) == 2,
                        within=DEFAULT_TIMING.backoff_cap + 5)


# the Service, its slices, and the legacy fallback ----------------------------


async def test_service_deleted_then_recreated_with_a_new_cluster_ip(
        make_sandbox: MakeSandbox, tmp_path: Path) -> None:
    sandbox = await make_sandbox(replicas=2)
    async with running_view(sandbox, tmp_path) as run:
        old = sandbox.service(NS, "kube-dns")
        old_ip = old["spec"]["clusterIP"]
        assert [t.address for t in run.view.current.services] == [old_ip]
        await run.core.delete_namespaced_service("kube-dns", NS)
        gone = await run.until(lambda ts: ts.state is ClusterState.NO_SERVICE, within=5)
        assert gone.services == () and gone.pods == ()
        assert gone.expected == run.view.current.expected != frozenset()
        body = {"metadata": {"name": "kube-dns", "labels": old["metadata"]["labels"]},
                "spec": {"selector": old["spec"]["selector"], "ports": old["spec"]["ports"]}}
        created = await run.core.create_namespaced_service(NS, body)
        new_ip = created.spec.cluster_ip
        assert new_ip != old_ip
        back = await run.until(lambda ts: ts.state is ClusterState.OK
                               and len(ts.pods) == 2, within=5)
        assert [t.address for t in back.services] == [new_ip]
        assert set(by_name(back)) == set(live_pods(sandbox))
        assert run.restarts == []


async def test_a_second_slice_with_ipv6_addresses_is_merged(make_sandbox: MakeSandbox,
                                                            tmp_path: Path) -> None:
    sandbox = await make_sandbox(replicas=2)
    async with running_view(sandbox, tmp_path) as run:
        pods = sorted(sandbox.dns_pods(), key=lambda p: p["metadata"]["name"])
        v6 = {p["metadata"]["name"]: f"fd00:10:244::{i + 10:x}" for i, p in enumerate(pods)}
        extra = {
            "metadata": {"name": "kube-dns-v6",
                         "labels": {"kubernetes.io/service-name": "kube-dns"}},
            "addressType": "IPv6",
            "endpoints": [{"addresses": [v6[p["metadata"]["name"]]],
                           "conditions": {"ready": True, "serving": True,
                                          "terminating": False},
                           "nodeName": p["spec"]["nodeName"],
                           "targetRef": {"kind": "Pod", "namespace": NS,
                                         "name": p["metadata"]["name"],
                                         "uid": p["metadata"]["uid"]}} for p in pods],
            "ports": [{"name": "dns-tcp", "protocol": "TCP", "port": 53},
                      {"name": "dns", "protocol": "UDP", "port": 53}]}
        await client.DiscoveryV1Api(run.api).create_namespaced_endpoint_slice(NS, extra)
        ts = await run.until(lambda ts: len(ts.pods) == 4, within=5)
        for pod in pods:
            name = pod["metadata"]["name"]
            both = sorted((t for t in ts.pods if t.name == name), key=lambda t: len(t.address))
            assert [t.address for t in both] == [pod["status"]["podIP"], v6[name]]
            assert all(t.pod is not None and t.pod.uid == pod["metadata"]["uid"]
                       and t.pod.node == pod["spec"]["nodeName"] and t.pod.ready
                       for t in both)
            assert both[1].endpoint == f"[{v6[name]}]:53"
        assert no_duplicates_by_address(ts) and ts.state is ClusterState.OK
        await client.DiscoveryV1Api(run.api).delete_namespaced_endpoint_slice("kube-dns-v6", NS)
        ts = await run.until(lambda ts: len(ts.pods) == 2, within=5)
        assert sorted(addresses(ts)) == sorted(live_pods(sandbox).values())


def no_duplicates_by_address(ts: TargetSet) -> bool:
    return len(set(addresses(ts))) == len(ts.pods)


@pytest.mark.looptime
async def test_legacy_endpoints_when_endpointslices_are_not_served(
        make_sandbox: MakeSandbox, tmp_path: Path) -> None:
    sandbox = await make_sandbox(replicas=2, unserved_group_versions=("discovery.k8s.io/v1",))
    async with running_view(sandbox, tmp_path) as run:
        assert run.view.legacy_endpoints
        ts = run.view.current
        assert ts.state is ClusterState.OK
        assert {n: t.address for n, t in by_name(ts).items()} == live_pods(sandbox)
        assert all(t.pod is not None and t.pod.ready and t.pod.uid for t in ts.pods)
        victim = sorted(by_name(ts))[0]
        await run.core.delete_namespaced_pod(victim, NS, grace_period_seconds=30)
        # Endpoints drop a terminating pod at once; its replacement follows.
        ts = await run.until(lambda ts: victim not in by_name(ts) and len(ts.pods) == 2
                             and all(t.pod is not None and t.pod.ready for t in ts.pods),
                             within=10)
        assert {n: t.address for n, t in by_name(ts).items()} == live_pods(sandbox)
        assert run.restarts == []


@pytest.mark.looptime
async def test_a_one_megabyte_object_does_not_wedge_the_pods_watch(
        make_sandbox: MakeSandbox, tmp_path: Path) -> None:
    """A 1 MB pod elsewhere in the namespace (a big annotation; the API's own
    limit is about 1.5 MB) is one watch line far beyond aiohttp's 64 KiB read
    buffer: later DNS pod changes must still arrive through the same watch."""
    sandbox = await make_sandbox(replicas=2)
    async with running_view(sandbox, tmp_path) as run:
        big = {"metadata": {"name": "big-annotations", "annotations": {"blob": "x" * 1_000_000}},
               "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]}}
        await run.core.create_namespaced_pod(NS, big)
        victim = sorted(by_name(run.view.current))[0]
        await run.core.delete_namespaced_pod(victim, NS, grace_period_seconds=1)
        ts = await run.until(lambda ts: victim not in by_name(ts) and len(ts.pods) == 2,
                             within=10)
        # creation times come from the pods watch, so the newcomer's shows it kept up
        assert all(t.pod is not None and t.pod.created_at is not None for t in ts.pods)
        assert run.restarts == []
