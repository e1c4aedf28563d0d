"""The rules that close the ways around the rails, through the real client against the
sandbox: a pod verdict confirmed before acting, a fresh read of the pod before any
eviction (gone, replaced, terminating, no longer an endpoint, or not a pod of the DNS
workload at all), a restart left unannounced by a crash announced when it settles, and
a flapping pod slot that gives up after the configured number of restarts."""

from __future__ import annotations

from kubernetes_asyncio import client

from corednsprobe.remedy.policy import Blocked, Verdict
from corednsprobe.sandbox.cluster import Sandbox
from tests.kube.test_rails_remediation import make, terminating
from tests.kube.test_remediation import Clock, live_pods, verdict, watching


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
