"""Both sandbox DNS backends answer, route the ClusterIP and break as they say.

The same behaviour is asked of the in-process backend (no root) and of the
netns backend (root: unbound per pod in a network namespace, nft for the
ClusterIP and the faults), through a small DNS client of the tests' own.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from corednsprobe.sandbox.backend import DnsBackend, Fault, ZoneData
from corednsprobe.sandbox.inprocess import InProcessBackend
from tests.integration.sandbox_dns_client import (
    CONNECTION_REFUSED,
    FLAG_AA,
    NXDOMAIN,
    REFUSED,
    SERVFAIL,
    TIMEOUT,
    Reply,
    tcp_query,
    udp_query,
)

KUBERNETES = "kubernetes.default.svc.cluster.local"
TRUTH = "10.96.0.1"
ZONE = ZoneData("cluster.local", {KUBERNETES: (TRUTH,)})


def netns_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root for network namespaces and nft"
    missing = [t for t in ("ip", "nft", "unbound", "unbound-control") if shutil.which(t) is None]
    return f"missing {', '.join(missing)}" if missing else None


@pytest.fixture(scope="session", autouse=True)
def _no_stale_netns_sandboxes() -> None:
    if netns_unavailable() is None:
        from corednsprobe.sandbox.netns import cleanup_stale

        cleanup_stale("cdps")


@dataclass
class Cluster:
    backend: Any  # a DnsBackend that also has served_queries()
    pods: dict[str, str]  # pod name -> IP
    cluster_ip: str

    @property
    def port(self) -> int:
        return int(self.backend.port)


def make_backend(kind: str) -> Any:
    if kind == "inprocess":
        return InProcessBackend()
    reason = netns_unavailable()
    if reason:
        pytest.skip(reason)
    from corednsprobe.sandbox.netns import NetnsBackend

    return NetnsBackend()


BACKENDS = ["inprocess", pytest.param("netns", marks=pytest.mark.root)]


@pytest.fixture(params=BACKENDS)
async def cluster(request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    backend = make_backend(request.param)
    assert isinstance(backend.name, str)
    try:
        await backend.start()
        pods = {f"coredns-{i}": backend.allocate_pod_ip() for i in range(2)}
        await asyncio.gather(*(backend.add_pod(pod, ip, ZONE) for pod, ip in pods.items()))
        cluster_ip = backend.allocate_service_ip()
        await backend.set_service(cluster_ip, list(pods.values()))
        yield Cluster(backend, pods, cluster_ip)
    finally:
        await backend.close()


def answer(outcome: Reply | str) -> tuple[str, ...]:
    assert isinstance(outcome, Reply), f"expected a reply, got {outcome}"
    return outcome.addresses


def test_both_backends_satisfy_the_protocol() -> None:
    backend: DnsBackend = InProcessBackend()
    assert backend.name == "inprocess"


async def test_every_pod_answers_over_udp_and_tcp(cluster: Cluster) -> None:
    for ip in cluster.pods.values():
        for ask in (udp_query, tcp_query):
            reply = await ask(ip, cluster.port, KUBERNETES)
            assert isinstance(reply, Reply), f"{ask.__name__} to {ip}: {reply}"
            assert reply.rcode == 0 and reply.addresses == (TRUTH,)
            assert reply.flags & FLAG_AA


async def test_unknown_names_are_nxdomain_with_soa_and_others_refused(cluster: Cluster) -> None:
    ip = next(iter(cluster.pods.values()))
    unknown = await udp_query(ip, cluster.port, "nosuch.default.svc.cluster.local")
    assert isinstance(unknown, Reply) and unknown.rcode == NXDOMAIN
    assert unknown.authority_count == 1  # the SOA that carries the negative TTL
    outside = await udp_query(ip, cluster.port, "example.com")
    assert isinstance(outside, Reply) and outside.rcode == REFUSED


async def test_update_zone_changes_every_pods_answer(cluster: Cluster) -> None:
    await cluster.backend.update_zone(ZoneData("cluster.local", {KUBERNETES: ("10.96.0.7",)}))
    for ip in cluster.pods.values():
        assert answer(await udp_query(ip, cluster.port, KUBERNETES)) == ("10.96.0.7",)


async def test_cluster_ip_spreads_queries_over_ready_pods(cluster: Cluster) -> None:
    before = {pod: await cluster.backend.served_queries(pod) for pod in cluster.pods}
    replies = await asyncio.gather(
        *(udp_query(cluster.cluster_ip, cluster.port, KUBERNETES) for _ in range(60))
    )
    assert all(answer(reply) == (TRUTH,) for reply in replies)
    assert answer(await tcp_query(cluster.cluster_ip, cluster.port, KUBERNETES)) == (TRUTH,)
    for pod, count in before.items():
        assert await cluster.backend.served_queries(pod) > count, f"{pod} got no query"


async def test_cluster_ip_follows_the_ready_set(cluster: Cluster) -> None:
    only, other = cluster.pods["coredns-0"], "coredns-1"
    await cluster.backend.set_service(cluster.cluster_ip, [only])
    before = await cluster.backend.served_queries(other)
    replies = await asyncio.gather(
        *(udp_query(cluster.cluster_ip, cluster.port, KUBERNETES) for _ in range(20))
    )
    assert all(answer(reply) == (TRUTH,) for reply in replies)
    assert await cluster.backend.served_queries(other) == before


async def test_cluster_ip_without_ready_pods_rejects(cluster: Cluster) -> None:
    await cluster.backend.set_service(cluster.cluster_ip, [])
    for _ in range(10):
        assert await udp_query(cluster.cluster_ip, cluster.port, KUBERNETES) == CONNECTION_REFUSED
    assert await tcp_query(cluster.cluster_ip, cluster.port, KUBERNETES) == CONNECTION_REFUSED
    await cluster.backend.set_service(cluster.cluster_ip, list(cluster.pods.values()))
    assert answer(await udp_query(cluster.cluster_ip, cluster.port, KUBERNETES)) == (TRUTH,)


async def test_service_fault_breaks_only_the_cluster_ip(cluster: Cluster) -> None:
    await cluster.backend.set_service_fault(True)
    assert await udp_query(cluster.cluster_ip, cluster.port, KUBERNETES, wait=0.5) == TIMEOUT
    for ip in cluster.pods.values():
        assert answer(await udp_query(ip, cluster.port, KUBERNETES)) == (TRUTH,)
    await cluster.backend.set_service_fault(False)
    assert answer(await udp_query(cluster.cluster_ip, cluster.port, KUBERNETES)) == (TRUTH,)


async def heal_and_check(cluster: Cluster, pod: str) -> None:
    await cluster.backend.set_pod_fault(pod, Fault.parse("none"))
    reply = await udp_query(cluster.pods[pod], cluster.port, KUBERNETES)
    assert answer(reply) == (TRUTH,) and isinstance(reply, Reply) and reply.rtt < 0.25


async def test_drop_times_out_udp_while_tcp_and_health_answer(cluster: Cluster) -> None:
    pod, ip = "coredns-0", cluster.pods["coredns-0"]
    await cluster.backend.set_pod_fault(pod, Fault.parse("drop"))
    assert await udp_query(ip, cluster.port, KUBERNETES, wait=0.5) == TIMEOUT
    assert answer(await tcp_query(ip, cluster.port, KUBERNETES)) == (TRUTH,)
    assert await cluster.backend.pod_alive(pod)
    assert answer(await udp_query(cluster.pods["coredns-1"], cluster.port, KUBERNETES)) == (TRUTH,)
    await heal_and_check(cluster, pod)


async def test_reject_answers_icmp_port_unreachable(cluster: Cluster) -> None:
    pod, ip = "coredns-0", cluster.pods["coredns-0"]
    await cluster.backend.set_pod_fault(pod, Fault.parse("reject"))
    for _ in range(10):  # every one, not just a burst before ICMP rate limiting
        assert await udp_query(ip, cluster.port, KUBERNETES) == CONNECTION_REFUSED
    assert answer(await tcp_query(ip, cluster.port, KUBERNETES)) == (TRUTH,)
    assert await cluster.backend.pod_alive(pod)
    await heal_and_check(cluster, pod)


@pytest.mark.skipif(shutil.which("dig") is None, reason="dig is not installed")
async def test_dig_sees_answers_and_the_rejection(cluster: Cluster) -> None:
    ip = cluster.pods["coredns-1"]

    def dig(*args: str) -> str:
        argv = ["dig", "+time=1", "+tries=1", "-p", str(cluster.port), f"@{ip}", *args]
        return subprocess.run(argv, capture_output=True, text=True, check=False).stdout

    assert (await asyncio.to_thread(dig, "+short", KUBERNETES)).strip() == TRUTH
    assert (await asyncio.to_thread(dig, "+tcp", "+short", KUBERNETES)).strip() == TRUTH
    await cluster.backend.set_pod_fault("coredns-1", Fault.parse("reject"))
    assert "connection refused" in await asyncio.to_thread(dig, KUBERNETES)


CLOCK_TICK = 0.001  # uvloop's loop.time() resolution


async def test_delay_holds_every_udp_reply(cluster: Cluster) -> None:
    pod, ip = "coredns-1", cluster.pods["coredns-1"]
    await cluster.backend.set_pod_fault(pod, Fault.parse("delay:300"))
    replies = await asyncio.gather(*(udp_query(ip, cluster.port, KUBERNETES) for _ in range(5)))
    for reply in replies:
        assert answer(reply) == (TRUTH,)
        # the responder's timer runs on uvloop's clock, cached to the millisecond, while
        # the client measures with perf_counter: allow one tick of the coarser clock
        assert isinstance(reply, Reply) and reply.rtt >= 0.3 - CLOCK_TICK
    await heal_and_check(cluster, pod)


async def test_loss_drops_about_the_given_share(cluster: Cluster) -> None:
    pod, ip = "coredns-0", cluster.pods["coredns-0"]
    await cluster.backend.set_pod_fault(pod, Fault.parse("loss:50"))
    outcomes = await asyncio.gather(
        *(udp_query(ip, cluster.port, KUBERNETES, wait=1.0) for _ in range(200))
    )
    lost = sum(outcome == TIMEOUT for outcome in outcomes)
    assert all(o == TIMEOUT or answer(o) == (TRUTH,) for o in outcomes)
    assert 60 <= lost <= 140, f"lost {lost} of 200"
    await heal_and_check(cluster, pod)


async def test_servfail_answers_servfail_on_udp_and_tcp(cluster: Cluster) -> None:
    pod, ip = "coredns-0", cluster.pods["coredns-0"]
    await cluster.backend.set_pod_fault(pod, Fault.parse("servfail"))
    for ask in (udp_query, tcp_query):
        reply = await ask(ip, cluster.port, KUBERNETES)
        assert isinstance(reply, Reply) and reply.rcode == SERVFAIL
    assert await cluster.backend.pod_alive(pod)
    await heal_and_check(cluster, pod)


async def test_wrong_answer_gives_another_address(cluster: Cluster) -> None:
    pod, ip = "coredns-1", cluster.pods["coredns-1"]
    await cluster.backend.set_pod_fault(pod, Fault.parse("wrong-answer"))
    wrong = answer(await udp_query(ip, cluster.port, KUBERNETES))
    assert len(wrong) == 1 and wrong != (TRUTH,)
    assert answer(await udp_query(cluster.pods["coredns-0"], cluster.port, KUBERNETES)) == (TRUTH,)
    await heal_and_check(cluster, pod)


async def test_removed_pod_stops_answering_and_is_not_alive(cluster: Cluster) -> None:
    pod, ip = "coredns-0", cluster.pods["coredns-0"]
    assert await cluster.backend.pod_alive(pod)
    await cluster.backend.remove_pod(pod)
    assert not await cluster.backend.pod_alive(pod)
    assert await udp_query(ip, cluster.port, KUBERNETES, wait=0.5) in (TIMEOUT, CONNECTION_REFUSED)


async def test_pod_ips_are_never_handed_out_twice(cluster: Cluster) -> None:
    seen = set(cluster.pods.values()) | {cluster.cluster_ip}
    for _ in range(50):
        seen_before = len(seen)
        seen.add(cluster.backend.allocate_pod_ip())
        seen.add(cluster.backend.allocate_service_ip())
        assert len(seen) == seen_before + 2


async def http_get(ip: str, port: int, path: str, wait: float = 1.0) -> str:
    """The status code of ``GET path``, or "timeout"/"refused"."""
    try:
        async with asyncio.timeout(wait):
            reader, writer = await asyncio.open_connection(ip, port)
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {ip}\r\n\r\n".encode())
            await writer.drain()
            line = await reader.readline()
            writer.close()
    except TimeoutError:
        return "timeout"
    except ConnectionRefusedError:
        return "refused"
    return line.split(b" ")[1].decode()


async def test_health_and_ready_endpoints_answer_as_corednss_plugins(cluster: Cluster) -> None:
    backend, ip = cluster.backend, cluster.pods["coredns-0"]
    assert await http_get(ip, backend.health_port, "/health") == "200"
    assert await http_get(ip, backend.ready_port, "/ready") == "200"
    assert await http_get(ip, backend.health_port, "/other") == "404"
    await backend.set_pod_fault("coredns-0", Fault.parse("drop"))  # UDP only: both still OK
    assert await http_get(ip, backend.health_port, "/health") == "200"
    assert await http_get(ip, backend.ready_port, "/ready") == "200"


async def test_health_down_takes_only_the_health_endpoint_down(cluster: Cluster) -> None:
    backend, ip = cluster.backend, cluster.pods["coredns-0"]
    fault = Fault.parse("udp-drop+health-down")
    assert (str(fault), fault.health_down) == ("udp-drop+health-down", True)
    await backend.set_pod_fault("coredns-0", fault)
    assert await http_get(ip, backend.health_port, "/health", wait=0.5) == "timeout"
    assert await http_get(ip, backend.ready_port, "/ready") == "200"
    assert await backend.pod_alive("coredns-0")  # readiness: the kubelet keeps it ready
    assert await udp_query(ip, cluster.port, KUBERNETES, wait=0.5) == TIMEOUT
    other = cluster.pods["coredns-1"]
    assert await http_get(other, backend.health_port, "/health") == "200"
    await backend.set_pod_fault("coredns-0", Fault.parse("none"))
    assert await http_get(ip, backend.health_port, "/health") == "200"


def test_health_down_parses_alone_and_after_any_fault() -> None:
    assert Fault.parse("health-down") == Fault(health_down=True)
    assert str(Fault.parse("health-down")) == "health-down"
    assert Fault.parse("delay:300+health-down").value == 300
    assert str(Fault.parse("servfail+health-down")) == "servfail+health-down"
    with pytest.raises(ValueError, match="only \\+health-down"):
        Fault.parse("udp-drop+servfail")
