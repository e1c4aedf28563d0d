"""A restart that worked is confirmed: the replacement judged healthy, a log line with
the timeline and a CoreDNSPodRecovered Event (the real client against the sandbox)."""

from __future__ import annotations

import dataclasses

import structlog
from kubernetes_asyncio import client

from corednsprobe.model import HealthState
from corednsprobe.remedy.history import Result
from corednsprobe.sandbox.cluster import Sandbox
from tests.kube.test_remediation import (
    Clock,
    events,
    live_pods,
    make,
    replaced,
    verdict,
    watching,
)


async def test_a_replacement_judged_healthy_is_announced_with_its_timeline(
        sandbox: Sandbox, api: client.ApiClient) -> None:
    clock = Clock()
    async with watching(api) as view:
        victim = sorted(live_pods(sandbox))[0]
        before = live_pods(sandbox)
        remediator = make(api, clock)
        first_failure = clock.now
        diagnosis, healths = verdict(view, set())
        healths = {k: dataclasses.replace(h, failures=2) if h.target.name == victim else h
                   for k, h in healths.items()}
        await remediator.step(diagnosis, healths)  # failures seen, not yet judged unhealthy
        restart_at = clock.now = judged = first_failure + 3
        diagnosis, healths = verdict(view, {victim})
        healths = {k: dataclasses.replace(h, since=judged)
                   if h.state is HealthState.UNHEALTHY else h for k, h in healths.items()}
        await remediator.step(diagnosis, healths)  # judged unhealthy: restarted at once
        assert remediator.history.records[-1].result is Result.DONE
        await sandbox.wait_ready(within=10)
        await replaced(view, victim)
        replacement = sorted(live_pods(sandbox) - before)
        clock.now += 10
        with structlog.testing.capture_logs() as logs:
            await remediator.step(*verdict(view, set()))
            await remediator.step(*verdict(view, set()))  # said once, not every round
    said = [r for r in logs if r["event"] == "remediation_recovered"]
    assert len(said) == 1, logs
    r = said[0]
    assert (r["pod"], r["action"], r["workload"]) == (victim, "evict", "Deployment/coredns")
    assert r["replacement"] == replacement and len(replacement) == 1
    assert (r["detect_seconds"], r["act_seconds"], r["recover_seconds"],
            r["total_seconds"]) == (3.0, 0.0, 10.0, 13.0), r
    assert remediator.status()["recoveries"][-1]["restarted_at"] == r["restarted_at"]
    assert restart_at + 10 == clock.now
    on_pod = [e for e in events(sandbox, replacement[0]) if e["reason"] == "CoreDNSPodRecovered"]
    assert len(on_pod) == 1 and on_pod[0]["type"] == "Normal", events(sandbox)
    assert victim in on_pod[0]["message"] and "recover 10s" in on_pod[0]["message"]
    assert any(e["reason"] == "CoreDNSPodRecovered" for e in events(sandbox, "coredns"))
