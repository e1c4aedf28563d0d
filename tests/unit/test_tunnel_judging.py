"""A port-forward tunnel that could not be opened is the API server's or the kubelet's
failure, never the pod's: the tracker takes no sample of it, a window of nothing else
leaves the pod unknown, and the diagnosis names it and restarts nothing."""

from __future__ import annotations

import dataclasses

from corednsprobe.judge.diagnose import Policy, diagnose
from corednsprobe.judge.tracker import Thresholds, Tracker
from corednsprobe.model import DiagnosisState, HealthState, Outcome, ProbeResult, Target
from tests.unit.helpers import pod, result, targetset

THRESHOLDS = Thresholds(window=60, failure_ratio=0.5, min_samples=5, recovery_successes=3,
                        min_pod_age=0)
WHY = "the API server refused the port-forward to pod coredns-1: 403 Forbidden"


def tunnel(target: Target, at: float) -> ProbeResult:
    return dataclasses.replace(result(target, Outcome.TUNNEL, at), rcode=None, detail=WHY)


def test_tunnel_failures_are_no_samples_and_never_make_a_pod_unhealthy() -> None:
    p1, p2, p3 = pod(1), pod(2), pod(3)
    tracker = Tracker(THRESHOLDS)
    for i in range(20):
        for p in (p2, p3):
            tracker.record(result(p, Outcome.OK, float(i)), float(i))
        tracker.record(tunnel(p1, float(i)), float(i))
    healths = tracker.evaluate(targetset(p1, p2, p3, service=False).targets, 20.0)
    h1 = healths[p1.key]
    assert h1.state is HealthState.UNKNOWN
    assert (h1.samples, h1.failures, h1.tunnel_failures) == (0, 0, 20)
    assert h1.outcomes == ()
    verdict = diagnose(targetset(p1, p2, p3, service=False), healths, Policy())
    assert verdict.candidates == ()
    assert "the tunnel could not be opened to coredns-1" in verdict.reason
    assert "never the pod's fault" in verdict.reason and WHY in verdict.reason
    assert verdict.evidence is not None and verdict.evidence.tunnel_failed == ("coredns-1",)
    assert verdict.evidence.as_dict()["tunnel_failed"] == "coredns-1"


def test_a_sick_pod_whose_tunnel_then_fails_is_no_longer_a_candidate() -> None:
    p1, p2, p3 = pod(1), pod(2), pod(3)
    tracker = Tracker(THRESHOLDS)
    ts = targetset(p1, p2, p3, service=False)
    for i in range(10):
        tracker.record(result(p1, Outcome.SERVFAIL, float(i)), float(i))
        for p in (p2, p3):
            tracker.record(result(p, Outcome.OK, float(i)), float(i))
    before = diagnose(ts, tracker.evaluate(ts.targets, 10.0), Policy())
    assert before.state is DiagnosisState.POD and [t.name for t in before.candidates] == [
        "coredns-1"]
    # the tunnel to it breaks; its old failures leave the window: no sight, no verdict
    for i in range(10, 80):
        tracker.record(tunnel(p1, float(i)), float(i))
        for p in (p2, p3):
            tracker.record(result(p, Outcome.OK, float(i)), float(i))
    after = diagnose(ts, tracker.evaluate(ts.targets, 80.0), Policy())
    assert after.candidates == ()
    assert tracker.evaluate(ts.targets, 80.0)[p1.key].state is HealthState.UNKNOWN
    assert "the tunnel could not be opened" in after.reason


def test_a_tunnel_failure_among_answers_changes_no_count() -> None:
    p1 = pod(1)
    tracker = Tracker(THRESHOLDS)
    for i in range(10):
        tracker.record(result(p1, Outcome.OK, float(i)), float(i))
        tracker.record(tunnel(p1, float(i) + 0.5), float(i) + 0.5)
    h = tracker.evaluate([p1], 10.0)[p1.key]
    assert (h.state, h.samples, h.failures, h.tunnel_failures) == (
        HealthState.HEALTHY, 10, 0, 10)
