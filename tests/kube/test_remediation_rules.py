"""The rules that close the ways around the rails, through the real client against the
sandbox: a pod verdict confirmed before acting, a fresh read of the pod before any
eviction (gone, replaced, terminating, no longer an endpoint, or not a pod of the DNS
workload at all), a restart left unannounced by a crash announced when it settles, and
a flapping pod slot that gives up after the configured number of restarts."""

from __future__ import annotations

from kubernetes_asyncio import client

from corednsprobe.remedy.history import History, Mode, Record, Result
from corednsprobe.remedy.policy import Blocked, Verdict
from corednsprobe.sandbox.cluster import Sandbox
from corednsprobe.sandbox.registry import PODS
from tests.kube.conftest import eventually
from tests.kube.test_rails_remediation import WORKLOAD, make, terminating
from tests.kube.test_remediation import (
    NS,
    Clock,
    counter,
    events,
    live_pods,
    reasons,
    verdict,
    watching,
)


async def test_a_pod_verdict_is_confirmed_and_a_second_sick_pod_starts_it_afresh(
        sandbox: Sandbox, api: client.ApiClient) -> None:
    clock = Clock()
    async with watching(api) as view:
        a, b = sorted(live_pods(sandbox))[:2]
        remediator = make(api, clock, confirm=10.0)
        held = await remediator.step(*verdict(view, {a}))
        assert (held.verdict, held.reason) == (Verdict.BLOCKED, Blocked.CONFIRMING), held.detail
        clock.now += 5
        shared = await remediator.step(*verdict(view, {a, b}))  # b turns sick too
        assert shared.reason is Blocked.DIAGNOSIS_NOT_POD
        start = clock.now
        clock.now += 1  # a alone again: its ten seconds start now
        remediator.on_diagnosis(*verdict(view, {a}))
        assert (await remediator.step(*verdict(view, {a}))).reason is Blocked.CONFIRMING
        clock.now = start + 1 + 9.9
        assert (await remediator.step(*verdict(view, {a}))).reason is Blocked.CONFIRMING
        assert not terminating(sandbox, a) and not remediator.history.records
        clock.now = start + 1 + 10
        acted = await remediator.step(*verdict(view, {a}))
        assert (acted.verdict, acted.pod) == (Verdict.ACT, a), acted.detail
        assert terminating(sandbox, a) or a not in live_pods(sandbox)
        assert b in live_pods(sandbox) and not terminating(sandbox, b)


# -- the fresh read: an EndpointSlice can name any pod --------------------------------------

async def hostile_slice(api: client.ApiClient, address: str,
                        target_ref: dict[str, str] | None) -> None:
    """An EndpointSlice of the DNS Service that no controller wrote, with one endpoint."""
    endpoint: dict[str, object] = {"addresses": [address], "conditions": {"ready": True}}
    if target_ref is not None:
        endpoint["targetRef"] = target_ref
    await client.DiscoveryV1Api(api).create_namespaced_endpoint_slice(NS, {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "kube-dns-hostile",
                     "labels": {"kubernetes.io/service-name": "kube-dns"}},
        "addressType": "IPv4", "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}],
        "endpoints": [endpoint]})


async def unrelated_pod(api: client.ApiClient, name: str, labels: dict[str, str]) -> str:
    """A pod beside CoreDNS that no workload of the DNS Service controls; its uid."""
    pod = await client.CoreV1Api(api).create_namespaced_pod(NS, {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "etcd", "image": "etcd"}]}})
    return str(pod.metadata.uid)


async def test_a_hostile_slice_never_gets_an_unrelated_pod_evicted(
        sandbox: Sandbox, api: client.ApiClient) -> None:
    """An endpoint naming etcd-x, at an address that never answers: judged sick, refused
    every round (one Event, one count), never evicted, nothing recorded."""
    uid = await unrelated_pod(api, "etcd-x", {"component": "etcd"})
    await hostile_slice(api, "10.99.0.9", {"kind": "Pod", "name": "etcd-x",
                                           "namespace": NS, "uid": uid})
    clock = Clock()
    async with watching(api) as view:
        await eventually(lambda: "etcd-x" in {t.name for t in view.current.pods})
        remediator = make(api, clock)
        decisions = []
        for _ in range(3):  # a lasting verdict: every round refuses it, one Event
            decisions.append(await remediator.step(*verdict(view, {"etcd-x"})))
            clock.now += 60
    assert {(d.verdict, d.reason, d.pod) for d in decisions} == {
        (Verdict.BLOCKED, Blocked.NOT_OURS, "etcd-x")}, decisions[0].detail
    pod = sandbox.store.get(PODS, NS, "etcd-x")
    assert pod is not None and not pod["metadata"].get("deletionTimestamp")
    assert remediator.history.records == ()
    assert counter(remediator.metrics, "corednsprobe_remediation_blocked_total",
                   reason="pod_not_ours") == 1
    assert [e["reason"] for e in events(sandbox, "etcd-x")].count("CoreDNSRestartBlocked") == 1


async def test_an_endpoint_without_a_target_ref_is_probed_but_never_acted_on(
        sandbox: Sandbox, api: client.ApiClient) -> None:
    await hostile_slice(api, "10.99.0.10", None)
    before = live_pods(sandbox)
    async with watching(api) as view:
        await eventually(lambda: "10.99.0.10" in {t.address for t in view.current.pods})
        remediator = make(api, Clock())
        decision = await remediator.step(*verdict(view, {"10.99.0.10"}))
    assert (decision.verdict, decision.reason) == (Verdict.BLOCKED, Blocked.NOT_OURS)
    assert "no targetRef" in decision.detail
    assert live_pods(sandbox) == before and remediator.history.records == ()


# -- a restart left "started" by a crash is announced when it settles -----------------------

async def test_a_restart_a_crash_left_started_is_announced_when_the_pod_shows_it(
        sandbox: Sandbox, api: client.ApiClient) -> None:
    """The prober wrote its record, evicted, and was killed before the answer: the next
    one finds the record ``started`` and the pod gone, settles it ``done``, and posts the
    CoreDNSPodRestarted Event the killed one never did."""
    clock = Clock()
    async with watching(api) as view:
        victim = sorted(live_pods(sandbox))[0]
        target = next(t for t in view.current.pods if t.name == victim)
        assert target.pod is not None
        remediator = make(api, clock)
        remediator.history = History((Record(clock.now, victim, target.pod.uid, WORKLOAD,
                                             Mode.EVICT, Result.STARTED, ready_before=3),))
        await client.CoreV1Api(api).create_namespaced_pod_eviction(
            victim, NS, {"metadata": {"name": victim, "namespace": NS}})
        await eventually(lambda: victim not in {t.name for t in view.current.pods}
                         or any(t.name == victim and t.pod and t.pod.terminating
                                for t in view.current.pods))
        assert "CoreDNSPodRestarted" not in reasons(sandbox, victim)
        clock.now += 5
        await remediator.step(*verdict(view, set()))
        assert remediator.history.records[0].result is Result.DONE
        restarted = [e for e in events(sandbox, victim) if e["reason"] == "CoreDNSPodRestarted"]
        assert len(restarted) == 1 and "never came" in restarted[0]["message"]
        assert "CoreDNSPodRestarted" in reasons(sandbox, "coredns")  # on the Deployment too
        clock.now += 5
        await remediator.step(*verdict(view, set()))  # once, not every round
    assert [e["reason"] for e in events(sandbox, victim)].count("CoreDNSPodRestarted") == 1
