"""The Remediator through the real kubernetes_asyncio client against the sandbox: eviction
with a uid precondition, PodDisruptionBudget 429s, pods already gone, 403s, Events."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import structlog
from kubernetes_asyncio import client

from corednsprobe.judge.diagnose import Policy, diagnose
from corednsprobe.kube.view import ClusterView
from corednsprobe.metrics import Metrics
from corednsprobe.model import Diagnosis, DiagnosisState, Health, HealthState, TargetKey
from corednsprobe.remedy.history import Mode, Result
from corednsprobe.remedy.policy import Blocked, Rails, Verdict
from corednsprobe.remedy.remediator import Remediator
from corednsprobe.sandbox.auth import Rule
from corednsprobe.sandbox.cluster import Sandbox
from corednsprobe.sandbox.controllers import EVENTS, PDBS
from corednsprobe.sandbox.registry import PODS
from tests.kube.conftest import MakeSandbox, api_client_for, eventually

NS = "kube-system"
RAILS = Rails(min_pod_age=0.0, cooldown=300.0)
Verdicts = tuple[Diagnosis, dict[TargetKey, Health]]


class Clock:
    """Wall time the test moves by hand (the rails' cooldowns are minutes)."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@contextlib.asynccontextmanager
async def watching(api: client.ApiClient) -> AsyncIterator[ClusterView]:
    view = ClusterView(api, namespace=NS, service="kube-dns")
    task = asyncio.create_task(view.run())
    try:
        async with asyncio.timeout(10):
            await view.changed(0)
        yield view
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def verdict(view: ClusterView, sick: set[str]) -> Verdicts:
    """The real diagnosis over the real TargetSet, with ``sick`` pods unhealthy."""
    ts = view.current
    healths: dict[TargetKey, Health] = {}
    for t in ts.targets:
        bad = t.name in sick
        healths[t.key] = Health(t, HealthState.UNHEALTHY if bad else HealthState.HEALTHY,
                                samples=10, failures=10 if bad else 0,
                                outcomes=(("timeout", 10),) if bad else (("ok", 10),))
    return diagnose(ts, healths, Policy()), healths


async def replaced(view: ClusterView, victim: str, count: int = 2) -> None:
    """Wait until the view shows ``victim`` gone and ``count`` ready pods again."""
    await eventually(lambda: victim not in {t.name for t in view.current.pods}
                     and sum(1 for t in view.current.pods if t.pod and t.pod.ready) == count,
                     within=10)


def events(sandbox: Sandbox, name: str | None = None) -> list[dict[str, Any]]:
    found = [e for e in sandbox.store.items(EVENTS, NS)
             if (e.get("source") or {}).get("component") == "corednsprobe"]
    return [e for e in found if name is None or e["involvedObject"]["name"] == name]


def reasons(sandbox: Sandbox, name: str) -> set[str]:
    return {e["reason"] for e in events(sandbox, name)}


def live_pods(sandbox: Sandbox) -> set[str]:
    return {p["metadata"]["name"] for p in sandbox.dns_pods()
            if not p["metadata"].get("deletionTimestamp")}


def counter(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return value or 0.0


def make(api: client.ApiClient, clock: Clock, rails: Rails = RAILS) -> Remediator:
    return Remediator(api, NS, rails, leadership=None, metrics=Metrics(1.0), wall=clock)


async def test_eviction_restarts_the_sick_pod_and_says_so(
        sandbox: Sandbox, api: client.ApiClient) -> None:
    clock = Clock()
    async with watching(api) as view:
        victim = sorted(live_pods(sandbox))[0]
        before = live_pods(sandbox)
        remediator = make(api, clock)
        decision = await remediator.step(*verdict(view, {victim}))
        assert (decision.verdict, decision.action, decision.pod) == (Verdict.ACT, Mode.EVICT,
                                                                    victim)
        record = remediator.history.records[-1]
        assert (record.result, record.pod, record.workload) == (Result.DONE, victim,
                                                                "Deployment/coredns")
        assert victim not in live_pods(sandbox)
        await sandbox.wait_ready(within=10)
        replacement = live_pods(sandbox) - before
        assert len(replacement) == 1 and victim not in live_pods(sandbox)

        # the replacement is ready and the old pod gone: the remediation settles
        await replaced(view, victim)
        clock.now += 10
        d = await remediator.step(*verdict(view, set()))
        assert d.verdict is Verdict.IDLE
        assert remediator.history.records[-1].settled_at == clock.now
        assert remediator.history.records[-1].recovered_at == clock.now

    assert {"CoreDNSProbeFailed", "CoreDNSPodRestarted"} <= reasons(sandbox, victim)
    failed = next(e for e in events(sandbox, victim) if e["reason"] == "CoreDNSProbeFailed")
    assert failed["type"] == "Warning" and "10/10 failed" in failed["message"]
    assert failed["reportingComponent"] == "corednsprobe"
    assert failed["involvedObject"]["uid"] == record.uid
    assert "CoreDNSPodRestarted" in reasons(sandbox, "coredns")  # on the Deployment too
    m = remediator.metrics
    assert counter(m, "corednsprobe_remediations_total", action="evict", result="done") == 1
    assert counter(m, "corednsprobe_last_remediation_timestamp_seconds") == record.at


async def test_a_pod_whose_name_another_pod_took_is_not_touched_and_costs_nothing(
        sandbox: Sandbox, api: client.ApiClient) -> None:
    """The view judged a pod whose name another pod (another uid) now has: the fresh read
    before acting sees the new uid, so nothing is evicted and nothing is recorded."""
    async with watching(api) as view:
        diagnosis, healths = verdict(view, {sorted(live_pods(sandbox))[0]})
        stale = diagnosis.candidates[0]
        assert stale.pod is not None
        other = dataclasses.replace(stale, pod=dataclasses.replace(stale.pod, uid="not-its-uid"))
        healths = {(other.key if k == stale.key else k):
                   (dataclasses.replace(h, target=other) if k == stale.key else h)
                   for k, h in healths.items()}
        diagnosis = dataclasses.replace(diagnosis, candidates=(other,))
        remediator = make(api, Clock())
        decision = await remediator.step(diagnosis, healths)
    assert (decision.verdict, decision.reason) == (Verdict.BLOCKED, Blocked.POD_GONE)
    assert "another pod" in decision.detail
    assert stale.name in live_pods(sandbox)  # the pod that took the name was not evicted
    assert remediator.history.records == ()  # not a restart: no budget, no cooldown
    assert counter(remediator.metrics, "corednsprobe_remediations_total", action="evict",
                   result="gone") == 0


async def test_a_pod_already_gone_is_no_restart_and_uses_no_budget(
        sandbox: Sandbox, api: client.ApiClient) -> None:
    """The view still shows a pod the API has deleted (a stale watch): the fresh read gets
    404, so nothing is sent, nothing is recorded and the hourly budget is untouched."""
    async with watching(api) as view:
        victim = sorted(live_pods(sandbox))[0]
        stale = verdict(view, {victim})
        await client.CoreV1Api(api).delete_namespaced_pod(victim, NS, grace_period_seconds=0)
        await eventually(lambda: sandbox.store.get(PODS, NS, victim) is None)
        remediator = make(api, Clock())
        decision = await remediator.step(*stale)
    assert (decision.verdict, decision.reason) == (Verdict.BLOCKED, Blocked.POD_GONE)
    assert remediator.history.records == ()
    assert remediator.status()["budget"]["used_last_hour"] == 0
    assert counter(remediator.metrics, "corednsprobe_remediations_total", action="evict",
                   result="gone") == 0
    assert counter(remediator.metrics, "corednsprobe_remediation_blocked_total",
                   reason="pod_gone") == 1
    assert "CoreDNSPodRestarted" not in reasons(sandbox, victim)


async def test_pdb_429_backs_off_never_deletes_and_retries_after_the_cooldown(
        make_sandbox: MakeSandbox, tmp_path: Path) -> None:
    sandbox = await make_sandbox(pdb_min_available=2)
    await eventually(lambda: (sandbox.store.must_get(PDBS, NS, "coredns").get("status") or {})
                     .get("currentHealthy") == 2)
    clock = Clock()
    async with await api_client_for(sandbox, tmp_path / "kc") as api, watching(api) as view:
        victim = sorted(live_pods(sandbox))[0]
        remediator = make(api, clock)
        attempt = await remediator.step(*verdict(view, {victim}))
        assert attempt.verdict is Verdict.ACT
        record = remediator.history.records[-1]
        assert record.result is Result.PDB_BLOCKED
        assert record.retry_at == clock.now + RAILS.cooldown  # no Retry-After: the cooldown
        assert live_pods(sandbox) >= {victim}  # not evicted, and not deleted instead

        clock.now += 60
        held = await remediator.step(*verdict(view, {victim}))
        assert (held.verdict, held.reason) == (Verdict.BLOCKED, Blocked.BACKOFF)
        assert live_pods(sandbox) >= {victim}

        clock.now += RAILS.cooldown
        again = await remediator.step(*verdict(view, {victim}))
        assert again.verdict is Verdict.ACT
        assert remediator.history.records[-1].result is Result.PDB_BLOCKED
        m = remediator.metrics
        assert counter(m, "corednsprobe_remediations_total", action="evict",
                       result="pdb_blocked") == 2
        assert counter(m, "corednsprobe_remediation_blocked_total", reason="backoff") == 1
        assert all(r.action is Mode.EVICT for r in remediator.history.records)

        # the budget allows a disruption again: the next retry evicts
        pdb = sandbox.store.must_get(PDBS, NS, "coredns")
        pdb["spec"]["minAvailable"] = 1
        sandbox.registry.update(PDBS, NS, "coredns", pdb)
        await eventually(lambda: (sandbox.store.must_get(PDBS, NS, "coredns").get("status")
                                  or {}).get("disruptionsAllowed") == 1)
        clock.now += RAILS.cooldown + 1
        await remediator.step(*verdict(view, {victim}))
        assert remediator.history.records[-1].result is Result.DONE
    assert "CoreDNSRestartBlocked" in reasons(sandbox, victim)
    blocked = [e for e in events(sandbox, victim) if e["reason"] == "CoreDNSRestartBlocked"]
    assert any("disruption budget" in e["message"] for e in blocked)


async def test_403_on_eviction_falls_back_to_dry_run_without_crashing(
        sandbox: Sandbox, tmp_path: Path) -> None:
    token = "cdpr-remedy-token"
    sandbox.add_token(token, "system:serviceaccount:kube-system:corednsprobe",
                      [Rule.of(["*"], ["*"])])
    clock = Clock()
    async with await api_client_for(sandbox, tmp_path / "kc", token=token) as api, \
            watching(api) as view:
        remediator = make(api, clock)
        await remediator.self_check()
        assert remediator.rails.mode is Mode.EVICT  # every permission is there at start
        sandbox.deny(token, "create", "pods/eviction")
        victim = sorted(live_pods(sandbox))[0]
        with structlog.testing.capture_logs() as logs:
            await remediator.step(*verdict(view, {victim}))
        assert remediator.history.records[-1].result is Result.FORBIDDEN
        assert remediator.rails.mode is Mode.DRY_RUN
        assert "pods/eviction" in remediator.downgraded
        assert any(e["event"] == "remediation_downgraded" and e["log_level"] == "error"
                   for e in logs)

        clock.now += 1
        dry = await remediator.step(*verdict(view, {victim}))
        assert (dry.verdict, dry.action) == (Verdict.ACT, Mode.DRY_RUN)
        assert remediator.history.records[-1].result is Result.DRY_RUN
        assert victim in live_pods(sandbox)
    assert "CoreDNSRestartDryRun" in reasons(sandbox, victim)


async def test_missing_write_permission_at_start_means_dry_run_loudly(
        sandbox: Sandbox, tmp_path: Path) -> None:
    token = "cdpr-readonly-token"
    sandbox.add_token(token, "system:serviceaccount:kube-system:corednsprobe", [
        Rule.of(["get", "list", "watch"], ["*"]),
        Rule.of(["get", "create", "update"], ["leases"], ["coordination.k8s.io"]),
        Rule.of(["create"], ["selfsubjectaccessreviews"], ["authorization.k8s.io"]),
    ])
    async with await api_client_for(sandbox, tmp_path / "kc", token=token) as api, \
            watching(api) as view:
        remediator = make(api, Clock())
        with structlog.testing.capture_logs() as logs:
            await remediator.self_check()
        assert remediator.rails.mode is Mode.DRY_RUN
        assert "create pods/eviction" in remediator.downgraded
        missing = {e["permission"] for e in logs if e["event"] == "permission_missing"}
        assert missing == {"create pods/eviction (core) in namespace kube-system",
                           "create events (core) in namespace kube-system"}
        assert not remediator.events_allowed
        victim = sorted(live_pods(sandbox))[0]
        decision = await remediator.step(*verdict(view, {victim}))
        assert decision.action is Mode.DRY_RUN and victim in live_pods(sandbox)
    assert events(sandbox) == []  # no permission: no Events attempted


async def test_widespread_failure_restarts_nothing_and_reports_why(
        sandbox: Sandbox, api: client.ApiClient) -> None:
    async with watching(api) as view:
        everyone = live_pods(sandbox)
        remediator = make(api, Clock())
        diagnosis, healths = verdict(view, everyone)
        assert diagnosis.state is DiagnosisState.WIDESPREAD
        decision = await remediator.step(diagnosis, healths)
    assert decision.reason is Blocked.DIAGNOSIS_NOT_POD
    assert remediator.history.records == ()
    assert live_pods(sandbox) == everyone
    assert any(reasons(sandbox, name) == {"CoreDNSRestartBlocked"} for name in everyone)


async def test_give_up_escalates_once_after_three_fruitless_restarts(
        make_sandbox: MakeSandbox, tmp_path: Path) -> None:
    sandbox = await make_sandbox(replicas=3)
    clock = Clock()
    async with await api_client_for(sandbox, tmp_path / "kc") as api, watching(api) as view:
        remediator = make(api, clock, dataclasses.replace(RAILS, max_per_hour=10))
        for _ in range(3):
            victim = sorted(live_pods(sandbox))[0]
            await remediator.step(*verdict(view, {victim}))
            assert remediator.history.records[-1].result is Result.DONE
            await sandbox.wait_ready(3, within=10)
            await replaced(view, victim, 3)
            clock.now += RAILS.cooldown + 1
        victim = sorted(live_pods(sandbox))[0]
        for _ in range(2):
            decision = await remediator.step(*verdict(view, {victim}))
            assert decision.reason is Blocked.GAVE_UP
        assert remediator.history.escalated == ("Deployment/coredns",)
        assert remediator.metrics.gave_up._value.get() == 1  # type: ignore[attr-defined]
        assert live_pods(sandbox) >= {victim}

        # the workload recovers: the escalation lifts
        await remediator.step(*verdict(view, set()))
        assert remediator.history.escalated == ()
        assert remediator.metrics.gave_up._value.get() == 0  # type: ignore[attr-defined]
    manual = [e for e in events(sandbox) if e["reason"] == "ManualInterventionRequired"]
    assert {e["involvedObject"]["kind"] for e in manual} == {"Pod", "Deployment"}
    assert len(manual) == 2  # once, on the pod and on the Deployment
